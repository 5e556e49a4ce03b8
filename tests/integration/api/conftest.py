"""The API over a real SQLite store in a temporary data directory, driven in-process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tether.api.app import create_app
from tether.api.services import Services
from tether.config import Settings
from tether.crypto.assertion import AgentKeyPair, generate_agent_key

ROOT = "tto_root-token-for-tests-0123456789"
ISSUER = "http://testserver"
TRUST_DOMAIN = "acme.org"


@dataclass
class RegisteredAgent:
    name: str
    spiffe_id: str
    key: AgentKeyPair
    kid: str


def api_settings(tmp_path: Path, **more: Any) -> Settings:
    """The API tests' server settings in ``tmp_path``, with ``more`` of a test's own."""
    return Settings(
        data_dir=tmp_path / "data",
        issuer=ISSUER,
        trust_domain=TRUST_DOMAIN,
        root_token=ROOT,
        allowed_audiences=("https://api.acme.org",),
        **more,
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return api_settings(tmp_path)


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    opened = await Services.open(settings)
    try:
        yield opened
    finally:
        await opened.close()


class SecretWatch:
    """Every secret the server hands out during a test (the root token, operator tokens,
    JWT-SVIDs) and every other response body, to search at the end of the test."""

    def __init__(self) -> None:
        self.secrets: set[str] = {ROOT}
        self.bodies: list[bytes] = []

    async def __call__(self, response: httpx.Response) -> None:
        await response.aread()
        path, ok = response.request.url.path, response.is_success
        if ok and response.request.method == "POST" and path in {"/oauth2/token", "/v1/tokens"}:
            body = response.json()
            for key in ("access_token", "token"):
                if isinstance(body.get(key), str):
                    self.secrets |= {body[key], body[key].split(".")[-1]}
            return
        if ok and response.request.method == "POST" and path == "/v1/leases":
            secret = response.json()["credential"].get("secret")
            self.secrets |= {secret} if secret else set()
            return
        if response.request.method == "PUT" and path.startswith("/v1/engines/"):
            body = json.loads(response.request.content or b"{}")
            self.secrets |= {body["secret"]} if body.get("secret") else set()
        self.bodies.append(response.content)

    async def leaks(self, services: Services) -> list[str]:
        """Where a secret shows: a response body other than the one that handed it out, or
        an audit record of this replica's log."""
        end = await services.store.audit_log_end(services.audit.origin)
        size = 0 if end is None else end.index + 1
        entries = await services.store.audit_entries(services.audit.origin, start=0, stop=size)
        places = {
            "a response body": b"\n".join(self.bodies),
            "an audit record": b"\n".join(e.entry for e in entries),
        }
        return [
            f"{secret[:12]}… in {where}"
            for secret in self.secrets
            for where, text in places.items()
            if secret.encode() in text
        ]


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    """The app in process, as root. Every test that uses it is also a leak test: no token
    the server issued during the test may show in another response or in an audit record."""
    app = create_app(settings, services=services)
    transport = httpx.ASGITransport(app=app)
    watch = SecretWatch()
    async with httpx.AsyncClient(
        transport=transport,
        base_url=ISSUER,
        headers={"Authorization": f"Bearer {ROOT}"},
        event_hooks={"response": [watch]},
    ) as c:
        yield c
    assert await watch.leaks(services) == [], "an issued secret leaked"


@asynccontextmanager
async def running_replica(settings: Settings) -> AsyncIterator[Services]:
    """Another server on the same database as ``settings``, its upkeep running."""
    other = await Services.open(settings)
    upkeep = asyncio.create_task(other.run_maintenance())
    try:
        yield other
    finally:
        upkeep.cancel()
        with suppress(asyncio.CancelledError):
            await upkeep
        await other.close()


AgentFactory = Callable[..., Awaitable[RegisteredAgent]]


@pytest.fixture
def make_agent(client: httpx.AsyncClient) -> AgentFactory:
    async def make(name: str = "faq-bot", **declarations: object) -> RegisteredAgent:
        body = {"name": name, "owners": ["alice"], "declarations": declarations}
        created = await client.post("/v1/agents", json=body)
        assert created.status_code == 201, created.text
        key = generate_agent_key()
        added = await client.post(f"/v1/agents/{name}/keys", json={"jwk": key.public_jwk})
        assert added.status_code == 201, added.text
        return RegisteredAgent(
            name=name, spiffe_id=created.json()["spiffe_id"], key=key, kid=added.json()["kid"]
        )

    return make


@pytest.fixture
async def agent_token(client: httpx.AsyncClient, make_agent: AgentFactory) -> str:
    """faq-bot registered with a key, the decision tests' policies applied, and its JWT-SVID."""
    from .decisions import POLICIES, svid  # noqa: PLC0415 - avoids a circular import

    agent = await make_agent(tools=["search_faq", "transfer"])
    applied = await client.post("/v1/policies", json={"text": POLICIES})
    assert applied.status_code == 201, applied.text
    return await svid(client, agent)

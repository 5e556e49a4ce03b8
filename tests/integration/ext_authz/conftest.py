"""The ext_authz endpoint in process over a real SQLite store, with the example route file
(``examples/ext_authz/routes.toml``) and an agent, ``order-bot``, that may read orders, may
write one with an approval, and may not delete."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.tokens import client_credentials
from tether.api.app import create_app
from tether.api.services import Services
from tether.config import Settings
from tether.crypto.assertion import generate_agent_key

ROOT = "tto_ext-authz-root-token-0123456789"
ISSUER = "http://testserver"
EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "ext_authz"
POLICIES = """
@id("order-bot-reads")
permit (principal == Tether::Agent::"order-bot", action == Tether::Action::"read", resource);

@id("order-bot-writes-with-approval")
@obligation("approval")
permit (principal == Tether::Agent::"order-bot", action == Tether::Action::"write", resource);
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        issuer=ISSUER,
        trust_domain="acme.org",
        root_token=ROOT,
        ext_authz_routes=EXAMPLES / "routes.toml",
    )


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    opened = await Services.open(settings)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    """The app in process; no credentials of its own (each request brings its token)."""
    app = create_app(settings, services=services)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER) as c:
        yield c


async def register(
    client: httpx.AsyncClient, name: str = "order-bot", *, audience: str | None = None
) -> str:
    """``name`` registered with a key, the policies applied; its JWT-SVID (for ``audience``)."""
    ops = {"Authorization": f"Bearer {ROOT}"}
    body = {"name": name, "owners": ["alice"], "declarations": {}}
    created = await client.post("/v1/agents", json=body, headers=ops)
    assert created.status_code == 201, created.text
    key = generate_agent_key()
    added = await client.post(f"/v1/agents/{name}/keys", json={"jwk": key.public_jwk}, headers=ops)
    assert added.status_code == 201, added.text
    applied = await client.post("/v1/policies", json={"text": POLICIES}, headers=ops)
    assert applied.status_code == 201, applied.text
    form = client_credentials(key.private_pem, client_id=created.json()["spiffe_id"],
                              audience=f"{ISSUER}/oauth2/token", now=int(time.time()))  # fmt: skip
    if audience is not None:
        form["audience"] = audience
    issued = await client.post("/oauth2/token", data=form)
    assert issued.status_code == 200, issued.text
    token: str = issued.json()["access_token"]
    return token


@pytest.fixture
async def token(client: httpx.AsyncClient) -> str:
    return await register(client)


async def decisions(client: httpx.AsyncClient, correlation_id: str) -> list[dict[str, Any]]:
    """The decision records of one correlation id, read through the audit API."""
    found = await client.get(
        "/v1/audit",
        params={"type_prefix": "decision", "correlation_id": correlation_id},
        headers={"Authorization": f"Bearer {ROOT}"},
    )
    assert found.status_code == 200, found.text
    return [r["details"] | {"outcome": r["outcome"]} for r in found.json()["records"]]

"""The fault suite: a real ``tether serve`` under libfiu (``faulty``); and in process, the
services ``tether serve`` runs over SQLite with a clock the test moves (``services``,
``client``), ``faq-bot`` registered by :func:`agent_token`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.faults import ASKED, POLICY, ROUTES, FaultyServer, need_fiu
from tests.support.tokens import client_credentials
from tether._internal.clock import FixedClock
from tether.api.app import create_app
from tether.api.services import Services
from tether.config import Settings
from tether.crypto.assertion import generate_agent_key

ROOT = "tto_faults-inproc-root-token-0123456789"
ISSUER = "http://testserver"
SVID_TTL = 300
TOKENS = {"kind": "token", "roles": [{"name": "orders", "resource": "orders", "default_ttl": 60,
          "max_ttl": 300, "options": {"audience": "https://orders.acme.org"}}]}  # fmt: skip
USE_ORDERS = """
@id("faq-bot-gets-orders-tokens")
permit (principal == Tether::Agent::"faq-bot", action == Tether::Action::"use_credential",
        resource == Tether::Api::"orders");
"""


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
async def services(tmp_path: Path, clock: FixedClock) -> AsyncIterator[Services]:
    settings = Settings(data_dir=tmp_path / "data", issuer=ISSUER, trust_domain="acme.org",
                        root_token=ROOT, ext_authz_routes=ROUTES,
                        jwt_svid_ttl_seconds=SVID_TTL)  # fmt: skip
    opened = await Services.open(settings, clock=clock)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(services.settings, services=services)
    headers = {"Authorization": f"Bearer {ROOT}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER, headers=headers) as c:
        yield c


async def agent_token(client: httpx.AsyncClient, clock: FixedClock) -> str:
    created = await client.post("/v1/agents", json={"name": "faq-bot", "owners": ["ops"],
                                                    "declarations": {}})  # fmt: skip
    assert created.status_code == 201, created.text
    key = generate_agent_key()
    assert (await client.post("/v1/agents/faq-bot/keys", json={"jwk": key.public_jwk})).is_success
    assert (await client.post("/v1/policies", json={"text": POLICY + USE_ORDERS})).is_success
    assert (await client.put("/v1/engines/orders-api", json=TOKENS)).is_success
    form = client_credentials(key.private_pem, client_id=created.json()["spiffe_id"],
                              audience=f"{ISSUER}/oauth2/token", now=clock.timestamp())  # fmt: skip
    issued = await client.post("/oauth2/token", data=form)
    assert issued.status_code == 200, issued.text
    token: str = issued.json()["access_token"]
    return token


async def decide(client: httpx.AsyncClient, token: str) -> int:
    answer = await client.get(ASKED, headers={"Authorization": f"Bearer {token}"})
    return answer.status_code


@pytest.fixture
def faulty(tmp_path: Path) -> Iterator[FaultyServer]:
    """``tether serve`` on SQLite under ``fiu-run -x`` (not started yet)."""
    need_fiu()
    server = FaultyServer(tmp_path / "data", log=tmp_path / "server.log")
    try:
        yield server
    finally:
        server.stop()


def sqlite_url(server: FaultyServer) -> str:
    return f"sqlite:///{server.data_dir / 'tether.db'}"

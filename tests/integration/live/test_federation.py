"""Federation: a second, real Tether (``tether serve``, on loopback) is the external OpenID
provider; this Tether (in process, on SQLite) trusts it by issuer URL.

Carol signs in at the provider (its sign-in form, by script) as the application ``tether-a``
— Tether's client id there — and her ID token is what she and her agent present here: she
consents with it, the agent exchanges it, the checkpoint decides on the delegated token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.api.conftest import ISSUER, ROOT, TRUST_DOMAIN
from tests.support.tokens import client_credentials
from tether.api.app import create_app
from tether.api.services import Services
from tether.cli._drive import drive
from tether.config import Settings
from tether.crypto.assertion import generate_agent_key
from tether.crypto.jwt import UnverifiedToken
from tether.delegation.flows import password_login_flow
from tether.delegation.token_exchange import GRANT_TYPE, ID_TOKEN_TYPE, JWT_TOKEN_TYPE

from .conftest import ServerProcess

PASSWORD = "correct horse battery staple"
POLICY = """
@id("shop-bot-reads-orders")
permit (principal == Tether::Agent::"shop-bot", action == Tether::Action::"read",
        resource == Tether::Api::"orders")
when { context has user && context.scopes.contains("orders:read") };
"""
ORDERS = {"type": "Api", "id": "orders", "properties": {"name": "orders", "data_class": "internal"}}


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The external provider: a Tether with carol and the client ``tether-a``."""
    home = tmp_path_factory.mktemp("provider")
    running = ServerProcess(home / "data", log=home / "server.log")
    running.start()
    try:
        with running.ops() as ops:
            body = {"name": "carol", "password": PASSWORD, "email": "carol@corp.example"}
            assert ops.post("/v1/users", json=body).status_code == 201
            client = {"client_id": "tether-a", "name": "Tether A",
                      "redirect_uris": ["http://127.0.0.1/cb"]}  # fmt: skip
            assert ops.post("/v1/clients", json=client).status_code == 201
        yield running
    finally:
        running.stop()


def _carol_id_token(provider: ServerProcess) -> str:
    flow = password_login_flow(
        issuer=provider.addr, username="carol", password=PASSWORD,
        scope="openid profile email", redirect_uri="http://127.0.0.1:9/cb", client_id="tether-a",
    )  # fmt: skip
    with httpx.Client() as client:
        tokens = drive(flow, client)
    assert tokens.id_token is not None
    return tokens.id_token


@pytest.fixture
async def here(tmp_path: Path, provider: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        data_dir=tmp_path / "data", issuer=ISSUER, trust_domain=TRUST_DOMAIN,
        root_token=ROOT, password_memory_kib=32, password_time_cost=1,
        external_providers=(("corp", provider.addr, "tether-a"),),
    )  # fmt: skip
    services = await Services.open(settings)
    transport = httpx.ASGITransport(app=create_app(settings, services=services))
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url=ISSUER, headers={"Authorization": f"Bearer {ROOT}"}
        ) as client:
            yield client
    finally:
        await services.close()


async def _agent_svid(client: httpx.AsyncClient) -> str:
    key = generate_agent_key()
    body = {"name": "shop-bot", "owners": ["sam"], "declarations": {}}
    assert (await client.post("/v1/agents", json=body)).status_code == 201
    added = await client.post("/v1/agents/shop-bot/keys", json={"jwk": key.public_jwk})
    assert added.status_code == 201
    assert (await client.post("/v1/policies", json={"text": POLICY})).status_code == 201
    form = client_credentials(
        key.private_pem, client_id=f"spiffe://{TRUST_DOMAIN}/agent/shop-bot",
        audience=f"{ISSUER}/oauth2/token", now=int(time.time()),
    )  # fmt: skip
    issued = await client.post("/oauth2/token", data=form)
    assert issued.status_code == 200, issued.text
    token: str = issued.json()["access_token"]
    return token


async def test_a_person_of_another_tether_consents_and_their_agent_acts_here(
    here: httpx.AsyncClient, provider: ServerProcess
) -> None:
    svid = await _agent_svid(here)
    id_token = await asyncio.to_thread(_carol_id_token, provider)
    as_carol = {"Authorization": f"Bearer {id_token}"}
    consent = {"agent": "shop-bot", "scopes": ["orders:read"], "purpose": "my orders",
               "purpose_code": "order-tracking"}  # fmt: skip
    made = await here.post("/v1/grants", json=consent, headers=as_carol)
    assert made.status_code == 201, made.text
    assert made.json()["user"] == "carol@corp"
    user = await here.get("/v1/users/carol@corp")
    assert user.json()["issuer"] == provider.addr
    assert user.json()["password_set"] is False
    form = {"grant_type": GRANT_TYPE, "subject_token": id_token,
            "subject_token_type": ID_TOKEN_TYPE, "actor_token": svid,
            "actor_token_type": JWT_TOKEN_TYPE, "scope": "orders:read"}  # fmt: skip
    exchanged = await here.post("/oauth2/token", data=form, headers={"Authorization": ""})
    assert exchanged.status_code == 200, exchanged.text
    delegated = exchanged.json()["access_token"]
    assert UnverifiedToken.parse(delegated).claims["sub"] == "carol@corp"
    decided = await here.post(
        "/access/v1/evaluation", json={"action": {"name": "read"}, "resource": ORDERS},
        headers={"Authorization": f"Bearer {delegated}"},
    )  # fmt: skip
    assert decided.json()["decision"] is True


async def test_the_providers_own_access_token_is_refused_here_wrong_audience(
    here: httpx.AsyncClient, provider: ServerProcess
) -> None:
    flow = password_login_flow(issuer=provider.addr, username="carol", password=PASSWORD)
    with httpx.Client() as client:
        access = (await asyncio.to_thread(drive, flow, client)).access_token  # aud: the provider
    answer = await here.get("/v1/grants", headers={"Authorization": f"Bearer {access}"})
    assert answer.status_code == 401


async def test_a_disabled_federated_user_is_refused_whatever_the_provider_says(
    here: httpx.AsyncClient, provider: ServerProcess
) -> None:
    id_token = await asyncio.to_thread(_carol_id_token, provider)
    as_carol = {"Authorization": f"Bearer {id_token}"}
    assert (await here.get("/v1/grants", headers=as_carol)).status_code == 200
    assert (await here.post("/v1/users/carol@corp/disable")).status_code == 200
    assert (await here.get("/v1/grants", headers=as_carol)).status_code == 401

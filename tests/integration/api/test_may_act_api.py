"""``may_act`` (RFC 8693 §4.4) over HTTP: a person's token that names who may act for them is
exchanged for that actor only.

Tether's own user tokens never carry ``may_act``; an external provider's may. The provider here
is a real HTTP server on loopback publishing its discovery document and its keys, trusted by
issuer URL; its person ``carol@corp`` has granted ``shop-bot`` ``orders:read``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc.jwk import ECKey

from tether.api.services import Services
from tether.config import Settings
from tether.crypto.assertion import generate_agent_key
from tether.crypto.jwt import Signer, UnverifiedToken
from tether.delegation.models import User, UserState
from tether.identity.access import Actor

from .conftest import TRUST_DOMAIN, AgentFactory, RegisteredAgent, api_settings
from .decisions import svid
from .test_token_exchange_api import POLICIES, _exchange

AUDIENCE = "tether-a"
SUBJECT = "u-123"


class Provider:
    """An OpenID provider's published documents on loopback, and its signing key."""

    def __init__(self) -> None:
        pair = generate_agent_key()
        self.jwk = pair.public_jwk
        self.signer = Signer(ECKey.import_key(pair.private_pem), kid=self.jwk["kid"])
        documents: dict[str, bytes] = {}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = documents.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body or b"{}")

            def log_message(self, *_: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        discovery = {"issuer": self.issuer, "jwks_uri": f"{self.issuer}/jwks"}
        documents["/.well-known/openid-configuration"] = json.dumps(discovery).encode()
        documents["/jwks"] = json.dumps({"keys": [self.jwk]}).encode()

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        base = {"iss": self.issuer, "sub": SUBJECT, "aud": AUDIENCE, "iat": now,
                "exp": now + 300, "scope": "orders:read"}  # fmt: skip
        return self.signer.sign_jwt(base | claims)


@pytest.fixture
def provider() -> Iterator[Provider]:
    found = Provider()
    serving = threading.Thread(target=found.server.serve_forever, daemon=True)
    serving.start()
    try:
        yield found
    finally:
        found.server.shutdown()
        found.server.server_close()
        serving.join(timeout=5)


@pytest.fixture
def settings(tmp_path: Path, provider: Provider) -> Settings:
    return api_settings(tmp_path, external_providers=(("corp", provider.issuer, AUDIENCE),))


@pytest.fixture
async def shop(
    client: httpx.AsyncClient, services: Services, make_agent: AgentFactory, provider: Provider
) -> RegisteredAgent:
    """shop-bot, with carol@corp's grant of ``orders:read``."""
    shop = await make_agent("shop-bot")
    applied = await client.post("/v1/policies", json={"text": POLICIES})
    assert applied.status_code == 201, applied.text
    now = services.clock.now()
    carol = User(
        id="usr_carol", name="carol@corp", display_name="Carol", email=None,
        state=UserState.ACTIVE, password_hash=None, issuer=provider.issuer, subject=SUBJECT,
        created_at=now, updated_at=now,
    )  # fmt: skip
    await services.store.create_user(carol)
    await services.delegation.grants.create(
        actor=Actor.user(name="carol@corp"),
        agent="shop-bot",
        scopes={"orders:read"},
        purpose="order support",
        purpose_code="support",
        session=None,
    )
    return shop


async def test_a_person_token_naming_the_agent_in_may_act_is_exchanged_for_it(
    client: httpx.AsyncClient, shop: RegisteredAgent, provider: Provider
) -> None:
    subject = provider.token(may_act={"sub": shop.spiffe_id})
    answer = await _exchange(client, subject, await svid(client, shop))
    assert answer.status_code == 200, answer.text
    claims = UnverifiedToken.parse(answer.json()["access_token"]).claims
    assert claims["sub"] == "carol@corp"
    assert claims["act"]["sub"].startswith(f"{shop.spiffe_id}/"), "the instance acts"


async def test_a_person_token_naming_another_actor_in_may_act_is_refused(
    client: httpx.AsyncClient, shop: RegisteredAgent, provider: Provider
) -> None:
    other = f"spiffe://{TRUST_DOMAIN}/agent/billing-bot"
    subject = provider.token(may_act={"sub": other})
    answer = await _exchange(client, subject, await svid(client, shop))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_request"
    assert "may_act" in answer.json()["error_description"]
    # The same person's token without the restriction goes through: the refusal is may_act's.
    allowed = await _exchange(client, provider.token(), await svid(client, shop))
    assert allowed.status_code == 200, allowed.text

"""Federation between two real Tethers (``tether serve``, on loopback): the provider (named
``localhost``, so the browser keeps the two servers' cookies apart) knows carol; this Tether
trusts it by issuer URL as ``corp``, and is known there as the client ``tether-a``.

Carol signs in here *through* the provider (Tether is the OpenID client; her ID token goes
from the provider to Tether, never through the shop or its agent), consents here, and the
shop's agent acts for ``<her sub>@corp`` with a delegated token the checkpoint accepts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.support.tokens import client_credentials
from tether.cli._drive import drive
from tether.crypto.assertion import generate_agent_key
from tether.crypto.jwt import UnverifiedToken
from tether.delegation.flows import password_login_flow
from tether.delegation.token_exchange import (
    ACCESS_TOKEN_TYPE,
    GRANT_TYPE,
    ID_TOKEN_TYPE,
    JWT_TOKEN_TYPE,
)

from .conftest import TD, ServerProcess

PASSWORD = "correct horse battery staple"
SHOP = "https://shop.example/callback"
POLICY = """
@id("shop-bot-reads-orders")
permit (principal == Tether::Agent::"shop-bot", action == Tether::Action::"read",
        resource == Tether::Api::"orders")
when { context has user && context.scopes.contains("orders:read") };
"""
ORDERS = {"type": "Api", "id": "orders", "properties": {"name": "orders", "data_class": "internal"}}


@dataclass
class Pair:
    idp: ServerProcess
    here: ServerProcess
    agent_key: bytes


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    home = tmp_path_factory.mktemp("federation")
    idp = ServerProcess(home / "idp", log=home / "idp.log")
    idp.addr = f"http://localhost:{idp.port}"
    idp.env = {"TETHER_ISSUER": idp.addr}
    here = ServerProcess(home / "here", log=home / "here.log")
    provider = {"name": "corp", "issuer": idp.addr, "audience": "tether-a"}
    here.env = {"TETHER_EXTERNAL_PROVIDERS": json.dumps([provider])}
    try:
        idp.start()
        here.start()
        yield Pair(idp=idp, here=here, agent_key=_setup(idp, here))
    finally:
        here.stop()
        idp.stop()


def _setup(idp: ServerProcess, here: ServerProcess) -> bytes:
    with idp.ops() as ops:
        body = {"name": "carol", "password": PASSWORD, "email": "carol@corp.example"}
        assert ops.post("/v1/users", json=body).status_code == 201
        callback = f"{here.addr}/oauth2/authorize/federated/callback"
        client = {"client_id": "tether-a", "name": "Tether A", "redirect_uris": [callback]}
        assert ops.post("/v1/clients", json=client).status_code == 201
    key = generate_agent_key()
    with here.ops() as ops:
        agent = {"name": "shop-bot", "owners": ["sam"], "declarations": {}}
        assert ops.post("/v1/agents", json=agent).status_code == 201
        assert ops.post("/v1/agents/shop-bot/keys", json={"jwk": key.public_jwk}).status_code == 201
        assert ops.post("/v1/policies", json={"text": POLICY}).status_code == 201
        shop = {"client_id": "shop-web", "name": "Shop", "redirect_uris": [SHOP],
                "agent": "shop-bot"}  # fmt: skip
        assert ops.post("/v1/clients", json=shop).status_code == 201
    return key.private_pem


def _handle(page: httpx.Response) -> str:
    found = re.search(r'name="handle" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _sign_in_through_the_provider(pair: Pair, browser: httpx.Client) -> tuple[str, str]:
    """Carol at the shop: sign in with corp, consent here; the shop's code and verifier."""
    verifier, challenge = _pkce()
    query = {"response_type": "code", "client_id": "shop-web", "redirect_uri": SHOP,
             "scope": "openid orders:read", "state": "s1", "code_challenge": challenge,
             "code_challenge_method": "S256", "purpose": "my orders",
             "purpose_code": "order-tracking"}  # fmt: skip
    login = browser.get(f"{pair.here.addr}/oauth2/authorize", params=query)
    link = re.search(r'href="(/oauth2/authorize/federated\?[^"]+)"', login.text)
    assert link, login.text
    to_idp = browser.get(pair.here.addr + link.group(1).replace("&amp;", "&"))
    assert to_idp.status_code == 303
    assert to_idp.headers["location"].startswith(pair.idp.addr)
    idp_login = browser.get(to_idp.headers["location"])
    form = {"handle": _handle(idp_login), "username": "carol", "password": PASSWORD}
    back = browser.post(f"{pair.idp.addr}/oauth2/authorize/login", data=form)
    assert back.status_code == 303, back.text
    consent = browser.get(back.headers["location"])  # the provider's code, to this Tether
    assert consent.status_code == 200, consent.text
    assert "shop-bot" in consent.text
    decided = browser.post(
        f"{pair.here.addr}/oauth2/authorize/consent",
        data={"handle": _handle(consent), "decision": "approve"},
    )
    assert decided.status_code == 303, decided.text
    code = parse_qs(urlsplit(decided.headers["location"]).query)["code"][0]
    return code, verifier


def _svid(pair: Pair) -> str:
    form = client_credentials(
        pair.agent_key, client_id=f"spiffe://{TD}/agent/shop-bot",
        audience=f"{pair.here.addr}/oauth2/token", now=int(time.time()),
    )  # fmt: skip
    issued = httpx.post(f"{pair.here.addr}/oauth2/token", data=form)
    assert issued.status_code == 200, issued.text
    token: str = issued.json()["access_token"]
    return token


def test_a_person_of_the_provider_signs_in_here_consents_and_their_agent_acts(pair: Pair) -> None:
    with httpx.Client() as browser:
        code, verifier = _sign_in_through_the_provider(pair, browser)
    redeem = {"grant_type": "authorization_code", "code": code, "redirect_uri": SHOP,
              "client_id": "shop-web", "code_verifier": verifier}  # fmt: skip
    tokens = httpx.post(f"{pair.here.addr}/oauth2/token", data=redeem)
    assert tokens.status_code == 200, tokens.text
    carol = UnverifiedToken.parse(tokens.json()["access_token"]).claims["sub"]
    assert carol.endswith("@corp")
    with pair.here.ops() as ops:
        user = ops.get(f"/v1/users/{carol}").json()
    assert (user["issuer"], user["password_set"]) == (pair.idp.addr, False)
    form = {"grant_type": GRANT_TYPE, "subject_token": tokens.json()["access_token"],
            "subject_token_type": ACCESS_TOKEN_TYPE, "actor_token": _svid(pair),
            "actor_token_type": JWT_TOKEN_TYPE}  # fmt: skip
    exchanged = httpx.post(f"{pair.here.addr}/oauth2/token", data=form)
    assert exchanged.status_code == 200, exchanged.text
    delegated = exchanged.json()["access_token"]
    assert UnverifiedToken.parse(delegated).claims["sub"] == carol
    decided = httpx.post(
        f"{pair.here.addr}/access/v1/evaluation",
        json={"action": {"name": "read"}, "resource": ORDERS},
        headers={"Authorization": f"Bearer {delegated}"},
    )
    assert decided.json()["decision"] is True


def _carol_tokens(pair: Pair, client_id: str = "tether-a") -> tuple[str, str]:
    """Carol's access and ID tokens straight from the provider (as a client of it)."""
    flow = password_login_flow(
        issuer=pair.idp.addr, username="carol", password=PASSWORD, scope="openid profile",
        redirect_uri=f"{pair.here.addr}/oauth2/authorize/federated/callback", client_id=client_id,
    )  # fmt: skip
    with httpx.Client() as client:
        tokens = drive(flow, client)
    assert tokens.id_token is not None
    return tokens.access_token, tokens.id_token


def test_the_providers_tokens_are_no_account_credential_here(pair: Pair) -> None:
    """Whoever holds carol's provider tokens (an app, an agent) cannot consent here for
    her: only her own sign-in at this Tether can."""
    access, id_token = _carol_tokens(pair)
    for token in (access, id_token):
        answer = httpx.get(
            f"{pair.here.addr}/v1/grants", headers={"Authorization": f"Bearer {token}"}
        )
        assert answer.status_code == 401


def test_an_agent_presenting_the_persons_provider_token_is_impersonation(pair: Pair) -> None:
    _, id_token = _carol_tokens(pair)
    decided = httpx.post(
        f"{pair.here.addr}/access/v1/evaluation",
        params={"explain": "true"},
        json={"action": {"name": "read"}, "resource": ORDERS},
        headers={"Authorization": f"Bearer {id_token}"},
    )
    assert decided.json()["decision"] is False
    assert any("impersonation" in r for r in decided.json()["context"]["reasons"])


def test_a_grant_given_in_one_sign_in_is_not_used_from_another_session(pair: Pair) -> None:
    """Her consent here is bound to her sign-in session here: the provider's own ID token
    (another session, held by whoever got it) exchanges for nothing under it."""
    with httpx.Client() as browser:
        _sign_in_through_the_provider(pair, browser)  # her grant, given here
    _, id_token = _carol_tokens(pair)
    form = {"grant_type": GRANT_TYPE, "subject_token": id_token,
            "subject_token_type": ID_TOKEN_TYPE, "actor_token": _svid(pair),
            "actor_token_type": JWT_TOKEN_TYPE, "scope": "orders:read"}  # fmt: skip
    exchanged = httpx.post(f"{pair.here.addr}/oauth2/token", data=form)
    assert exchanged.status_code == 400, exchanged.text
    assert exchanged.json()["error"] == "invalid_grant"

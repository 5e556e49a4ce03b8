"""The built-in OpenID provider over HTTP: sign-in, consent, the code, PKCE, the ID token — and
the attacks on each (a replayed or stolen code, a foreign redirect URI, cross-site forms)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tether.api.services import Services
from tether.config import Settings
from tether.crypto.jwt import UnverifiedToken
from tether.delegation.grants import ACCOUNT_SCOPE
from tether.delegation.models import GrantMatch

from .conftest import ISSUER, ROOT, TRUST_DOMAIN, AgentFactory

REDIRECT = "https://shop.example/callback"
PASSWORD = "correct horse battery staple"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        issuer=ISSUER,
        trust_domain=TRUST_DOMAIN,
        root_token=ROOT,
        password_memory_kib=32,
        password_time_cost=1,
    )


@dataclass
class Pkce:
    verifier: str
    challenge: str

    @classmethod
    def new(cls) -> Pkce:
        verifier = secrets.token_urlsafe(48)
        digest = hashlib.sha256(verifier.encode()).digest()
        return cls(verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode())


@pytest.fixture
async def shop(client: httpx.AsyncClient, make_agent: AgentFactory) -> None:
    await make_agent("shop-bot")
    body = {"client_id": "shop-web", "name": "Shop", "redirect_uris": [REDIRECT],
            "agent": "shop-bot"}  # fmt: skip
    assert (await client.post("/v1/clients", json=body)).status_code == 201
    added = await client.post("/v1/users", json={"name": "alice", "password": PASSWORD})
    assert added.status_code == 201


def _new_browser(app: httpx.AsyncClient) -> httpx.AsyncClient:
    """A browser on the same app: no operator token, its own cookies, redirects not
    followed."""
    return httpx.AsyncClient(transport=app._transport, base_url=ISSUER)


@pytest.fixture
def browser(client: httpx.AsyncClient) -> httpx.AsyncClient:
    return _new_browser(client)


def _query(pkce: Pkce, **extra: str) -> dict[str, str]:
    return {
        "response_type": "code", "client_id": "shop-web", "redirect_uri": REDIRECT,
        "scope": "openid profile orders:read", "state": "st-1", "nonce": "n-1",
        "code_challenge": pkce.challenge, "code_challenge_method": "S256",
        "purpose": "track my orders", "purpose_code": "order-tracking", **extra,
    }  # fmt: skip


def _handle(page: httpx.Response) -> str:
    found = re.search(r'name="handle" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def _redirected(answer: httpx.Response) -> dict[str, str]:
    assert answer.status_code == 303, answer.text
    location = answer.headers["location"]
    assert location.startswith(REDIRECT)
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def _sign_in_and_consent(browser: httpx.AsyncClient, pkce: Pkce) -> dict[str, str]:
    login = await browser.get("/oauth2/authorize", params=_query(pkce))
    assert login.status_code == 200
    form = {"handle": _handle(login), "username": "alice", "password": PASSWORD}
    consent = await browser.post("/oauth2/authorize/login", data=form)
    assert consent.status_code == 200, consent.text
    assert "shop-bot" in consent.text
    assert "orders:read" in consent.text
    decided = await browser.post(
        "/oauth2/authorize/consent", data={"handle": _handle(consent), "decision": "approve"}
    )
    return _redirected(decided)


async def _redeem(
    browser: httpx.AsyncClient, code: str, pkce: Pkce, **extra: str
) -> httpx.Response:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "client_id": "shop-web", "code_verifier": pkce.verifier, **extra}  # fmt: skip
    return await browser.post("/oauth2/token", data=form)


async def test_sign_in_consent_and_code_give_tokens_and_a_grant(
    shop: None, browser: httpx.AsyncClient, services: Services
) -> None:
    pkce = Pkce.new()
    back = await _sign_in_and_consent(browser, pkce)
    assert back["state"] == "st-1"
    assert back["iss"] == ISSUER  # RFC 9207
    tokens = await _redeem(browser, back["code"], pkce)
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    assert body["token_type"] == "Bearer"
    id_token = UnverifiedToken.parse(body["id_token"]).claims
    assert id_token["aud"] == "shop-web"
    assert id_token["sub"] == "alice"
    assert id_token["nonce"] == "n-1"
    access = UnverifiedToken.parse(body["access_token"]).claims
    assert access["token_use"] == "user"
    assert access["sid"] == id_token["sid"]
    grant = await services.store.get_grant(body["grant_id"])
    assert grant is not None
    assert grant.user == "alice"
    assert grant.agent == "shop-bot"
    assert grant.scopes == {"orders:read"}
    assert grant.session == access["sid"]


async def test_a_code_is_redeemed_once_and_a_second_use_revokes_what_it_gave(
    shop: None, browser: httpx.AsyncClient
) -> None:
    pkce = Pkce.new()
    back = await _sign_in_and_consent(browser, pkce)
    first = await _redeem(browser, back["code"], pkce)
    assert first.status_code == 200
    as_first = {"Authorization": f"Bearer {first.json()['access_token']}"}
    assert (await browser.get("/oauth2/userinfo", headers=as_first)).status_code == 200
    again = await _redeem(browser, back["code"], pkce)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"
    # RFC 6749 §4.1.2: the code was stolen, so the token it gave is revoked too.
    assert (await browser.get("/oauth2/userinfo", headers=as_first)).status_code == 401


async def test_a_stolen_code_without_the_pkce_verifier_is_refused(
    shop: None, browser: httpx.AsyncClient
) -> None:
    back = await _sign_in_and_consent(browser, Pkce.new())
    thief = await _redeem(browser, back["code"], Pkce.new())
    assert thief.status_code == 400
    assert thief.json()["error"] == "invalid_grant"


async def test_a_code_for_another_redirect_uri_or_client_is_refused(
    shop: None, browser: httpx.AsyncClient
) -> None:
    pkce = Pkce.new()
    back = await _sign_in_and_consent(browser, pkce)
    other = await _redeem(browser, back["code"], pkce, redirect_uri="https://evil.example/cb")
    assert other.json()["error"] == "invalid_grant"
    other = await _redeem(browser, back["code"], pkce, client_id="tether-cli")
    assert other.json()["error"] == "invalid_grant"


async def test_an_unregistered_redirect_uri_is_shown_never_redirected_to(
    shop: None, browser: httpx.AsyncClient
) -> None:
    page = await browser.get(
        "/oauth2/authorize", params=_query(Pkce.new(), redirect_uri="https://evil.example/cb")
    )
    assert page.status_code == 400
    assert "location" not in page.headers
    assert "not registered" in page.text


async def test_plain_pkce_is_refused_back_to_the_client(
    shop: None, browser: httpx.AsyncClient
) -> None:
    answer = await browser.get(
        "/oauth2/authorize", params=_query(Pkce.new(), code_challenge_method="plain")
    )
    assert _redirected(answer)["error"] == "invalid_request"


async def test_the_user_refusing_sends_access_denied(
    shop: None, browser: httpx.AsyncClient, services: Services
) -> None:
    pkce = Pkce.new()
    login = await browser.get("/oauth2/authorize", params=_query(pkce))
    form = {"handle": _handle(login), "username": "alice", "password": PASSWORD}
    consent = await browser.post("/oauth2/authorize/login", data=form)
    refused = await browser.post(
        "/oauth2/authorize/consent", data={"handle": _handle(consent), "decision": "deny"}
    )
    assert _redirected(refused)["error"] == "access_denied"
    assert await services.store.list_grants(GrantMatch(user="alice")) == []


async def test_wrong_password_shows_the_form_again_with_one_message(
    shop: None, browser: httpx.AsyncClient
) -> None:
    login = await browser.get("/oauth2/authorize", params=_query(Pkce.new()))
    form = {"handle": _handle(login), "username": "alice", "password": "wrong password!"}
    again = await browser.post("/oauth2/authorize/login", data=form)
    assert again.status_code == 401
    assert "Wrong name or password." in again.text
    unknown = await browser.post("/oauth2/authorize/login", data=form | {"username": "mallory"})
    assert "Wrong name or password." in unknown.text


async def test_a_login_form_posted_from_another_browser_is_refused(
    shop: None, browser: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    """Login CSRF: a form handle is bound to the browser that loaded the page."""
    login = await browser.get("/oauth2/authorize", params=_query(Pkce.new()))
    victim = _new_browser(client)
    form = {"handle": _handle(login), "username": "alice", "password": PASSWORD}
    answer = await victim.post("/oauth2/authorize/login", data=form)
    assert answer.status_code == 400
    assert "another browser" in answer.text


async def test_a_consent_form_from_another_session_is_refused(
    shop: None, browser: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    """Consent CSRF: the consent handle is bound to the sign-in session that saw the page."""
    attacker = _new_browser(client)
    login = await attacker.get("/oauth2/authorize", params=_query(Pkce.new()))
    form = {"handle": _handle(login), "username": "alice", "password": PASSWORD}
    consent = await attacker.post("/oauth2/authorize/login", data=form)
    handle = _handle(consent)
    # The victim is signed in too, in their own session.
    await _sign_in_and_consent(browser, Pkce.new())
    forged = await browser.post(
        "/oauth2/authorize/consent", data={"handle": handle, "decision": "approve"}
    )
    assert forged.status_code == 400
    assert "another browser or session" in forged.text


async def test_pages_forbid_scripts_and_framing(shop: None, browser: httpx.AsyncClient) -> None:
    page = await browser.get("/oauth2/authorize", params=_query(Pkce.new()))
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["x-frame-options"] == "DENY"
    assert "<script" not in page.text
    assert page.headers["cache-control"] == "no-store"


async def test_an_agent_named_script_renders_as_text(
    browser: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    body = {"client_id": "x-web", "name": "<script>alert(1)</script>",
            "redirect_uris": [REDIRECT]}  # fmt: skip
    assert (await client.post("/v1/clients", json=body)).status_code == 201
    query = _query(Pkce.new(), client_id="x-web", scope="openid")
    page = await browser.get("/oauth2/authorize", params=query)
    assert "<script>" not in page.text
    assert "&lt;script&gt;" in page.text


async def test_prompt_none_without_a_session_is_login_required(
    shop: None, browser: httpx.AsyncClient
) -> None:
    answer = await browser.get("/oauth2/authorize", params=_query(Pkce.new(), prompt="none"))
    assert _redirected(answer)["error"] == "login_required"


async def test_a_signed_in_user_is_not_asked_for_the_password_again(
    shop: None, browser: httpx.AsyncClient
) -> None:
    await _sign_in_and_consent(browser, Pkce.new())
    page = await browser.get("/oauth2/authorize", params=_query(Pkce.new()))
    assert 'name="password"' not in page.text
    assert "Allow" in page.text


async def test_userinfo_answers_for_a_user_token(shop: None, browser: httpx.AsyncClient) -> None:
    pkce = Pkce.new()
    back = await _sign_in_and_consent(browser, pkce)
    token = (await _redeem(browser, back["code"], pkce)).json()["access_token"]
    info = await browser.get("/oauth2/userinfo", headers={"Authorization": f"Bearer {token}"})
    assert info.status_code == 200
    assert info.json() == {"sub": "alice", "preferred_username": "alice"}


async def test_discovery_describes_the_provider(browser: httpx.AsyncClient) -> None:
    meta = (await browser.get("/.well-known/openid-configuration")).json()
    assert meta["authorization_endpoint"] == f"{ISSUER}/oauth2/authorize"
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert "authorization_code" in meta["grant_types_supported"]
    assert "urn:ietf:params:oauth:grant-type:token-exchange" in meta["grant_types_supported"]
    assert meta["introspection_endpoint"] == f"{ISSUER}/oauth2/introspect"


async def test_tethers_own_id_token_is_no_subject_token(
    shop: None, browser: httpx.AsyncClient, client: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    """An ID token is for the client that asked for it; only an access token is exchanged."""
    from .decisions import svid  # noqa: PLC0415 - avoids a circular import

    pkce = Pkce.new()
    back = await _sign_in_and_consent(browser, pkce)
    id_token = (await _redeem(browser, back["code"], pkce)).json()["id_token"]
    helper = await make_agent("helper-bot")
    form = {"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "subject_token": id_token,
            "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
            "actor_token": await svid(client, helper),
            "actor_token_type": "urn:ietf:params:oauth:token-type:jwt"}  # fmt: skip
    answer = await browser.post("/oauth2/token", data=form)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_request"


async def test_only_tethers_own_clients_may_ask_for_the_persons_account(
    shop: None, browser: httpx.AsyncClient
) -> None:
    query = _query(Pkce.new(), scope=f"openid orders:read {ACCOUNT_SCOPE}")
    answer = await browser.get("/oauth2/authorize", params=query)
    assert _redirected(answer)["error"] == "invalid_scope"


async def test_a_client_fronting_an_agent_cannot_ask_consent_for_another(
    shop: None, browser: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    await make_agent("bank-bot")
    answer = await browser.get("/oauth2/authorize", params=_query(Pkce.new(), agent="bank-bot"))
    assert _redirected(answer)["error"] == "invalid_request"


async def test_prompt_none_when_consent_is_needed_is_consent_required(
    shop: None, browser: httpx.AsyncClient
) -> None:
    await _sign_in_and_consent(browser, Pkce.new())  # signed in now
    answer = await browser.get("/oauth2/authorize", params=_query(Pkce.new(), prompt="none"))
    assert _redirected(answer)["error"] == "consent_required"


async def test_a_request_without_response_type_is_invalid_request(
    shop: None, browser: httpx.AsyncClient
) -> None:
    query = {k: v for k, v in _query(Pkce.new()).items() if k != "response_type"}
    answer = await browser.get("/oauth2/authorize", params=query)
    assert _redirected(answer)["error"] == "invalid_request"


async def test_a_password_change_ends_the_sign_in_session(
    shop: None, browser: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    await _sign_in_and_consent(browser, Pkce.new())
    await asyncio.sleep(1.05)  # the change falls in a later second than the sign-in
    changed = await client.put("/v1/users/alice/password", json={"password": "n" * 16})
    assert changed.status_code == 200
    page = await browser.get("/oauth2/authorize", params=_query(Pkce.new()))
    assert 'name="password"' in page.text, "the old session still signs in"


async def test_authorize_and_userinfo_also_answer_post(
    shop: None, browser: httpx.AsyncClient
) -> None:
    """OpenID Connect Core §3.1.2.1 and §5.3.1: GET and POST both."""
    page = await browser.post("/oauth2/authorize", data=_query(Pkce.new()))
    assert page.status_code == 200
    assert 'name="password"' in page.text
    pkce = Pkce.new()
    back = await _sign_in_and_consent(browser, pkce)
    token = (await _redeem(browser, back["code"], pkce)).json()["access_token"]
    info = await browser.post("/oauth2/userinfo", headers={"Authorization": f"Bearer {token}"})
    assert info.json()["sub"] == "alice"


async def test_password_guessing_at_the_form_is_slowed_down(
    shop: None, browser: httpx.AsyncClient
) -> None:
    login = await browser.get("/oauth2/authorize", params=_query(Pkce.new()))
    handle = _handle(login)
    for attempt in range(5):
        form = {"handle": handle, "username": "alice", "password": f"guess number {attempt}"}
        assert (await browser.post("/oauth2/authorize/login", data=form)).status_code == 401
    right = {"handle": handle, "username": "alice", "password": PASSWORD}
    held = await browser.post("/oauth2/authorize/login", data=right)
    assert held.status_code == 429, "the sixth attempt is refused before any password check"
    assert "too many failed sign-ins" in held.text

"""The sans-I/O login and token-exchange flows, driven step by step with scripted answers: what
each step sends, and every refusal turned into a :class:`FlowError` with its OAuth error."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from tether.delegation.flows import (
    ACCESS_TOKEN,
    BROWSER_COOKIE,
    JWT,
    TOKEN_EXCHANGE,
    Flow,
    FlowError,
    HttpRequest,
    HttpResponse,
    TokenSet,
    password_login_flow,
    s256,
    token_exchange_flow,
)

ISSUER = "https://tether.example"
TOKEN_ENDPOINT = f"{ISSUER}/oauth2/token"
ISSUED = {"access_token": "at", "token_type": "Bearer", "expires_in": 300, "scope": "orders:read",
          "issued_token_type": ACCESS_TOKEN}  # fmt: skip


def _answer(status: int, body: Any = None, **headers: str) -> HttpResponse:
    return HttpResponse(status=status, headers=headers, body=body)


def _finish(flow: Flow, response: HttpResponse) -> TokenSet:
    with pytest.raises(StopIteration) as done:
        flow.send(response)
    result: TokenSet = done.value.value
    return result


def test_token_exchange_sends_the_rfc_8693_form_and_reads_the_delegated_token() -> None:
    flow = token_exchange_flow(
        token_endpoint=TOKEN_ENDPOINT, subject_token="user-token", actor_token="svid",
        scope="orders:read", audience="https://api.acme.org", grant_id="g_1",
    )  # fmt: skip
    request = next(flow)
    assert (request.method, request.url) == ("POST", TOKEN_ENDPOINT)
    assert request.form == {
        "grant_type": TOKEN_EXCHANGE, "subject_token": "user-token",
        "subject_token_type": ACCESS_TOKEN, "requested_token_type": ACCESS_TOKEN,
        "actor_token": "svid", "actor_token_type": JWT, "scope": "orders:read",
        "audience": "https://api.acme.org", "grant_id": "g_1",
    }  # fmt: skip
    issued = _finish(flow, _answer(200, ISSUED))
    assert (issued.access_token, issued.scope, issued.expires_in) == ("at", "orders:read", 300)
    assert issued.issued_token_type == ACCESS_TOKEN


def test_token_exchange_by_client_assertion_sends_no_actor_token() -> None:
    assertion = {"client_assertion_type": "jwt-bearer", "client_assertion": "signed"}
    request = next(
        token_exchange_flow(
            token_endpoint=TOKEN_ENDPOINT, subject_token="user-token", client_assertion=assertion
        )
    )
    assert request.form is not None
    assert "actor_token" not in request.form
    assert request.form["client_assertion"] == "signed"


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, {"error": "invalid_grant", "error_description": "no grant"}, "invalid_grant"),
        (400, {"error": "invalid_scope"}, "invalid_scope"),
        (200, {"token_type": "Bearer"}, "server_error"),
        (502, "<html>bad gateway</html>", "server_error"),
    ],
    ids=["refused_grant", "widened_scope", "no_token_in_a_200", "not_json"],
)
def test_a_refused_exchange_raises_the_servers_oauth_error(
    status: int, body: Any, error: str
) -> None:
    flow = token_exchange_flow(token_endpoint=TOKEN_ENDPOINT, subject_token="t", actor_token="a")
    next(flow)
    with pytest.raises(FlowError) as refused:
        flow.send(_answer(status, body))
    assert refused.value.error == error


def _signed_in_redirect(authorize: HttpRequest, **changes: str) -> str:
    query = {k: v[0] for k, v in parse_qs(urlsplit(authorize.url).query).items()}
    params = {"code": "the-code", "state": query["state"], "iss": ISSUER, **changes}
    return f"{query['redirect_uri']}?{urlencode(params)}"


def test_password_login_goes_through_the_sign_in_form_and_redeems_the_code_with_pkce() -> None:
    flow = password_login_flow(issuer=ISSUER, username="alice", password="s3cret")
    page = next(flow)
    assert page.method == "GET"
    assert page.url.startswith(f"{ISSUER}/oauth2/authorize?")
    authorize = {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items()}
    assert authorize["code_challenge_method"] == "S256"
    posted = flow.send(
        _answer(200, {"handle": "h1", "action": "/oauth2/authorize/login"},
                **{"set-cookie": f"{BROWSER_COOKIE}=b1; HttpOnly; SameSite=Strict"})
    )  # fmt: skip
    assert (posted.method, posted.url) == ("POST", f"{ISSUER}/oauth2/authorize/login")
    assert posted.form == {"handle": "h1", "username": "alice", "password": "s3cret"}
    assert posted.headers["Cookie"] == f"{BROWSER_COOKIE}=b1"
    redeem = flow.send(_answer(303, None, location=_signed_in_redirect(page)))
    assert redeem.url == TOKEN_ENDPOINT
    assert redeem.form is not None
    assert redeem.form["code"] == "the-code"
    assert s256(redeem.form["code_verifier"]) == authorize["code_challenge"]
    assert _finish(flow, _answer(200, ISSUED)).access_token == "at"


@pytest.mark.parametrize(
    ("redirect", "error"),
    [
        ({"state": "someone-elses"}, None),
        ({"iss": "https://evil.example"}, None),
        ({"error": "access_denied", "code": ""}, "access_denied"),
    ],
    ids=["state_of_another_sign_in", "mixed_up_provider", "refused_by_the_person"],
)
def test_a_redirect_that_is_not_this_sign_ins_is_refused(
    redirect: dict[str, str], error: str | None
) -> None:
    flow = password_login_flow(issuer=ISSUER, username="alice", password="s3cret")
    page = next(flow)
    flow.send(_answer(200, {"handle": "h1"}, **{"set-cookie": f"{BROWSER_COOKIE}=b1"}))
    with pytest.raises(FlowError) as refused:
        flow.send(_answer(303, None, location=_signed_in_redirect(page, **redirect)))
    assert refused.value.error == error


def test_a_wrong_password_is_access_denied_and_nothing_is_redeemed() -> None:
    flow = password_login_flow(issuer=ISSUER, username="alice", password="wrong")
    next(flow)
    flow.send(_answer(200, {"handle": "h1"}, **{"set-cookie": f"{BROWSER_COOKIE}=b1"}))
    with pytest.raises(FlowError) as refused:
        flow.send(_answer(401, {"error": "access_denied"}))
    assert refused.value.error == "access_denied"


def test_a_sign_in_page_without_its_browser_cookie_is_refused() -> None:
    flow = password_login_flow(issuer=ISSUER, username="alice", password="s3cret")
    next(flow)
    with pytest.raises(FlowError, match="cookie"):
        flow.send(_answer(200, {"handle": "h1"}))

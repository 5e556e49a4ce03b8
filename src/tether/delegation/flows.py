"""The client side of delegation as sans-I/O flows: sign-in (authorization code + PKCE, by a
browser or by name and password) and token exchange (RFC 8693).

A flow is a generator that yields the :class:`HttpRequest` to send and receives the
:class:`HttpResponse` that came back, until it returns its result — the shape of httpx's
``Auth.auth_flow``. The same flow is driven by the CLI with a blocking client
(:func:`tether.cli._drive.drive`) and by the SDK with an async one, so the protocol is written
once. Failures raise :class:`FlowError` with the OAuth error code the server sent.

Example::

    flow = token_exchange_flow(token_endpoint=f"{addr}/oauth2/token", subject_token=user_token,
                               actor_token=svid, scope="orders:read")
    exchanged = drive(flow, httpx.Client())      # ExchangedToken(access_token=…, …)
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from tether.errors import Error

__all__ = [
    "BROWSER_COOKIE",
    "CLI_CLIENT",
    "Flow",
    "FlowError",
    "HttpRequest",
    "HttpResponse",
    "LoginStart",
    "SignedIn",
    "TokenSet",
    "code_flow",
    "code_from_redirect",
    "password_login_flow",
    "s256",
    "start_login",
    "token_exchange_flow",
]

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
JWT = "urn:ietf:params:oauth:token-type:jwt"
#: ``tether login``'s client id at the built-in provider.
CLI_CLIENT = "tether-cli"
#: The cookie that binds a sign-in form to the browser that loaded it.
BROWSER_COOKIE = "tether_browser"


class FlowError(Error):
    """The server refused a step; :attr:`error` is its OAuth error (``invalid_grant``, …)."""

    code = "flow_failed"

    def __init__(self, message: str, *, error: str | None = None) -> None:
        super().__init__(message, details={"error": error} if error else None)
        self.error = error


@dataclass(frozen=True, kw_only=True)
class HttpRequest:
    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    form: Mapping[str, str] | None = None


@dataclass(frozen=True, kw_only=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: Any = None  # the decoded JSON body, when there is one


@dataclass(frozen=True, kw_only=True)
class TokenSet:
    """What the token endpoint answered."""

    access_token: str
    token_type: str
    expires_in: int
    scope: str
    id_token: str | None = None
    grant_id: str | None = None
    issued_token_type: str | None = None


Flow = Generator[HttpRequest, HttpResponse, TokenSet]


@dataclass(frozen=True, kw_only=True)
class LoginStart:
    """Where to send the person, and what the redirect must bring back."""

    url: str
    state: str
    verifier: str
    redirect_uri: str


@dataclass(frozen=True, kw_only=True)
class SignedIn:
    code: str
    redirect_uri: str
    verifier: str


def s256(verifier: str) -> str:
    """RFC 7636 §4.2: the ``S256`` code challenge of a verifier."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, s256(verifier)


def start_login(
    *,
    issuer: str,
    redirect_uri: str,
    scope: str = "openid profile",
    client_id: str = CLI_CLIENT,
    extra: Mapping[str, str] | None = None,
) -> tuple[LoginStart, dict[str, str]]:
    """The authorization URL (PKCE S256, a fresh ``state``) and its query."""
    verifier, challenge = _pkce()
    state = secrets.token_urlsafe(16)
    query = {
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
        "scope": scope, "state": state, "code_challenge": challenge,
        "code_challenge_method": "S256", **(extra or {}),
    }  # fmt: skip
    url = f"{issuer.rstrip('/')}/oauth2/authorize?{urlencode(query)}"
    return LoginStart(url=url, state=state, verifier=verifier, redirect_uri=redirect_uri), query


def code_from_redirect(start: LoginStart, location: str, *, issuer: str) -> SignedIn:
    """The code a redirect brought back, once its ``state`` is this login's (RFC 6749 §10.12)
    and its ``iss``, when it has one, the provider asked (RFC 9207, against mix-up); an
    ``error`` it brought is raised."""
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    if not secrets.compare_digest(query.get("state", ""), start.state):
        raise FlowError("the redirect does not belong to this sign-in (state)")
    if "iss" in query and query["iss"] != issuer.rstrip("/"):
        raise FlowError("the redirect comes from another provider (iss)")
    if "error" in query:
        raise FlowError(query.get("error_description", query["error"]), error=query["error"])
    if not query.get("code"):
        raise FlowError("the redirect carries no code")
    return SignedIn(code=query["code"], redirect_uri=start.redirect_uri, verifier=start.verifier)


def code_flow(*, issuer: str, signed_in: SignedIn, client_id: str = CLI_CLIENT) -> Flow:
    """RFC 6749 §4.1.3: redeem the code with its PKCE verifier."""
    form = {
        "grant_type": "authorization_code", "code": signed_in.code,
        "redirect_uri": signed_in.redirect_uri, "client_id": client_id,
        "code_verifier": signed_in.verifier,
    }  # fmt: skip
    response = yield _token_request(issuer, form)
    return _token_set(response)


def password_login_flow(
    *,
    issuer: str,
    username: str,
    password: str,
    scope: str = "openid profile",
    redirect_uri: str = "http://127.0.0.1:9/callback",
    client_id: str = CLI_CLIENT,
) -> Flow:
    """Sign in with a name and password through the built-in provider's own sign-in form
    (the JSON form of the page; no password grant exists): the same checks, records and
    limits as a person at the browser. The redirect is read, never followed."""
    start, _ = start_login(
        issuer=issuer, redirect_uri=redirect_uri, scope=scope, client_id=client_id
    )
    page = yield HttpRequest(method="GET", url=start.url, headers={"Accept": "application/json"})
    body = page.body if isinstance(page.body, Mapping) else {}
    if page.status != 200 or not isinstance(body.get("handle"), str):
        raise FlowError(f"the sign-in page answered {page.status}")
    browser = _cookie(page.headers.get("set-cookie", ""), BROWSER_COOKIE)
    form = {"handle": body["handle"], "username": username, "password": password}
    action = f"{issuer.rstrip('/')}{body.get('action', '/oauth2/authorize/login')}"
    posted = yield HttpRequest(
        method="POST", url=action, form=form, headers={"Cookie": f"{BROWSER_COOKIE}={browser}"}
    )
    if posted.status == 401:
        raise FlowError("wrong name or password", error="access_denied")
    if posted.status != 303:
        raise FlowError(f"the sign-in answered {posted.status}")
    signed_in = code_from_redirect(start, posted.headers.get("location", ""), issuer=issuer)
    return (yield from code_flow(issuer=issuer, signed_in=signed_in, client_id=client_id))


def token_exchange_flow(
    *,
    token_endpoint: str,
    subject_token: str,
    actor_token: str | None = None,
    scope: str | None = None,
    audience: str | None = None,
    grant_id: str | None = None,
    client_assertion: Mapping[str, str] | None = None,
) -> Flow:
    """RFC 8693 §2.1: the subject's token for a delegated token, for the actor named by
    ``actor_token`` (its JWT-SVID) or by ``client_assertion`` (private_key_jwt fields)."""
    form = {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": subject_token,
        "subject_token_type": ACCESS_TOKEN,
        "requested_token_type": ACCESS_TOKEN,
    }
    if actor_token is not None:
        form |= {"actor_token": actor_token, "actor_token_type": JWT}
    optional = {"scope": scope, "audience": audience, "grant_id": grant_id}
    form |= {k: v for k, v in optional.items() if v is not None}
    form |= dict(client_assertion or {})
    response = yield HttpRequest(method="POST", url=token_endpoint, form=form)
    return _token_set(response)


def _token_request(issuer: str, form: Mapping[str, str]) -> HttpRequest:
    return HttpRequest(method="POST", url=f"{issuer.rstrip('/')}/oauth2/token", form=form)


def _token_set(response: HttpResponse) -> TokenSet:
    body = response.body if isinstance(response.body, Mapping) else {}
    if response.status != 200 or "access_token" not in body:
        error = str(body.get("error") or "server_error")
        raise FlowError(str(body.get("error_description") or error), error=error)
    return TokenSet(
        access_token=str(body["access_token"]),
        token_type=str(body.get("token_type", "Bearer")),
        expires_in=int(body.get("expires_in", 0)),
        scope=str(body.get("scope", "")),
        id_token=body.get("id_token"),
        grant_id=body.get("grant_id"),
        issued_token_type=body.get("issued_token_type"),
    )


def _cookie(header: str, name: str) -> str:
    """The value of cookie ``name`` in a ``Set-Cookie`` header (its first attribute)."""
    key, _, value = header.split(";", 1)[0].strip().partition("=")
    if key != name or not value:
        raise FlowError("the sign-in page set no browser cookie")
    return value

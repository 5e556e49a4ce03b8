"""The client side of delegation as sans-I/O flows: sign-in (authorization code + PKCE, by a
browser or by name and password), token exchange (RFC 8693), and approvals (OpenID CIBA, poll
mode: ask, then wait a bounded time or hand back the pending request to poll later).

A flow is a generator that yields the :class:`HttpRequest` to send and receives the
:class:`HttpResponse` that came back, until it returns its result — the shape of httpx's
``Auth.auth_flow``. The same flow is driven by the CLI with a blocking client
(:func:`tether.cli._drive.drive`) and by the SDK with an async one, so the protocol is written
once. Failures raise :class:`FlowError` with the OAuth error code the server sent. An approval
flow also yields :class:`Pause` (the driver sleeps that long, then sends ``None``).

Example::

    flow = token_exchange_flow(token_endpoint=f"{addr}/oauth2/token", subject_token=user_token,
                               actor_token=svid, scope="orders:read")
    exchanged = drive(flow, httpx.Client())      # ExchangedToken(access_token=…, …)
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from tether.errors import Error

__all__ = [
    "BROWSER_COOKIE",
    "CLI_CLIENT",
    "ApprovalFlow",
    "ApprovalPending",
    "Approved",
    "Flow",
    "FlowError",
    "HttpRequest",
    "HttpResponse",
    "LoginStart",
    "Pause",
    "SignedIn",
    "TokenSet",
    "approval_flow",
    "approval_poll_flow",
    "code_flow",
    "code_from_redirect",
    "password_login_flow",
    "s256",
    "start_login",
    "token_exchange_flow",
    "token_set",
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
    #: A JSON body (the decision and lease endpoints); never sent together with ``form``.
    json: Any = None


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
    return token_set(response)


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
    return token_set(response)


def _token_request(issuer: str, form: Mapping[str, str]) -> HttpRequest:
    return HttpRequest(method="POST", url=f"{issuer.rstrip('/')}/oauth2/token", form=form)


def token_set(response: HttpResponse) -> TokenSet:
    """The token endpoint's answer, or :class:`FlowError` with the OAuth error it sent."""
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


# -- approvals (OpenID CIBA, poll mode) ----------------------------------------------------

CIBA = "urn:openid:params:grant-type:ciba"
#: CIBA Core §11: a ``slow_down`` adds this to the interval (as RFC 8628 §3.5 does).
SLOW_DOWN_STEP = 5


@dataclass(frozen=True)
class Pause:
    """Wait this many seconds, then send ``None`` back into the flow."""

    seconds: float


@dataclass(frozen=True, kw_only=True)
class Approved:
    """The person approved: the approval token (single use, short-lived) and what it grants
    (RFC 9396: with a partial approval, less than was asked)."""

    access_token: str
    expires_in: int
    authorization_details: tuple[Mapping[str, Any], ...]
    id_token: str | None = None


@dataclass(frozen=True, kw_only=True)
class ApprovalPending:
    """No answer within the wait: poll again later with :func:`approval_poll_flow`."""

    auth_req_id: str
    expires_in: int
    interval: int


ApprovalFlow = Generator[HttpRequest | Pause, HttpResponse | None, Approved | ApprovalPending]
#: Fresh client authentication fields for each request (a ``private_key_jwt`` assertion is
#: single use): ``client_assertion_type``, ``client_assertion``, ``instance_id``.
Authenticate = Callable[[], Mapping[str, str]]


def approval_flow(
    *,
    issuer: str,
    authenticate: Authenticate,
    details: Sequence[Mapping[str, Any]],
    hint: tuple[str, str],
    binding_message: str | None = None,
    wait: float = 0.0,
) -> ApprovalFlow:
    """Ask the person ``hint`` names (``("login_hint", name)``, or ``("login_hint_token",
    delegated_token)``) to approve the calls in ``details`` (RFC 9396 items, each with its
    ``call``), then poll for up to ``wait`` seconds: :class:`Approved`, or
    :class:`ApprovalPending` to poll later. A refusal or a timeout raises :class:`FlowError`
    (``access_denied``, ``expired_token``)."""
    form = {hint[0]: hint[1], "scope": "openid",
            "authorization_details": json.dumps(list(details))}  # fmt: skip
    if binding_message is not None:
        form["binding_message"] = binding_message
    url = f"{issuer.rstrip('/')}/oauth2/bc-authorize"
    started = yield HttpRequest(method="POST", url=url, form=form | dict(authenticate()))
    body = _ok(started)
    pending = ApprovalPending(
        auth_req_id=str(body["auth_req_id"]),
        expires_in=int(body["expires_in"]),
        interval=int(body["interval"]),
    )
    flow = approval_poll_flow(issuer=issuer, authenticate=authenticate, pending=pending, wait=wait)
    return (yield from flow)


def approval_poll_flow(
    *, issuer: str, authenticate: Authenticate, pending: ApprovalPending, wait: float
) -> ApprovalFlow:
    """Poll for ``pending`` every ``interval`` seconds (5 more after each ``slow_down``) for
    up to ``wait`` seconds."""
    interval, waited = pending.interval, 0.0
    while True:
        form = {"grant_type": CIBA, "auth_req_id": pending.auth_req_id, **authenticate()}
        response = yield _token_request(issuer, form)
        body = response.body if response is not None and isinstance(response.body, Mapping) else {}
        if response is not None and response.status == 200 and "access_token" in body:
            return _approved(body)
        error = str(body.get("error") or "server_error")
        if error == "slow_down":
            interval += SLOW_DOWN_STEP
        elif error != "authorization_pending":
            raise FlowError(str(body.get("error_description") or error), error=error)
        if waited + interval > wait:
            left = max(0, pending.expires_in - int(waited))
            return replace(pending, expires_in=left, interval=interval)
        yield Pause(interval)
        waited += interval


def _ok(response: HttpResponse | None) -> Mapping[str, Any]:
    body = response.body if response is not None and isinstance(response.body, Mapping) else {}
    if response is None or response.status != 200:
        error = str(body.get("error") or "server_error")
        raise FlowError(str(body.get("error_description") or error), error=error)
    return body


def _approved(body: Mapping[str, Any]) -> Approved:
    granted = body.get("authorization_details")
    return Approved(
        access_token=str(body["access_token"]),
        expires_in=int(body.get("expires_in", 0)),
        authorization_details=tuple(granted) if isinstance(granted, list) else (),
        id_token=body.get("id_token"),
    )

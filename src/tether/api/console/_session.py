"""Signing in to the console, and who is looking.

The console is an OpenID Connect client of the provider it is served beside: ``/console/login``
sends the person to ``/oauth2/authorize`` as the built-in client ``tether-console`` (code flow,
PKCE S256, ``state``), so they sign in with a password or through an external provider exactly
as anywhere else; ``/console/callback`` redeems the code in process and checks that the access
token is the person's own (:meth:`~tether.delegation.tokens.AccessTokens.user_of`).

The session is then a sealed cookie (AES-GCM under a key derived from the key-encryption key,
purpose ``console-session``: every replica reads it, nobody can alter it), ``HttpOnly``,
``SameSite=Lax``, ``Secure`` behind https, limited to ``/console``. It names the person, when
they signed in, and the session's CSRF token. Each request reads the person again: a disabled
user, or one whose password or role changed since, is signed out at once. Every state-changing
request carries the CSRF token (a hidden form field, or the ``X-CSRF-Token`` header htmx sends)
and, when the browser says where it comes from, this origin — else ``csrf_refused``.

What a person may do is their console role (``User.role``): the permissions of that operator
role, held as themselves. With no role they are only an end user: their own grants and approval
requests.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import FormData

from tether._internal.ids import new_id
from tether.api.deps import ServicesDep
from tether.api.routes.authorize import COOKIE_PATH as PROVIDER_COOKIE_PATH
from tether.api.routes.authorize import SESSION_COOKIE as PROVIDER_SESSION
from tether.api.services import Services
from tether.delegation.clients import CONSOLE_CALLBACK, CONSOLE_CLIENT_ID
from tether.delegation.flows import s256
from tether.delegation.tokens import issued_since_change
from tether.errors import CsrfRefused, TokenInvalid, Unauthenticated
from tether.identity.access import Actor, Permission, allowed
from tether.identity.models import Role

__all__ = ["CheckedForm", "SignInNeeded", "Viewer", "ViewerDep", "router"]

router = APIRouter(tags=["console"], include_in_schema=False)

SESSION_COOKIE = "tether_console"
LOGIN_COOKIE = "tether_console_login"
COOKIE_PATH = "/console"
CSRF_HEADER = "x-csrf-token"
#: How long the round trip through the sign-in page may take.
LOGIN_TTL = 600
_SESSION_PURPOSE = "console-session"
_LOGIN_PURPOSE = "console-login"


@dataclass(frozen=True, kw_only=True)
class Viewer:
    """The signed-in person looking at the console."""

    user: str
    role: Role | None
    sid: str
    csrf: str

    @property
    def person(self) -> Actor:
        """The person acting for themselves: their grants, their approval requests."""
        return Actor.user(name=self.user)

    @property
    def operator(self) -> Actor | None:
        """The person with their console role, or None when they hold none."""
        if self.role is None:
            return None
        return Actor.operator(token_id=f"console:{self.sid}", name=self.user, role=self.role)

    def may(self, permission: Permission) -> bool:
        """Whether the role holds ``permission`` outright (owners' rights are checked by the
        service acting on one agent)."""
        return self.operator is not None and allowed(self.operator, permission)

    def acting(self) -> Actor:
        """The actor a management action is taken as: the role, or the person."""
        return self.operator or self.person


class SignInNeeded(Exception):
    """No good session: the person is sent to sign in (then back to ``next``)."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next = next_path


def _secure(services: Services) -> bool:
    return urlsplit(services.settings.issuer_url).scheme == "https"


def _set(response: Response, services: Services, name: str, value: str, age: int) -> None:
    response.set_cookie(
        name, value, max_age=age, path=COOKIE_PATH, secure=_secure(services), httponly=True,
        samesite="lax",
    )  # fmt: skip


def _redirect_uri(services: Services) -> str:
    return services.settings.issuer_url.rstrip("/") + CONSOLE_CALLBACK


def _local(path: str | None) -> str:
    """``path`` if it is a console page of this origin, else the overview (no open redirect)."""
    if path and path.startswith(COOKIE_PATH) and not path.startswith("//") and "\\" not in path:
        return path
    return COOKIE_PATH


@router.get("/console/login")
async def login(request: Request, services: ServicesDep) -> Response:
    verifier = secrets.token_urlsafe(48)
    state = secrets.token_urlsafe(24)
    now = int(services.clock.now().timestamp())
    sealed = services.delegation.sealer.seal(
        {"verifier": verifier, "state": state, "next": _local(request.query_params.get("next"))},
        purpose=_LOGIN_PURPOSE,
        expires_at=now + LOGIN_TTL,
    )
    query = {
        "response_type": "code",
        "client_id": CONSOLE_CLIENT_ID,
        "redirect_uri": _redirect_uri(services),
        "scope": "openid tether:account",
        "state": state,
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
    }
    response = RedirectResponse(f"/oauth2/authorize?{urlencode(query)}", status_code=303)
    _set(response, services, LOGIN_COOKIE, sealed, LOGIN_TTL)
    return response


@router.get(CONSOLE_CALLBACK)
async def callback(request: Request, services: ServicesDep) -> Response:
    """The provider's answer: the code redeemed here, the session started."""
    params = request.query_params
    now = int(services.clock.now().timestamp())
    try:
        pending = services.delegation.sealer.open(
            request.cookies.get(LOGIN_COOKIE, ""), purpose=_LOGIN_PURPOSE, now=now
        )
    except TokenInvalid as exc:
        raise Unauthenticated("this sign-in has expired or began in another browser") from exc
    if not hmac.compare_digest(str(pending["state"]), params.get("state", "")):
        raise Unauthenticated("this sign-in answers another request (state)")
    if params.get("iss") not in (None, services.settings.issuer_url):
        raise Unauthenticated("the answer names another issuer (RFC 9207)")
    if "error" in params:
        raise Unauthenticated(f"signing in failed: {params.get('error_description') or 'refused'}")
    body = await services.delegation.provider.redeem(
        {"code": params.get("code", ""), "code_verifier": str(pending["verifier"]),
         "client_id": CONSOLE_CLIENT_ID, "redirect_uri": _redirect_uri(services)}
    )  # fmt: skip
    user = await services.delegation.tokens.user_of(str(body["access_token"]))
    session = {"sid": new_id("csn"), "user": user, "auth_time": now,
               "csrf": secrets.token_urlsafe(32)}  # fmt: skip
    ttl = services.settings.user_session_ttl_seconds
    sealed = services.delegation.sealer.seal(
        session, purpose=_SESSION_PURPOSE, expires_at=now + ttl
    )
    response = RedirectResponse(_local(str(pending.get("next"))), status_code=303)
    _set(response, services, SESSION_COOKIE, sealed, ttl)
    response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
    return response


async def current_viewer(request: Request, services: ServicesDep) -> Viewer:
    """The person this request comes from; :class:`SignInNeeded` when there is none."""
    next_path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET":
        next_path = COOKIE_PATH  # a form is not sent again after signing in
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise SignInNeeded(next_path)
    now = int(services.clock.now().timestamp())
    try:
        value: dict[str, Any] = services.delegation.sealer.open(
            cookie, purpose=_SESSION_PURPOSE, now=now
        )
    except TokenInvalid:
        raise SignInNeeded(next_path) from None
    user = await services.delegation.users.active(str(value.get("user")))
    if user is None or not issued_since_change(user, int(value.get("auth_time", 0))):
        raise SignInNeeded(next_path)
    return Viewer(user=user.name, role=user.role, sid=str(value["sid"]), csrf=str(value["csrf"]))


ViewerDep = Annotated[Viewer, Depends(current_viewer)]


async def checked_form(request: Request, services: ServicesDep, viewer: ViewerDep) -> FormData:
    """The request's form, once its CSRF token and origin are this session's and this
    server's; ``csrf_refused`` otherwise (nothing is read or changed)."""
    origin = request.headers.get("origin")
    if origin is not None and origin != _origin(services.settings.issuer_url):
        raise CsrfRefused("this form was sent from another site")
    form = await request.form()
    sent = request.headers.get(CSRF_HEADER) or str(form.get("csrf") or "")
    if not sent or not hmac.compare_digest(sent, viewer.csrf):
        raise CsrfRefused("this form is stale or was not sent from the console: reload the page")
    return form


CheckedForm = Annotated[FormData, Depends(checked_form)]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@router.post("/console/logout")
async def logout(services: ServicesDep, _form: CheckedForm) -> Response:
    """Sign out of the console and of the provider's sign-in session in this browser."""
    response = RedirectResponse("/console/signed-out", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    response.delete_cookie(PROVIDER_SESSION, path=PROVIDER_COOKIE_PATH)
    return response

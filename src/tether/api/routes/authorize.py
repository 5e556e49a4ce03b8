"""The built-in provider's pages: ``GET /oauth2/authorize`` (RFC 6749 §4.1.1), the sign-in
form and the consent form, and ``GET /oauth2/userinfo`` (OpenID Connect Core §5.3).

The flow itself is :class:`tether.delegation.provider.Provider`; this module is HTTP only:
cookies, forms, pages and their security headers. Pages carry no script at all; the policy
forbids any (``default-src 'none'``), framing is refused, and forms may post only here or, at
the end of the flow, be redirected to the client's own redirect URI.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from tether.api.deps import ServicesDep, bearer_token
from tether.api.services import Services
from tether.console import PAGES
from tether.delegation.federated_login import CALLBACK_PATH
from tether.delegation.flows import BROWSER_COOKIE
from tether.delegation.provider import AuthorizationRequest, Redirect, Session
from tether.errors import Error, InvalidRequest, TemporarilyUnavailable, Unauthenticated

router = APIRouter(tags=["oauth"])

_BROWSER = BROWSER_COOKIE
SESSION_COOKIE = "tether_session"
COOKIE_PATH = "/oauth2"


def _headers(form_target: str | None = None) -> dict[str, str]:
    """Security headers of every page: no script, no framing, nothing cached or referred."""
    targets = "'self'" + (f" {form_target}" if form_target else "")
    return {
        "Content-Security-Policy": (
            "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; "
            f"frame-ancestors 'none'; form-action {targets}"
        ),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


def _origin(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}"


def _page(
    name: str, status: int = 200, *, form_target: str | None = None, **values: Any
) -> Response:
    html = PAGES.get_template(name).render(**values)
    return HTMLResponse(html, status_code=status, headers=_headers(form_target))


def _error_page(message: str, status: int = 400) -> Response:
    return _page("error.html", status, message=message)


def _see(redirect: Redirect) -> Response:
    return RedirectResponse(redirect.url, status_code=303, headers=_headers())


def _set_cookie(response: Response, services: Services, name: str, value: str, age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=services.settings.issuer_url.startswith("https://"),
    )


@router.get("/oauth2/authorize", summary="Sign in and consent (authorization code + PKCE)")
async def authorize(request: Request, services: ServicesDep) -> Response:
    return await _authorize(request, services, dict(request.query_params))


@router.post("/oauth2/authorize", summary="The same, its parameters as a form (OIDC Core §3.1.2.1)")
async def authorize_form(request: Request, services: ServicesDep) -> Response:
    form = await request.form()
    return await _authorize(request, services, {k: str(v) for k, v in form.items()})


async def _authorize(request: Request, services: Services, query: dict[str, str]) -> Response:
    provider = services.delegation.provider
    try:
        begun = await provider.begin(query)
    except InvalidRequest as exc:
        return _error_page(exc.message)
    if isinstance(begun, Redirect):
        return _see(begun)
    session = await provider.session(request.cookies.get(SESSION_COOKIE))
    if begun.prompt == "none" and session is None:
        return _see(_no_session(services, begun))
    if session is None or begun.prompt == "login":
        return await _login_page(request, services, begun)
    if begun.prompt == "none" and begun.agent is not None:
        # OpenID Connect Core §3.1.2.1: no page may be shown, and consent is needed.
        return _see(provider.error_redirect(
            begun.redirect_uri, begun.state, "consent_required", "the user must consent"
        ))  # fmt: skip
    return await _after_sign_in(services, begun, session)


@router.post("/oauth2/authorize/login", summary="The sign-in form")
async def login(request: Request, services: ServicesDep) -> Response:
    provider = services.delegation.provider
    form = await request.form()
    browser = request.cookies.get(_BROWSER, "")
    try:
        pending = provider.open_request(str(form.get("handle", "")), bound_to=browser)
    except InvalidRequest as exc:
        return _error_page(exc.message)
    name = str(form.get("username", ""))[:128]
    try:
        session = await provider.sign_in(
            name=name,
            password=str(form.get("password", "")),
            address=request.client.host if request.client else None,
        )
    except Unauthenticated:
        return await _login_page(request, services, pending, error="Wrong name or password.",
                                 username=name, status=401)  # fmt: skip
    except TemporarilyUnavailable as exc:
        return await _login_page(request, services, pending, error=f"{exc.message}.",
                                 username=name, status=429)  # fmt: skip
    response = await _after_sign_in(services, pending, session)
    _set_cookie(
        response,
        services,
        SESSION_COOKIE,
        session.cookie,
        services.settings.user_session_ttl_seconds,
    )
    return response


@router.get("/oauth2/authorize/federated", summary="Sign in through an external provider")
async def federated(request: Request, services: ServicesDep) -> Response:
    """From the sign-in page: off to the person's provider, the pending request sealed in
    ``state`` (:mod:`tether.delegation.federated_login`)."""
    signing = services.delegation.federated
    if signing is None:
        return _error_page("No external provider is configured.", 404)
    try:
        url = await signing.start(
            provider=request.query_params.get("provider", ""),
            handle=request.query_params.get("handle", ""),
            browser=request.cookies.get(_BROWSER, ""),
        )
    except Error as exc:
        return _error_page(exc.message)
    return RedirectResponse(url, status_code=303, headers=_headers())


@router.get(CALLBACK_PATH, summary="The external provider's answer")
async def federated_callback(request: Request, services: ServicesDep) -> Response:
    signing = services.delegation.federated
    if signing is None:
        return _error_page("No external provider is configured.", 404)
    try:
        pending, session = await signing.finish(
            query=dict(request.query_params), browser=request.cookies.get(_BROWSER, "")
        )
    except InvalidRequest as exc:
        return _error_page(exc.message)
    except Unauthenticated as exc:
        return _error_page(f"Signing in failed: {exc.message}", 401)
    response = await _after_sign_in(services, pending, session)
    ttl = services.settings.user_session_ttl_seconds
    _set_cookie(response, services, SESSION_COOKIE, session.cookie, ttl)
    return response


@router.post("/oauth2/authorize/consent", summary="The consent form")
async def consent(request: Request, services: ServicesDep) -> Response:
    provider = services.delegation.provider
    form = await request.form()
    session = await provider.session(request.cookies.get(SESSION_COOKIE))
    if session is None:
        return _error_page("Your sign-in has ended.", 401)
    try:
        pending = provider.open_request(str(form.get("handle", "")), bound_to=session.sid)
        redirect = await provider.decide(
            pending, session, approve=form.get("decision") == "approve"
        )
    except Error as exc:
        return _error_page(exc.message)
    return _see(redirect)


@router.get("/oauth2/userinfo", summary="OpenID Connect UserInfo for a user's access token")
@router.post("/oauth2/userinfo", summary="The same, by POST (OIDC Core §5.3.1)")
async def userinfo(request: Request, services: ServicesDep) -> JSONResponse:
    claims = await services.delegation.tokens.verify(
        bearer_token(request), audiences=(services.settings.issuer_url,)
    )
    if claims.claims.get("token_use") != "user" or not claims.sub:
        raise Unauthenticated("a user's own access token is required")
    user = await services.delegation.users.active(claims.sub)
    if user is None:
        raise Unauthenticated("the user is disabled or unknown")
    scopes = set(str(claims.claims.get("scope", "")).split())
    body: dict[str, Any] = {"sub": user.name}
    if "profile" in scopes:
        body["preferred_username"] = user.name
        if user.display_name:
            body["name"] = user.display_name
    if "email" in scopes and user.email:
        body["email"] = user.email
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


async def _login_page(
    request: Request,
    services: Services,
    pending: AuthorizationRequest,
    *,
    error: str | None = None,
    username: str = "",
    status: int = 200,
) -> Response:
    browser = request.cookies.get(_BROWSER) or secrets.token_urlsafe(24)
    handle = services.delegation.provider.seal_request(pending, bound_to=browser)
    if request.headers.get("accept", "").startswith("application/json"):
        # A script signing in (``tether login --password-stdin``): the same form, as data.
        answer: Response = JSONResponse(
            {"handle": handle, "action": "/oauth2/authorize/login", "error": error},
            status_code=status,
            headers={"Cache-Control": "no-store"},
        )
        _set_cookie(answer, services, _BROWSER, browser, 3600)
        return answer
    client = await services.delegation.clients.get(pending.client_id)
    response = _page(
        "login.html",
        status,
        form_target=_origin(pending.redirect_uri),
        handle=handle,
        client_name=client.name if client else pending.client_id,
        error=error,
        username=username,
        providers=services.delegation.federated.providers if services.delegation.federated else [],
    )
    _set_cookie(response, services, _BROWSER, browser, 3600)
    return response


async def _after_sign_in(
    services: Services, pending: AuthorizationRequest, session: Session
) -> Response:
    """The consent page when an agent asks; otherwise (sign-in only) straight back with a
    code."""
    provider = services.delegation.provider
    if pending.agent is None:
        return _see(await provider.decide(pending, session, approve=True))
    client = await services.delegation.clients.get(pending.client_id)
    ttl = services.settings.grant_max_ttl_seconds
    expires = services.clock.now().timestamp() + ttl
    return _page(
        "consent.html",
        form_target=_origin(pending.redirect_uri),
        handle=provider.seal_request(pending, bound_to=session.sid),
        agent=pending.agent,
        user=session.user,
        client_name=client.name if client else pending.client_id,
        purpose=pending.purpose,
        purpose_code=pending.purpose_code,
        scopes=sorted(pending.agent_scopes),
        expires=_date(expires),
    )


def _no_session(services: Services, pending: AuthorizationRequest) -> Redirect:
    return services.delegation.provider.error_redirect(
        pending.redirect_uri, pending.state, "login_required", "no sign-in session"
    )


def _date(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")

"""The console: one shared view for security, IT and developers, under ``/console``.

Server-rendered Jinja2 pages (:mod:`tether.console` holds the templates and static files) with
htmx, vendored, for the parts that change without a reload; every form also works as a plain
form. People sign in through Tether's OpenID provider (:mod:`._session`); their console role
decides what they see and may do, and every action goes through the same domain services as the
API, with the same permission checks and audit records. Each part is a module with its own
router; :func:`install` adds them and the console's error pages to the app.
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response

from tether import errors as e
from tether.api.console import (
    _session,
    agents,
    alerts,
    audit,
    credentials,
    decisions,
    me,
    overview,
    policies,
)
from tether.api.console._render import page
from tether.api.console._session import SignInNeeded
from tether.api.errors import error_response, invalid_input, status_for

__all__ = ["install"]

#: The console's parts, each a router.
ROUTERS: tuple[APIRouter, ...] = tuple(
    m.router
    for m in (_session, overview, agents, me, decisions, audit, alerts, policies, credentials)
)


def install(app: FastAPI) -> None:
    """The console's routes, and its errors answered as pages (the API's stay JSON)."""
    for router in ROUTERS:
        app.include_router(router)

    async def on_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, e.Error)
        if not request.url.path.startswith(_session.COOKIE_PATH):
            return error_response(request, exc)
        return _error_page(request, exc)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        error = invalid_input(exc.errors())
        if not request.url.path.startswith(_session.COOKIE_PATH):
            return error_response(request, error)
        return _error_page(request, error)

    app.add_exception_handler(e.Error, on_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(SignInNeeded, _sign_in)


def _error_page(request: Request, exc: e.Error) -> Response:
    status = status_for(exc)
    return page(
        request, "console/error.html", viewer=None, status=status, message=exc.message,
        code=exc.code, signed_out=status == 401,
    )  # fmt: skip


async def _sign_in(request: Request, exc: Exception) -> Response:
    """No session: off to sign in, and back here afterwards. htmx follows ``HX-Redirect``."""
    assert isinstance(exc, SignInNeeded)
    target = f"/console/login?{urlencode({'next': exc.next})}"
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)

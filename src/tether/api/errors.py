"""The one map from Tether error codes to HTTP: status codes and bodies.

Management endpoints answer ``{"error": {"code", "message", "details"}}``; OAuth endpoints
(``/oauth2/...``) answer the RFC 6749 §5.2 body ``{"error", "error_description"}`` with
``Cache-Control: no-store``. A shed request (``overloaded``) is told when to try again
(``Retry-After``). Request validation errors become ``400 invalid_input`` naming the
field and the rule (not FastAPI's 422). Anything unexpected is a 500 without internals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tether import errors as e

__all__ = ["error_response", "install_error_handlers", "invalid_input", "status_for"]

log = structlog.get_logger("tether.api")

_STATUS: tuple[tuple[type[e.Error], int], ...] = (
    (e.BodyTooLarge, 413),
    (e.UnsupportedMediaType, 415),
    (e.InvalidInput, 400),
    (e.NotFound, 404),
    (e.Conflict, 409),
    (e.Unauthenticated, 401),
    (e.TokenInvalid, 401),
    (e.ReplayDetected, 401),
    (e.Forbidden, 403),
    (e.InvalidClient, 401),
    (e.TemporarilyUnavailable, 503),
    (e.OAuthError, 400),
    (e.StoreUnavailable, 503),
    (e.EngineUnavailable, 503),
    (e.AuditUnavailable, 503),
    (e.Overloaded, 503),
)
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def status_for(error: e.Error) -> int:
    for cls, status in _STATUS:
        if isinstance(error, cls):
            return status
    return 500


def _is_oauth(request: Request) -> bool:
    return request.url.path.startswith("/oauth2/")


def error_response(request: Request, error: e.Error) -> JSONResponse:
    if isinstance(error, e.StoreUnavailable):
        # The detail names the database and the driver's words: for the log, not the caller.
        log.warning("store_unavailable", path=request.url.path, detail=error.message)
        error = e.StoreUnavailable("the service is temporarily unavailable; try again shortly")
    status = status_for(error)
    headers: dict[str, str] = {}
    if isinstance(error, e.Overloaded):
        headers["Retry-After"] = str(error.details.get("retry_after", 1))
    if _is_oauth(request):
        code = error.code if isinstance(error, e.OAuthError) else _oauth_code(error)
        return JSONResponse(
            {"error": code, "error_description": error.message},
            status_code=status,
            headers=_NO_STORE | headers,
        )
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="tether"'
    body = {
        "error": {"code": error.code, "message": error.message, "details": _safe(error.details)}
    }
    return JSONResponse(body, status_code=status, headers=headers)


def _oauth_code(error: e.Error) -> str:
    if isinstance(error, e.BodyTooLarge | e.InvalidInput):
        return "invalid_request"
    if isinstance(
        error, e.StoreUnavailable | e.AuditUnavailable | e.EngineUnavailable | e.Overloaded
    ):
        return "temporarily_unavailable"
    return "server_error"


def _safe(details: Mapping[str, object]) -> dict[str, object]:
    return {k: v for k, v in details.items() if isinstance(v, str | int | float | bool | list)}


def invalid_input(problems: Sequence[Any]) -> e.InvalidInput:
    """``invalid_input`` naming the first field that failed validation and the rule it broke
    (from pydantic's ``errors()``), for FastAPI's body checks and the routes that parse
    their own bodies alike."""
    first = problems[0] if problems else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    rule = str(first.get("msg", "invalid value"))
    return e.InvalidInput(f"{where}: {rule}", details={"field": where, "rule": rule})


def install_error_handlers(app: FastAPI) -> None:
    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, e.Error)
        return error_response(request, exc)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(request, invalid_input(exc.errors()))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        codes = {404: e.NotFound, 405: e.InvalidInput, 401: e.Unauthenticated}
        cls = codes.get(exc.status_code, e.InvalidInput)
        response = error_response(request, cls(str(exc.detail)))
        response.status_code = exc.status_code
        return response

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled_error", path=request.url.path, error_type=type(exc).__name__)
        body = {"error": {"code": "internal_error", "message": "internal error", "details": {}}}
        if _is_oauth(request):
            body = {"error": "server_error", "error_description": "internal error"}  # type: ignore[dict-item]
        return JSONResponse(body, status_code=500)

    app.add_exception_handler(e.Error, on_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)

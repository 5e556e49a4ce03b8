"""ASGI middleware: a hard cap on request bodies (413), checked before any parsing; the
correlation id of every request, on its log lines and its response.

:class:`CorrelationId` gives each HTTP request one id, so that its log lines, its audit
records, its trace and the caller's own logs can be joined: the caller's ``X-Correlation-Id``,
else its ``X-Request-Id`` (Envoy sets one), else the trace id of its W3C ``traceparent``, else a
new one (32 hex digits). The headers are the caller's to choose, so a value is cut to
:data:`MAX_CORRELATION_ID` characters and taken only when made of letters, digits and
``._:-`` (else the next source is used). The id is bound to every log line of the request
(structlog's context variables), answered in ``X-Correlation-Id``, and handed to the routes
both as ``request.state.correlation_id`` and in place of the request's ``X-Correlation-Id``
and ``X-Request-Id`` headers, so that every route records the same id whichever it reads.
"""

from __future__ import annotations

import json
import re
import secrets

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["MAX_CORRELATION_ID", "BodyLimit", "CorrelationId", "correlation_id_of"]

#: The longest correlation id taken from a caller (a longer one is cut).
MAX_CORRELATION_ID = 128
CORRELATION_HEADER = b"x-correlation-id"
_REQUEST_ID = b"x-request-id"
_TRACEPARENT = b"traceparent"
_SOURCES = (CORRELATION_HEADER, _REQUEST_ID)
_ID = re.compile(rb"[A-Za-z0-9._:-]+")
_TRACE = re.compile(rb"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")


class BodyLimit:
    """Refuse bodies over ``max_bytes``: by ``Content-Length`` at once, else while streaming."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._declared_too_big(scope):
            await self._refuse(scope, send)
            return
        seen = 0
        started = refused = False

        async def limited_receive() -> Message:
            # Over the limit: answer 413 now and tell the app the client went away. Raising
            # instead would reach the framework's body parser, which turns any error into 400.
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    refused = True
                    if not started:
                        await self._refuse(scope, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 is the answer; whatever the app says after it is dropped
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, limited_receive, guarded_send)

    def _declared_too_big(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    return int(value) > self.max_bytes
                except ValueError:
                    return True
        return False

    async def _refuse(self, scope: Scope, send: Send) -> None:
        message = f"request body is larger than {self.max_bytes} bytes"
        if str(scope.get("path", "")).startswith("/oauth2/"):
            body: dict[str, object] = {"error": "invalid_request", "error_description": message}
        else:
            body = {"error": {"code": "body_too_large", "message": message, "details": {}}}
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def correlation_id_of(headers: list[tuple[bytes, bytes]]) -> str:
    """The request's correlation id (see the module docstring), from its ASGI headers."""
    found: dict[bytes, bytes] = {}
    for name, value in headers:
        if name in _SOURCES or name == _TRACEPARENT:
            found.setdefault(name, value)
    for name in _SOURCES:
        value = found.get(name, b"").strip()[:MAX_CORRELATION_ID]
        if value and _ID.fullmatch(value):
            return value.decode("ascii")
    trace = _TRACE.fullmatch(found.get(_TRACEPARENT, b"").strip())
    if trace and trace.group(1) != b"0" * 32:
        return trace.group(1).decode("ascii")
    return secrets.token_hex(16)


class CorrelationId:
    """Bind each HTTP request's correlation id to its log lines and answer it (see the
    module docstring). Outermost but for tracing: every route, the decision fast path and the
    MCP gateway run inside it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers", ()))
        correlation = correlation_id_of(headers)
        raw = correlation.encode("ascii")
        scope["headers"] = [
            *((n, v) for n, v in headers if n not in _SOURCES),
            (CORRELATION_HEADER, raw),
            (_REQUEST_ID, raw),
        ]
        scope.setdefault("state", {})["correlation_id"] = correlation

        async def answered(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(n, v) for n, v in message.get("headers", ()) if n != CORRELATION_HEADER]
                message = {**message, "headers": [*kept, (CORRELATION_HEADER, raw)]}
            await send(message)

        bound = structlog.contextvars.bind_contextvars(correlation_id=correlation)
        # On an exception the id stays bound: the server-error handler outside this
        # middleware logs the failure with it (the request's task ends with the request).
        await self.app(scope, receive, answered)
        structlog.contextvars.reset_contextvars(**bound)

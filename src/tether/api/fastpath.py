"""The decision endpoints without the framework's per-request machinery.

``POST /access/v1/evaluation`` and ``/evaluations`` are the hot path: every decision of every
agent goes through them. Measured on the AuthZEN bench (16 connections, 2 cores): routing
through every registered route, FastAPI's request handling and the inner middleware cost
about 100-150 µs of the event loop's CPU per decision, about a fifth of the request. This ASGI
middleware answers exactly those two paths by calling the very same endpoint functions
(:data:`tether.api.routes.authzen.HOT_PATHS`), which parse their own bodies and query and take
no injected dependencies, so both ways in behave alike; the FastAPI routes stay registered and
carry the OpenAPI description.

It sits inside the body-size cap (:class:`~tether.api.middleware.BodyLimit`) and inside
Starlette's server-error middleware (an unexpected exception is still a logged 500 without
internals); Tether's own errors are answered with :func:`~tether.api.errors.error_response`,
the one map from error codes to HTTP.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tether.api.errors import error_response
from tether.errors import Error

__all__ = ["DecisionFastPath"]

Endpoint = Callable[[Request], Awaitable[Response]]


class DecisionFastPath:
    def __init__(self, app: ASGIApp, *, routes: Mapping[str, Endpoint], owner: ASGIApp) -> None:
        self.app = app
        self.routes = dict(routes)
        #: The application the endpoints belong to (``request.app`` in them).
        self.owner = owner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = (
            self.routes.get(scope["path"])
            if scope["type"] == "http" and scope["method"] == "POST"
            else None
        )
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        scope["app"] = self.owner
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except Error as exc:
            response = error_response(request, exc)
        except ClientDisconnect:
            # The client went away mid-body, or the body cap answered 413 and cut it off:
            # nothing left to answer, and nothing unexpected to log.
            return
        await response(scope, receive, send)

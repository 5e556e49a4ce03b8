"""The decision endpoints without the framework's per-request machinery.

``POST /access/v1/evaluation`` and ``/evaluations`` are the hot path: every decision of every
agent goes through them. Measured on the AuthZEN bench (16 connections, 2 cores): routing
through every registered route, FastAPI's request handling and the inner middleware cost
about 100-150 µs of the event loop's CPU per decision, about a fifth of the request. This ASGI
middleware answers exactly those two paths by calling the very same endpoint functions
(:data:`tether.api.routes.authzen.HOT_PATHS`), which parse their own bodies and query and take
no injected dependencies, so both ways in behave alike; the FastAPI routes stay registered and
carry the OpenAPI description.

The HTTP enforcement point, ``/v1/ext_authz/<service>/<path>``
(:func:`tether.api.routes.ext_authz.ext_authz`), is answered the same way by prefix, for any
method: a proxy asks about every request its API serves.

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
    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Mapping[str, Endpoint],
        owner: ASGIApp,
        prefixes: Mapping[str, Endpoint] | None = None,
    ) -> None:
        self.app = app
        #: Exact paths, POST only.
        self.routes = dict(routes)
        #: Path prefixes, any method.
        self.prefixes = tuple((prefix, endpoint) for prefix, endpoint in (prefixes or {}).items())
        #: The application the endpoints belong to (``request.app`` in them).
        self.owner = owner

    def _endpoint(self, scope: Scope) -> Endpoint | None:
        if scope["type"] != "http":
            return None
        path: str = scope["path"]
        if scope["method"] == "POST" and path in self.routes:
            return self.routes[path]
        for prefix, endpoint in self.prefixes:
            if path.startswith(prefix):
                return endpoint
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self._endpoint(scope)
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

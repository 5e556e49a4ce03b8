"""``create_app(settings)``: the one ASGI application of the Tether server.

Example::

    from tether.config import Settings
    app = create_app(Settings.from_environ())
    # uvicorn.run(app, host="127.0.0.1", port=8200)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from tether import __version__
from tether._internal.clock import Clock
from tether.api import console
from tether.api.admission import Admission, AdmissionGate
from tether.api.errors import install_error_handlers
from tether.api.fastpath import DecisionFastPath
from tether.api.metrics import Metrics
from tether.api.middleware import BodyLimit, CorrelationId
from tether.api.openapi import install_openapi
from tether.api.routes import (
    agents,
    alerts,
    approvals,
    audit,
    authorize,
    authzen,
    clients,
    discovery,
    engines,
    ext_authz,
    grants,
    health,
    leases,
    mcp,
    metrics,
    oauth,
    policies,
    posture,
    svid,
    tokens,
    users,
)
from tether.api.services import Services
from tether.api.tracing import TraceRequests, install_tracing, tracing_on
from tether.config import Settings
from tether.console import STATIC

__all__ = ["create_app"]


def create_app(
    settings: Settings, *, clock: Clock | None = None, services: Services | None = None
) -> FastAPI:
    """Build the app. It opens its :class:`Services` on startup unless given ones (then the
    caller owns and closes them), and runs their maintenance while it serves."""

    # Checked now, at start: a tracing setting without the otel extra is refused.
    traced = install_tracing(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened = services or await Services.open(settings, clock=clock)
        app.state.services = opened
        try:
            async with _background(app, opened), opened.mcp.app.running():
                yield
        finally:
            if traced is not None:  # the spans still batched, before the process ends
                await asyncio.to_thread(traced.force_flush)
            if services is None:
                await opened.close()

    app = FastAPI(
        title="Tether",
        version=__version__,
        summary="Runtime security control plane for AI agents",
        lifespan=lifespan,
    )
    # The bound on requests in flight (TETHER_MAX_IN_FLIGHT): beyond it, 503 overloaded.
    gate = app.state.admission = AdmissionGate(limit=settings.max_in_flight)
    if services is not None:
        app.state.services = services
        # Counting from now, even when the app is driven without its lifespan.
        app.state.metrics = Metrics(services, admission=gate)
    install_error_handlers(app)
    _install_routes(app)
    install_openapi(app)  # /openapi.json declares the errors of tether.api.errors, not 422
    # The ext_authz route map (TETHER_EXT_AUTHZ_ROUTES), read and checked now: at start.
    app.state.ext_authz_routes = ext_authz.load_route_map(settings)
    # Added first, so inside the body cap: the decision endpoints without the per-request
    # machinery (see tether.api.fastpath).
    app.add_middleware(
        DecisionFastPath,
        routes=authzen.HOT_PATHS,
        prefixes={ext_authz.PREFIX: ext_authz.ext_authz},
        owner=app,
    )
    app.add_middleware(_McpFront, owner=app)  # /mcp/<server>, ahead of route matching too
    # Inside the body cap (a body is read whole, under the cap, before it is counted).
    app.add_middleware(Admission, gate=gate)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(CorrelationId)  # outside the body cap: a 413 carries the id too
    if tracing_on():
        # Outside the correlation id: it hands the request span's context in (tracing).
        app.add_middleware(TraceRequests)
    return app


@asynccontextmanager
async def _background(app: FastAPI, services: Services) -> AsyncIterator[None]:
    """While the app serves: the services' upkeep, and the metrics counting decisions."""
    counted: Metrics | None = getattr(app.state, "metrics", None)
    counting = counted or Metrics(services, admission=app.state.admission)
    app.state.metrics = counting
    tasks = [
        asyncio.create_task(services.run_maintenance(), name="tether-maintenance"),
        asyncio.create_task(counting.run(), name="tether-metrics"),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError):
                await task
        counting.close()


def _install_routes(app: FastAPI) -> None:
    """Every router, and the pages' static files."""
    # The decision endpoints first: they are the hot path, and routes are matched in order.
    routers = (
        authzen,
        ext_authz,
        health,
        metrics,
        discovery,
        oauth,
        authorize,
        agents,
        tokens,
        svid,
        audit,
        policies,
        leases,
        engines,
        users,
        grants,
        clients,
        approvals,
        mcp,
        alerts,
        posture,
    )
    for module in routers:
        app.include_router(module.router)
    console.install(app)
    # The pages' stylesheet and the console's scripts (htmx, vendored, and its own).
    app.mount("/static", StaticFiles(directory=STATIC, check_dir=True), name="static")


class _McpFront:
    """``/mcp/<server>`` straight to the MCP gateway's HTTP front of the services the app
    opened, without matching every route first (a tool call is a hot path)."""

    def __init__(self, app: ASGIApp, *, owner: FastAPI) -> None:
        self.app = app
        self._owner = owner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/mcp/"):
            services: Services = self._owner.state.services
            await services.mcp.app(scope, receive, send)
            return
        await self.app(scope, receive, send)

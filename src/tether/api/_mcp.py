"""Wiring of the MCP gateway: the registry, the upstream pool, the handlers and the HTTP front.

Built once by :class:`tether.api.services.Services`; the front is mounted at ``/mcp`` by
:func:`tether.api.app.create_app`, which runs it while it serves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tether._internal.clock import Clock
from tether.audit.sink import AuditSink
from tether.checkpoint import Checkpoint
from tether.config import Settings
from tether.credentials.engines import Engines
from tether.credentials.leases import Leases
from tether.delegation.approvals import Approvals
from tether.enforcement.mcp._inject import Injector
from tether.enforcement.mcp._upstreams import UpstreamPool
from tether.enforcement.mcp.asgi import GatewayApp
from tether.enforcement.mcp.gateway import Gateway
from tether.enforcement.mcp.models import Upstream
from tether.enforcement.mcp.registry import McpRegistry
from tether.monitor.events import EventStream
from tether.store.interfaces import Store

__all__ = ["McpServices", "mcp_services"]


@dataclass(frozen=True, kw_only=True)
class McpServices:
    registry: McpRegistry
    gateway: Gateway
    pool: UpstreamPool
    app: GatewayApp

    async def forget(self, server: str) -> None:
        """A server changed or went: read its tools again, close its sessions."""
        self.gateway.forget(server)
        await self.pool.forget(server)

    async def close(self) -> None:
        await self.pool.close()


def mcp_services(  # noqa: PLR0917 - the composition root's one call
    settings: Settings,
    clock: Clock,
    store: Store,
    audit: AuditSink,
    events: EventStream,
    checkpoint: Checkpoint,
    approvals: Approvals,
    leases: Leases,
    engines: Engines,
) -> McpServices:
    pool = UpstreamPool(timeout=settings.mcp_upstream_timeout_seconds)

    async def lister(upstream: Upstream) -> Sequence[Mapping[str, Any]] | None:
        # A server that takes a credential is listed first by an agent (with the agent's
        # lease): its tools then wait for approve-tool.
        return None if upstream.credential is not None else await pool.list_tools(upstream, None)

    registry = McpRegistry(store=store, audit=audit, clock=clock, lister=lister, events=events)
    injector = Injector(leases=leases, engines=engines, store=store, clock=clock)
    gateway = Gateway(
        registry=registry, checkpoint=checkpoint, approvals=approvals, pool=pool,
        injector=injector, clock=clock, listing_ttl=settings.mcp_listing_ttl_seconds,
        approval_wait=settings.mcp_approval_wait_seconds,
    )  # fmt: skip
    app = GatewayApp(
        gateway=gateway, registry=registry, checkpoint=checkpoint, issuer=settings.issuer_url,
        allowed_hosts=settings.mcp_allowed_hosts,
    )  # fmt: skip
    return McpServices(registry=registry, gateway=gateway, pool=pool, app=app)

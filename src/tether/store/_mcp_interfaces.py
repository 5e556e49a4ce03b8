"""The store's interface for the MCP gateway's registry (:mod:`tether.enforcement.mcp.models`).

Kept apart from :mod:`tether.store.interfaces`, which re-exports it and makes it part of
:class:`~tether.store.interfaces.Store`.
"""

from __future__ import annotations

from typing import Protocol

from tether.enforcement.mcp.models import ToolPin, Upstream

__all__ = ["McpStore"]


class McpStore(Protocol):
    """The MCP gateway's registry: upstream servers and the pins of their tools.

    Writes of an existing value are compare-and-set on ``version`` (the caller sets the new
    version, as in :meth:`~tether.store.interfaces.ApprovalStore.update_approval`)."""

    async def create_upstream(self, upstream: Upstream) -> None:
        """``McpServerExists`` if the name is taken."""
        ...

    async def get_upstream(self, name: str) -> Upstream | None: ...

    async def list_upstreams(self) -> list[Upstream]:
        """Every upstream, ordered by name."""
        ...

    async def update_upstream(self, upstream: Upstream, *, expected_version: int) -> None:
        """``McpServerNotFound``; ``VersionConflict`` if it moved; nothing written then."""
        ...

    async def delete_upstream(self, name: str) -> None:
        """Remove the upstream and every pin of its tools, at once; ``McpServerNotFound``."""
        ...

    async def list_pins(self, server: str) -> list[ToolPin]:
        """The pins of ``server``'s tools, ordered by tool name (empty for an unknown
        server)."""
        ...

    async def pins_of_tool(self, tool: str) -> list[ToolPin]:
        """The pins of every server's tool named ``tool``, ordered by server (to find a tool
        that shadows another server's)."""
        ...

    async def put_pin(self, pin: ToolPin, *, expected_version: int | None) -> None:
        """``expected_version`` None: create (``Conflict`` if (server, tool) has a pin;
        ``McpServerNotFound`` if no such upstream). Otherwise replace the pin whose version is
        ``expected_version``: ``McpServerNotFound`` if there is none, ``VersionConflict`` if it
        moved. Nothing written on error."""
        ...

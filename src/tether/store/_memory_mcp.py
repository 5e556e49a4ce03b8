"""``MemoryStore``'s MCP gateway registry: the reference for the SQL store's.

A mixin over the store's one ``asyncio.Lock``, which makes each call atomic. Values come back
as the SQL store returns them: datetimes in UTC (a naive one is a ``ValueError`` before
anything is written), the transport and pin state as enums, the command as a tuple, the
allow-list as a ``frozenset`` (or ``None``), the credential as a fresh :class:`Injection` (or
``None``) and a pin's ``definition`` as it reads after a JSON round trip, read-only. Pins are
kept by ``(server, tool)``, the SQL table's primary key; deleting an upstream deletes its pins,
as the table's ``ON DELETE CASCADE`` does.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from types import MappingProxyType

from tether.enforcement.mcp.models import PinState, ToolPin, Transport, Upstream
from tether.errors import Conflict, McpServerExists, McpServerNotFound, VersionConflict
from tether.store._memory_credentials import _json_copy
from tether.store._memory_values import in_utc

__all__ = ["MemoryMcp"]


def _stored_upstream(upstream: Upstream) -> Upstream:
    """``upstream`` as the SQL store reads it back."""
    credential = upstream.credential
    return replace(
        in_utc(upstream),
        transport=Transport(upstream.transport),
        command=tuple(upstream.command),
        credential=None if credential is None else replace(credential),
        allowed_tools=None if upstream.allowed_tools is None else frozenset(upstream.allowed_tools),
    )


def _stored_pin(pin: ToolPin) -> ToolPin:
    """``pin`` as the SQL store reads it back."""
    return replace(
        in_utc(pin),
        state=PinState(pin.state),
        definition=MappingProxyType(_json_copy(pin.definition)),
    )


def _no_server(name: str) -> McpServerNotFound:
    return McpServerNotFound(f"no MCP server named {name!r}")


def _no_pin(pin: ToolPin) -> McpServerNotFound:
    return McpServerNotFound(f"no pin of tool {pin.tool!r} of MCP server {pin.server!r}")


class MemoryMcp:
    """Upstream servers and tool pins in dictionaries, under the store's ``_lock``.

    Cooperative: its ``__init__`` calls the next one's, so the store lists it before
    :class:`~tether.store._memory_credentials.MemoryCredentials` and all are set up.
    """

    _lock: asyncio.Lock

    def __init__(self) -> None:
        super().__init__()
        self._upstreams: dict[str, Upstream] = {}
        self._pins: dict[tuple[str, str], ToolPin] = {}

    async def create_upstream(self, upstream: Upstream) -> None:
        stored = _stored_upstream(upstream)
        async with self._lock:
            if stored.name in self._upstreams:
                raise McpServerExists(f"an MCP server named {stored.name!r} already exists")
            self._upstreams[stored.name] = stored

    async def get_upstream(self, name: str) -> Upstream | None:
        async with self._lock:
            return self._upstreams.get(name)

    async def list_upstreams(self) -> list[Upstream]:
        async with self._lock:
            return [self._upstreams[name] for name in sorted(self._upstreams)]

    async def update_upstream(self, upstream: Upstream, *, expected_version: int) -> None:
        stored = _stored_upstream(upstream)
        async with self._lock:
            current = self._upstreams.get(stored.name)
            if current is None:
                raise _no_server(stored.name)
            if current.version != expected_version:
                raise VersionConflict(
                    f"MCP server {stored.name!r} changed since version {expected_version}"
                )
            self._upstreams[stored.name] = stored

    async def delete_upstream(self, name: str) -> None:
        async with self._lock:
            if self._upstreams.pop(name, None) is None:
                raise _no_server(name)
            for key in [key for key in self._pins if key[0] == name]:
                del self._pins[key]

    async def list_pins(self, server: str) -> list[ToolPin]:
        async with self._lock:
            found = [pin for (owner, _), pin in self._pins.items() if owner == server]
        found.sort(key=lambda pin: pin.tool)
        return found

    async def pins_of_tool(self, tool: str) -> list[ToolPin]:
        async with self._lock:
            found = [pin for (_, name), pin in self._pins.items() if name == tool]
        found.sort(key=lambda pin: pin.server)
        return found

    async def put_pin(self, pin: ToolPin, *, expected_version: int | None) -> None:
        stored = _stored_pin(pin)
        key = (stored.server, stored.tool)
        async with self._lock:
            current = self._pins.get(key)
            if expected_version is None:
                if current is not None:
                    raise Conflict(
                        f"tool {stored.tool!r} of MCP server {stored.server!r} has a pin already"
                    )
                if stored.server not in self._upstreams:
                    raise _no_server(stored.server)
            elif current is None:
                raise _no_pin(stored)
            elif current.version != expected_version:
                raise VersionConflict(
                    f"the pin of tool {stored.tool!r} of MCP server {stored.server!r} "
                    f"changed since version {expected_version}"
                )
            self._pins[key] = stored

"""``SqlStore``'s MCP gateway registry (:class:`~tether.store.interfaces.McpStore`): the rows
of upstream servers and tool pins, their queries and units of work, and the mixin over the
store's unit runner.

A taken name or ``(server, tool)`` is found by the tables' primary keys; a pin of an unknown
server by the foreign key to ``mcp_servers``, whose ``ON DELETE CASCADE`` also deletes a
server's pins with it, in the one statement. An update is one compare-and-set statement on the
version, writing the version it is given; a read follows only to explain a refusal. Each call
is one statement (autocommit on PostgreSQL). Writes send no change note.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from tether.enforcement.mcp.models import Injection, PinState, ToolPin, Transport, Upstream
from tether.errors import Conflict, McpServerExists, McpServerNotFound, VersionConflict
from tether.store.sql._runner import Runner, insert_once, rows
from tether.store.sql.tables import as_utc, mcp_servers, mcp_tool_pins, utc_or_none

__all__ = [
    "McpMethods",
    "create_upstream_unit",
    "delete_upstream_unit",
    "pin_from_row",
    "pin_values",
    "put_pin_unit",
    "update_upstream_unit",
    "upstream_from_row",
    "upstream_values",
]


# -- rows ------------------------------------------------------------------------------------


def _credential_values(credential: Injection | None) -> dict[str, Any] | None:
    if credential is None:
        return None
    return {
        "engine": credential.engine,
        "role": credential.role,
        "header": credential.header,
        "prefix": credential.prefix,
        "env": credential.env,
    }


def _credential_from_json(data: Mapping[str, Any] | None) -> Injection | None:
    if data is None:
        return None
    return Injection(
        engine=data["engine"],
        role=data["role"],
        header=data["header"],
        prefix=data["prefix"],
        env=data["env"],
    )


def upstream_values(upstream: Upstream) -> dict[str, Any]:
    """The row of ``upstream`` (command a JSON list, credential a JSON object or null, the
    allow-list a sorted JSON list or null); ``ValueError`` for a naive datetime, before
    anything is sent."""
    allowed = upstream.allowed_tools
    return {
        "name": upstream.name,
        "transport": str(Transport(upstream.transport)),
        "url": upstream.url,
        "command": list(upstream.command),
        "credential": _credential_values(upstream.credential),
        "allowed_tools": None if allowed is None else sorted(allowed),
        "created_at": as_utc(upstream.created_at),
        "created_by": upstream.created_by,
        "updated_at": as_utc(upstream.updated_at),
        "version": upstream.version,
    }


def upstream_from_row(row: Mapping[Any, Any]) -> Upstream:
    allowed = row["allowed_tools"]
    return Upstream(
        name=row["name"],
        transport=Transport(row["transport"]),
        url=row["url"],
        command=tuple(row["command"]),
        credential=_credential_from_json(row["credential"]),
        allowed_tools=None if allowed is None else frozenset(allowed),
        created_at=row["created_at"],
        created_by=row["created_by"],
        updated_at=row["updated_at"],
        version=row["version"],
    )


def pin_values(pin: ToolPin) -> dict[str, Any]:
    """The row of ``pin`` (its definition a JSON object); ``ValueError`` for a naive datetime,
    before anything is sent."""
    return {
        "server": pin.server,
        "tool": pin.tool,
        "state": str(PinState(pin.state)),
        "digest": pin.digest,
        "seen_digest": pin.seen_digest,
        "definition": dict(pin.definition),
        "first_seen_at": as_utc(pin.first_seen_at),
        "updated_at": as_utc(pin.updated_at),
        "reason": pin.reason,
        "approved_by": pin.approved_by,
        "approved_at": utc_or_none(pin.approved_at),
        "version": pin.version,
    }


def pin_from_row(row: Mapping[Any, Any]) -> ToolPin:
    """The pin of a row read back (its definition a read-only mapping)."""
    return ToolPin(
        server=row["server"],
        tool=row["tool"],
        state=PinState(row["state"]),
        digest=row["digest"],
        seen_digest=row["seen_digest"],
        definition=MappingProxyType(row["definition"]),
        first_seen_at=row["first_seen_at"],
        updated_at=row["updated_at"],
        reason=row["reason"],
        approved_by=row["approved_by"],
        approved_at=row["approved_at"],
        version=row["version"],
    )


# -- queries ---------------------------------------------------------------------------------

_UPSTREAM_BY_NAME = sa.select(mcp_servers).where(mcp_servers.c.name == sa.bindparam("name"))
_UPSTREAMS = sa.select(mcp_servers).order_by(mcp_servers.c.name)
_UPSTREAM_NAME = sa.select(mcp_servers.c.name).where(mcp_servers.c.name == sa.bindparam("name"))
#: Parameters: every column of ``mcp_servers``, then ``old_name`` and ``old_version``.
_SAVE_UPSTREAM = mcp_servers.update().where(
    mcp_servers.c.name == sa.bindparam("old_name"),
    mcp_servers.c.version == sa.bindparam("old_version"),
)
_DELETE_UPSTREAM = mcp_servers.delete().where(mcp_servers.c.name == sa.bindparam("name"))
_PINS_OF_SERVER = (
    sa.select(mcp_tool_pins)
    .where(mcp_tool_pins.c.server == sa.bindparam("server"))
    .order_by(mcp_tool_pins.c.tool)
)
_PINS_OF_TOOL = (
    sa.select(mcp_tool_pins)
    .where(mcp_tool_pins.c.tool == sa.bindparam("tool"))
    .order_by(mcp_tool_pins.c.server)
)
_PIN_KEY = sa.select(mcp_tool_pins.c.server).where(
    mcp_tool_pins.c.server == sa.bindparam("key_server"),
    mcp_tool_pins.c.tool == sa.bindparam("key_tool"),
)
#: Parameters: every column of ``mcp_tool_pins`` but the key, then ``key_server``,
#: ``key_tool`` and ``old_version``.
_SAVE_PIN = mcp_tool_pins.update().where(
    mcp_tool_pins.c.server == sa.bindparam("key_server"),
    mcp_tool_pins.c.tool == sa.bindparam("key_tool"),
    mcp_tool_pins.c.version == sa.bindparam("old_version"),
)


# -- units -----------------------------------------------------------------------------------


def _no_server(name: str) -> McpServerNotFound:
    return McpServerNotFound(f"no MCP server named {name!r}")


def _pin_refused(exc: IntegrityError, pin: ToolPin) -> Conflict | McpServerNotFound:
    """What a refused insert of ``pin`` means: its key is taken (``Conflict``) or its server
    is unknown (the foreign key); anything else is re-raised."""
    sqlstate = getattr(exc.orig, "sqlstate", None)
    text = str(exc.orig)
    if sqlstate == "23505" or "UNIQUE constraint failed" in text:
        return Conflict(f"tool {pin.tool!r} of MCP server {pin.server!r} has a pin already")
    if sqlstate == "23503" or "FOREIGN KEY constraint failed" in text:
        return _no_server(pin.server)
    raise exc


def create_upstream_unit(upstream: Upstream) -> Callable[[Connection], None]:
    """``ValueError`` at once for a naive datetime; the unit raises ``McpServerExists`` for a
    taken name."""
    taken = McpServerExists(f"an MCP server named {upstream.name!r} already exists")
    return insert_once(mcp_servers, upstream_values(upstream), lambda: taken)


def update_upstream_unit(
    upstream: Upstream, *, expected_version: int
) -> Callable[[Connection], None]:
    """One update, writing ``upstream`` (its version included) as given; the read after it
    only explains a refusal."""
    row = {**upstream_values(upstream), "old_name": upstream.name, "old_version": expected_version}

    def unit(conn: Connection) -> None:
        if conn.execute(_SAVE_UPSTREAM, [row]).rowcount == 1:
            return
        if conn.execute(_UPSTREAM_NAME, {"name": upstream.name}).first() is None:
            raise _no_server(upstream.name)
        raise VersionConflict(
            f"MCP server {upstream.name!r} changed since version {expected_version}"
        )

    return unit


def delete_upstream_unit(name: str) -> Callable[[Connection], None]:
    """One delete: the server, and its pins by the foreign key's cascade."""

    def unit(conn: Connection) -> None:
        if conn.execute(_DELETE_UPSTREAM, {"name": name}).rowcount != 1:
            raise _no_server(name)

    return unit


def _create_pin(conn: Connection, pin: ToolPin, values: dict[str, Any]) -> None:
    try:
        conn.execute(mcp_tool_pins.insert(), values)
    except IntegrityError as exc:
        raise _pin_refused(exc, pin) from None


def _replace_pin(
    conn: Connection, pin: ToolPin, values: dict[str, Any], expected_version: int
) -> None:
    key = {"key_server": pin.server, "key_tool": pin.tool}
    row = {
        **{name: value for name, value in values.items() if name not in ("server", "tool")},
        **key,
        "old_version": expected_version,
    }
    if conn.execute(_SAVE_PIN, [row]).rowcount == 1:
        return
    if conn.execute(_PIN_KEY, key).first() is None:
        raise McpServerNotFound(f"no pin of tool {pin.tool!r} of MCP server {pin.server!r}")
    raise VersionConflict(
        f"the pin of tool {pin.tool!r} of MCP server {pin.server!r} "
        f"changed since version {expected_version}"
    )


def put_pin_unit(pin: ToolPin, *, expected_version: int | None) -> Callable[[Connection], None]:
    """``ValueError`` at once for a naive datetime; the unit inserts (``expected_version``
    None) or replaces by compare-and-set, as :meth:`McpStore.put_pin` says."""
    values = pin_values(pin)

    def unit(conn: Connection) -> None:
        if expected_version is None:
            _create_pin(conn, pin, values)
        else:
            _replace_pin(conn, pin, values, expected_version)

    return unit


# -- methods ---------------------------------------------------------------------------------


class McpMethods:
    """The MCP gateway registry part of ``SqlStore``."""

    async def create_upstream(self: Runner, upstream: Upstream) -> None:
        await self._run(create_upstream_unit(upstream), write=True, one_statement=True)

    async def get_upstream(self: Runner, name: str) -> Upstream | None:
        found = await self._run(
            rows(_UPSTREAM_BY_NAME, upstream_from_row, name=name),
            write=False,
            one_statement=True,
        )
        return found[0] if found else None

    async def list_upstreams(self: Runner) -> list[Upstream]:
        return await self._run(rows(_UPSTREAMS, upstream_from_row), write=False, one_statement=True)

    async def update_upstream(self: Runner, upstream: Upstream, *, expected_version: int) -> None:
        unit = update_upstream_unit(upstream, expected_version=expected_version)
        await self._run(unit, write=True, one_statement=True)

    async def delete_upstream(self: Runner, name: str) -> None:
        await self._run(delete_upstream_unit(name), write=True, one_statement=True)

    async def list_pins(self: Runner, server: str) -> list[ToolPin]:
        query = rows(_PINS_OF_SERVER, pin_from_row, server=server)
        return await self._run(query, write=False, one_statement=True)

    async def pins_of_tool(self: Runner, tool: str) -> list[ToolPin]:
        query = rows(_PINS_OF_TOOL, pin_from_row, tool=tool)
        return await self._run(query, write=False, one_statement=True)

    async def put_pin(self: Runner, pin: ToolPin, *, expected_version: int | None) -> None:
        unit = put_pin_unit(pin, expected_version=expected_version)
        await self._run(unit, write=True, one_statement=True)

"""The MCP gateway's registry: which upstream servers agents reach, and which of their tools.

A ``platform-admin`` adds a server (``tether mcp add NAME --url URL | --command "CMD ARGS"``):
the registry lists its tools first — a server that cannot be reached is not registered — then
stores it, and the adding approves (pins) every tool it lists that is clean (no invisible
characters, no name another server's approved tool has); the others wait for
``approve-tool``. From then on every fresh listing the gateway takes goes through
:meth:`McpRegistry.review`, which holds back what changed (:mod:`.pinning`), records it and
raises an alert event.

The registry reaches the server only through the ``lister`` it is given (the gateway's
upstream pool), so this module has no MCP, HTTP or SQL in it.

Example::

    >>> validate_command(["python3", "-m", "server"])
    ('python3', '-m', 'server')
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from tether._internal.clock import Clock
from tether._internal.readthrough import ReadThrough
from tether.audit.records import AuditRecord
from tether.audit.sink import AuditSink, audited
from tether.enforcement.mcp import pinning
from tether.enforcement.mcp.models import Injection, ToolPin, Transport, Upstream
from tether.errors import (
    Conflict,
    InvalidInput,
    McpServerExists,
    McpServerNotFound,
    VersionConflict,
)
from tether.identity.access import Actor, Permission, require
from tether.monitor.events import Event, EventStream
from tether.store.interfaces import McpStore

__all__ = ["Lister", "McpRegistry", "validate_command", "validate_url"]

#: Reads a server's tool definitions (as the server gives them, ``_meta`` included); None
#: when it cannot be listed yet (it takes a credential only an agent's lease gives).
Lister = Callable[[Upstream], Awaitable[Sequence[Mapping[str, Any]] | None]]

MAX_ARGS = 64
MAX_ARG_CHARS = 4096
MAX_URL_CHARS = 2048
MAX_ALLOWED_TOOLS = 1024
MAX_TOOL_NAME = 128
#: How records name the gateway when it holds a tool back, or lets one through again.
GATEWAY = "system:mcp-gateway"
#: Why the gateway approves a quarantined tool again (its record's ``reason``).
RESTORED = "definition back to the one approved"
_ENV = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")
_HEADER = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")
#: Headers the gateway sets itself (or that would change what the request is).
_RESERVED_HEADERS = frozenset(
    {"host", "content-length", "content-type", "transfer-encoding", "connection",
     "mcp-session-id", "mcp-protocol-version", "traceparent", "tracestate", "accept"}
)  # fmt: skip


def validate_url(url: object) -> str:
    """An ``http``/``https`` URL with a host and no credentials in it."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        raise InvalidInput("url must be an http or https URL", details={"field": "url"})
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise InvalidInput("url must be an http or https URL", details={"field": "url"})
    if parts.username or parts.password:
        raise InvalidInput(
            "url may not hold credentials: name a credential to inject instead",
            details={"field": "url"},
        )
    return url


def validate_command(command: object) -> tuple[str, ...]:
    """A program and its arguments: 1 to 64 non-empty strings without NUL."""
    if isinstance(command, str) or not isinstance(command, list | tuple) or not command:
        raise InvalidInput("command is a list: the program, then its arguments")
    if len(command) > MAX_ARGS:
        raise InvalidInput(f"command has at most {MAX_ARGS} arguments")
    for arg in command:
        if not isinstance(arg, str) or "\x00" in arg or len(arg) > MAX_ARG_CHARS:
            raise InvalidInput("each argument of command is a string without NUL")
    if not command[0]:
        raise InvalidInput("command names a program")
    return tuple(command)


def _validate_injection(credential: Injection, transport: Transport) -> Injection:
    Upstream.validate_name(credential.engine)
    Upstream.validate_name(credential.role)
    if transport is Transport.STDIO:
        if credential.env is None or not _ENV.match(credential.env):
            raise InvalidInput("a stdio server gets its credential in an environment variable "
                               "(env: upper-case letters, digits and '_')")  # fmt: skip
        return replace(credential, header=None)
    header = credential.header
    if header is None or not _HEADER.match(header) or header.lower() in _RESERVED_HEADERS:
        raise InvalidInput("an HTTP server gets its credential in a header (header: a token, "
                           "not one the gateway sets itself)")  # fmt: skip
    if len(credential.prefix) > 64 or any(c in credential.prefix for c in "\r\n\x00"):
        raise InvalidInput("prefix is at most 64 characters on one line")
    return replace(credential, env=None)


def _validate_tools(tools: Iterable[str] | None) -> frozenset[str] | None:
    if tools is None:
        return None
    names = frozenset(tools)
    if len(names) > MAX_ALLOWED_TOOLS:
        raise InvalidInput(f"allowed_tools holds at most {MAX_ALLOWED_TOOLS} names")
    if any(not isinstance(n, str) or not n or len(n) > MAX_TOOL_NAME for n in names):
        raise InvalidInput(f"each allowed tool is a name of 1 to {MAX_TOOL_NAME} characters")
    return names


class McpRegistry:
    def __init__(
        self,
        *,
        store: McpStore,
        audit: AuditSink,
        clock: Clock,
        lister: Lister,
        events: EventStream | None = None,
    ) -> None:
        self._store = store
        self._audit = audit
        self._clock = clock
        self._lister = lister
        self._events = events
        #: Servers as the gateway reads them on every request: from memory, at most a second old,
        #: forgotten at once when this replica adds or removes one.
        self._upstreams: ReadThrough[str, Upstream] = ReadThrough(store.get_upstream, ttl=1.0,
                                                                   max_entries=10_000)  # fmt: skip

    # -- servers -------------------------------------------------------------------------

    async def add(
        self,
        *,
        actor: Actor,
        name: str,
        url: str | None = None,
        command: Sequence[str] | None = None,
        credential: Injection | None = None,
        allowed_tools: Iterable[str] | None = None,
    ) -> tuple[Upstream, list[ToolPin]]:
        """Register a server reached at ``url`` (streamable HTTP) or started as ``command``
        (stdio), after listing its tools; the clean ones are approved by ``actor``."""
        require(actor, Permission.MCP_MANAGE)
        upstream = self._upstream(actor, name, url, command, credential, allowed_tools)
        if await self._store.get_upstream(upstream.name) is not None:
            raise McpServerExists(f"an MCP server is named {upstream.name!r}")
        listed = await self._lister(upstream)
        for definition in listed or ():  # a listing that cannot be pinned registers nothing
            pinning.definition_digest(definition)
        record = AuditRecord.new(
            type="mcp.server_added", actor=actor.label, subject=f"mcp:{upstream.name}",
            time=upstream.created_at, details=_facts(upstream),
        )  # fmt: skip
        await audited(self._audit, record, lambda: self._store.create_upstream(upstream),
                      clock=self._clock)  # fmt: skip
        self._upstreams.invalidate(upstream.name)
        if listed is not None:
            await self.review(upstream, listed, approve_clean=actor.label)
        return upstream, await self._store.list_pins(upstream.name)

    def _upstream(  # noqa: PLR0917 - private, one caller
        self,
        actor: Actor,
        name: str,
        url: str | None,
        command: Sequence[str] | None,
        credential: Injection | None,
        allowed_tools: Iterable[str] | None,
    ) -> Upstream:
        if (url is None) == (command is None):
            raise InvalidInput("give exactly one of url (streamable HTTP) and command (stdio)")
        transport = Transport.HTTP if url is not None else Transport.STDIO
        now = self._clock.now()
        return Upstream(
            name=Upstream.validate_name(name), transport=transport,
            url=validate_url(url) if url is not None else None,
            command=validate_command(command) if command is not None else (),
            credential=_validate_injection(credential, transport) if credential else None,
            allowed_tools=_validate_tools(allowed_tools), created_at=now,
            created_by=actor.label, updated_at=now,
        )  # fmt: skip

    async def remove(self, name: str, *, actor: Actor) -> None:
        require(actor, Permission.MCP_MANAGE)
        upstream = await self._get(name)
        record = AuditRecord.new(
            type="mcp.server_removed", actor=actor.label, subject=f"mcp:{name}",
            time=self._clock.now(), details=_facts(upstream),
        )  # fmt: skip
        await audited(self._audit, record, lambda: self._store.delete_upstream(name),
                      clock=self._clock)  # fmt: skip
        self._upstreams.invalidate(name)

    async def get(self, name: str, *, actor: Actor) -> tuple[Upstream, list[ToolPin]]:
        require(actor, Permission.MCP_READ)
        return await self._get(name), await self._store.list_pins(name)

    async def servers(self, *, actor: Actor) -> list[Upstream]:
        require(actor, Permission.MCP_READ)
        return await self._store.list_upstreams()

    async def upstream(self, name: str) -> Upstream | None:
        """The server agents reach at ``/mcp/<name>`` (the gateway's read; no actor): at most a
        second old, or fresh after a change on this replica."""
        return await self._upstreams.get(name)

    async def _get(self, name: str) -> Upstream:
        found = await self._store.get_upstream(name)
        if found is None:
            raise McpServerNotFound(f"no MCP server {name!r}")
        return found

    # -- tools ---------------------------------------------------------------------------

    async def approve_tool(
        self, name: str, tool: str, *, actor: Actor, digest: str | None = None
    ) -> ToolPin:
        """Pin ``tool``'s definition as last seen. ``digest``, if given, must be that
        definition's (what the reviewer looked at), or nothing is approved."""
        require(actor, Permission.MCP_MANAGE)
        pin = next((p for p in await self._store.list_pins(name) if p.tool == tool), None)
        if pin is None:
            await self._get(name)
            raise McpServerNotFound(f"MCP server {name!r} has shown no tool {tool!r}")
        if digest is not None and digest != pin.seen_digest:
            raise VersionConflict(
                "the tool's definition changed since you looked: review it again",
                details={"seen_digest": pin.seen_digest},
            )
        now = self._clock.now()
        pinned = replace(pinning.approved(pin, by=actor.label, now=now), version=pin.version + 1)
        record = AuditRecord.new(
            type="mcp.tool_approved", actor=actor.label, subject=f"mcp:{name}/{tool}",
            time=now, details={"server": name, "tool": tool, "digest": pin.seen_digest,
                               "previous_digest": pin.digest},
        )  # fmt: skip
        await audited(self._audit, record,
                      lambda: self._store.put_pin(pinned, expected_version=pin.version),
                      clock=self._clock)  # fmt: skip
        return pinned

    async def review(
        self,
        upstream: Upstream,
        listed: Sequence[Mapping[str, Any]],
        *,
        approve_clean: str | None = None,
    ) -> tuple[Mapping[str, Any], ...]:
        """The definitions agents may see of a fresh listing: approved and unchanged (and on
        the allow-list); the rest is held back, recorded and alerted (once: by the listing
        whose write of the pin won, when two race)."""
        offered = [d for d in listed if upstream.offers(str(d.get("name", "")))]
        pins = {p.tool: p for p in await self._store.list_pins(upstream.name)}
        shadowed = await self._shadowed(upstream.name, offered, pins)
        result = pinning.review(
            server=upstream.name, listed=offered, pins=pins, shadowed=shadowed,
            now=self._clock.now(), approve_clean=approve_clean,
        )  # fmt: skip
        written = await self._write(result.writes, approve_clean)
        for alert in result.alerts:
            if written.get(alert.tool, True):
                await self._held(alert)
        return tuple(d for d in result.usable if written.get(str(d.get("name", "")), True))

    async def _shadowed(
        self, server: str, listed: Sequence[Mapping[str, Any]], pins: Mapping[str, ToolPin]
    ) -> dict[str, list[str]]:
        """For each listed tool not yet pinned here, the other servers whose approved tool
        has its name."""
        found: dict[str, list[str]] = {}
        for definition in listed:
            name = str(definition.get("name", ""))
            if name in pins:
                continue
            # Approved once (approved, or quarantined since): the name is that server's.
            others = [p.server for p in await self._store.pins_of_tool(name)
                      if p.server != server and p.digest is not None]  # fmt: skip
            if others:
                found[name] = others
        return found

    async def _write(
        self, writes: Sequence[pinning.PinWrite], approver: str | None
    ) -> dict[str, bool]:
        """Store each pin; a pin another listing created or moved meanwhile is left as that
        one wrote it (and its tool not offered this time). A write that makes a tool usable
        (approved by the adding, or back to its approved definition) is recorded before it is
        made: no record, no change."""
        written: dict[str, bool] = {}
        for write in writes:
            put = partial(self._store.put_pin, write.pin, expected_version=write.expected_version)
            record = _approval(write, approver)
            try:
                if record is None:
                    await put()
                else:
                    await audited(self._audit, record, put, clock=self._clock)
            except Conflict:  # VersionConflict, or a pin created by the other listing
                written[write.pin.tool] = False
            else:
                written[write.pin.tool] = True
        return written

    async def _held(self, alert: pinning.Alert) -> None:
        facts: dict[str, object] = {
            "server": alert.server, "tool": alert.tool, "reason": alert.reason,
            "approved_digest": alert.approved_digest, "seen_digest": alert.seen_digest,
            "invisible": list(alert.invisible),
        }  # fmt: skip
        now = self._clock.now()
        record = AuditRecord.new(
            type="mcp.tool_held", actor=GATEWAY,
            subject=f"mcp:{alert.server}/{alert.tool}", time=now, details=facts,
        )  # fmt: skip
        try:
            await self._audit.append(record)
        finally:
            if self._events is not None:
                # Changed since it was approved (a rug pull), or never approved yet.
                kind = "tool_definition_changed" if alert.approved_digest else "tool_held"
                data = MappingProxyType({"kind": kind, **facts})
                self._events.publish(Event(type="alert", time=now.timestamp(), data=data))


def _approval(write: pinning.PinWrite, approver: str | None) -> AuditRecord | None:
    """The record of a pin write that makes its tool usable: a new tool approved by whoever
    adds the server, or a quarantined one listed again exactly as approved (the gateway lets
    it through again, on the approval it had)."""
    pin = write.pin
    if not pin.usable:
        return None
    restored = write.expected_version is not None
    details: dict[str, object] = {
        "server": pin.server, "tool": pin.tool, "digest": pin.digest,
        "previous_digest": pin.digest if restored else None,
    }  # fmt: skip
    if restored:
        details |= {"reason": RESTORED, "approved_by": pin.approved_by}
    return AuditRecord.new(
        type="mcp.tool_approved", actor=GATEWAY if restored or approver is None else approver,
        subject=f"mcp:{pin.server}/{pin.tool}", time=pin.updated_at, details=details,
    )  # fmt: skip


def _facts(upstream: Upstream) -> dict[str, object]:
    credential = upstream.credential
    return {
        "transport": str(upstream.transport),
        "url": upstream.url,
        "command": list(upstream.command) or None,
        "credential": None if credential is None else
        {"engine": credential.engine, "role": credential.role, "header": credential.header,
         "env": credential.env},
        "allowed_tools": None if upstream.allowed_tools is None else sorted(upstream.allowed_tools),
    }  # fmt: skip

"""Tool pinning: the rug-pull defence of the MCP gateway, as pure rules over values.

An MCP server describes its tools to the agent's model in natural language; a server that
changes a tool's description after it was approved can steer the model ("tool poisoning", a
"rug pull"), and a second server offering a tool of the same name can take calls meant for the
first ("tool shadowing"). The gateway therefore pins each tool: the SHA-256 of its definition
— every field the server gives except ``_meta`` (name, title, description, input and output
schema, annotations), in canonical JSON (RFC 8785), so one changed character, a schema default
or an invisible character is a different digest — as a ``platform-admin`` approved it.

:func:`review` compares a fresh listing with the pins and says what the gateway may offer and
what to write: a tool seen for the first time is ``pending`` (approved at once only when the
server is being registered and the tool is clean); an approved tool whose definition changed is
``quarantined`` before the next call is forwarded; a tool whose definition holds invisible or
bidirectional-control characters, or whose name another server's approved tool already has, is
never approved without a person looking. Every quarantine is an alert. A quarantined tool
whose server lists it again exactly as approved (the same digest) is usable again: what agents
see is still only what a person approved. A name the server lists twice is reviewed (and
offered) in its first definition only.

Example::

    >>> definition_digest({"name": "add", "description": "Add two integers."})[:15]
    'sha256:10b09fd7'
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any

from tether._internal.canonical import canonical_json
from tether.enforcement.mcp.models import PinState, ToolPin

__all__ = [
    "Alert",
    "PinWrite",
    "Review",
    "approved",
    "definition_digest",
    "invisible_characters",
    "review",
]

#: Reasons a tool waits for a person (stable strings: records and alerts carry them).
NEW = "new tool"
CHANGED = "definition changed since it was approved"
INVISIBLE = "definition holds invisible or bidirectional-control characters"
SHADOWS = "another server already offers a tool of this name"

#: Unicode categories a reader cannot see: format (zero-width, bidi controls, tags),
#: private use, unassigned, surrogates, and control characters other than line breaks and tabs.
_HIDDEN = frozenset({"Cf", "Co", "Cn", "Cs"})
_SHOWN_CONTROLS = frozenset("\n\r\t")
#: Default-ignorable code points (Unicode's ``Default_Ignorable_Code_Point``) outside those
#: categories: combining grapheme joiner, Hangul fillers, Khmer inherent vowels, Mongolian
#: variation selectors, and the variation selectors, which can carry a hidden text one byte
#: per selector ("emoji smuggling").
_IGNORABLE = (
    (0x034F, 0x034F), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180F), (0x3164, 0x3164),
    (0xFE00, 0xFE0F), (0xFFA0, 0xFFA0), (0xE0100, 0xE01EF),
)  # fmt: skip
#: The text and emoji presentation selectors ("⚠️"): shown when they follow a visible
#: character, hidden anywhere else (first, after a space, or after another ignorable one).
_PRESENTATION = frozenset("\ufe0e\ufe0f")


def definition_digest(definition: Mapping[str, Any]) -> str:
    """``sha256:`` + hex of the canonical definition without ``_meta``."""
    pinned = {key: value for key, value in definition.items() if key != "_meta"}
    return "sha256:" + hashlib.sha256(canonical_json(pinned)).hexdigest()


def invisible_characters(value: Any) -> list[str]:
    """The code points (``U+200B``…) in any string of ``value`` (keys too) that a person
    reviewing the definition would not see, at most 16."""
    found: list[str] = []
    for text in _strings(value):
        bare = True  # nothing visible just before: a presentation selector here shows nothing
        for char in text:
            hidden = _hidden(char, bare=bare)
            bare = hidden or _ignorable(char) or char.isspace()
            if hidden and f"U+{ord(char):04X}" not in found:
                found.append(f"U+{ord(char):04X}")
                if len(found) == 16:
                    return found
    return found


def _hidden(char: str, *, bare: bool) -> bool:
    category = unicodedata.category(char)
    if category == "Cc":
        return char not in _SHOWN_CONTROLS
    if char in _PRESENTATION:
        return bare
    return category in _HIDDEN or _ignorable(char)


def _ignorable(char: str) -> bool:
    code = ord(char)
    return code >= 0x034F and any(low <= code <= high for low, high in _IGNORABLE)


def _strings(value: Any) -> Iterable[str]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, Mapping):
            for key, inner in item.items():
                stack.extend((key, inner))
        elif isinstance(item, list | tuple):
            stack.extend(item)


@dataclass(frozen=True, kw_only=True)
class PinWrite:
    """A pin to store: created when ``expected_version`` is None, else compare-and-set."""

    pin: ToolPin
    expected_version: int | None


@dataclass(frozen=True, kw_only=True)
class Alert:
    """A tool held back from agents: which, why, and (for a changed one) both digests."""

    server: str
    tool: str
    reason: str
    approved_digest: str | None
    seen_digest: str
    invisible: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Review:
    #: The definitions the gateway may offer (approved, unchanged), in the server's order.
    usable: tuple[Mapping[str, Any], ...]
    writes: tuple[PinWrite, ...]
    alerts: tuple[Alert, ...]


def review(
    *,
    server: str,
    listed: Sequence[Mapping[str, Any]],
    pins: Mapping[str, ToolPin],
    shadowed: Mapping[str, Sequence[str]],
    now: datetime,
    approve_clean: str | None = None,
) -> Review:
    """Compare ``listed`` (the server's tool definitions) with ``pins`` (by tool name).

    ``shadowed`` maps a listed name to the other servers whose *approved* tool has that name.
    ``approve_clean``: the ``platform-admin`` registering the server, whose adding it approves
    every new tool that has no invisible characters and shadows nothing."""
    usable: list[Mapping[str, Any]] = []
    writes: list[PinWrite] = []
    alerts: list[Alert] = []
    names: set[str] = set()
    for definition in listed:
        name = str(definition.get("name", ""))
        if name in names:
            continue  # listed twice: the first definition is the one reviewed and offered
        names.add(name)
        seen = definition_digest(definition)
        pin = pins.get(name)
        if pin is not None and pin.digest == seen:  # as approved (maybe back to it)
            usable.append(definition)
            if not pin.usable:
                again = _restored(pin, seen, definition, now)
                writes.append(PinWrite(pin=again, expected_version=pin.version))
            continue
        write, alert = _held(server, name, definition, seen, pin, shadowed.get(name, ()), now,
                             approve_clean)  # fmt: skip
        if write is not None:
            writes.append(write)
        if alert is not None:
            alerts.append(alert)
        if write is not None and write.pin.usable:
            usable.append(definition)
    return Review(usable=tuple(usable), writes=tuple(writes), alerts=tuple(alerts))


def _held(  # noqa: PLR0917 - private, one caller
    server: str,
    name: str,
    definition: Mapping[str, Any],
    seen: str,
    pin: ToolPin | None,
    shadows: Sequence[str],
    now: datetime,
    approve_clean: str | None,
) -> tuple[PinWrite | None, Alert | None]:
    """The write and alert for a tool that is not approved as listed."""
    invisible = tuple(invisible_characters(definition))
    reason = INVISIBLE if invisible else SHADOWS if shadows else None
    if pin is None:
        fresh = _first_sight(server, name, definition, seen, now)
        if reason is None and approve_clean is not None:
            clean = approved(fresh, by=approve_clean, now=now)
            return PinWrite(pin=clean, expected_version=None), None
        held = replace(fresh, reason=reason or NEW)
        # A person must look at every tool that waits: a new one is told of too.
        alert = Alert(server=server, tool=name, reason=reason or NEW, approved_digest=None,
                      seen_digest=seen, invisible=invisible)  # fmt: skip
        return PinWrite(pin=held, expected_version=None), alert
    if pin.seen_digest == seen and pin.state is not PinState.APPROVED:
        return None, None  # already held for this very definition: alerted when first seen
    state = PinState.QUARANTINED if pin.digest is not None else PinState.PENDING
    why = reason or (CHANGED if pin.digest is not None else NEW)
    changed = replace(_seen(pin, seen, definition, now), state=state, reason=why)
    alert = Alert(server=server, tool=name, reason=why, approved_digest=pin.digest,
                  seen_digest=seen, invisible=invisible)  # fmt: skip
    return PinWrite(pin=changed, expected_version=pin.version), alert


def _first_sight(
    server: str, name: str, definition: Mapping[str, Any], seen: str, now: datetime
) -> ToolPin:
    return ToolPin(
        server=server, tool=name, state=PinState.PENDING, digest=None, seen_digest=seen,
        definition=MappingProxyType(dict(definition)), first_seen_at=now, updated_at=now,
    )  # fmt: skip


def _seen(pin: ToolPin, seen: str, definition: Mapping[str, Any], now: datetime) -> ToolPin:
    return replace(
        pin, seen_digest=seen, definition=MappingProxyType(dict(definition)), updated_at=now,
        version=pin.version + 1,
    )  # fmt: skip


def _restored(pin: ToolPin, seen: str, definition: Mapping[str, Any], now: datetime) -> ToolPin:
    """``pin`` listed again as it was approved: approved again, by the same approval."""
    return replace(_seen(pin, seen, definition, now), state=PinState.APPROVED, reason=None)


def approved(pin: ToolPin, *, by: str, now: datetime) -> ToolPin:
    """``pin`` approved as last seen: its definition is now the pinned one (same version: the
    caller sets the version it stores)."""
    return replace(
        pin, state=PinState.APPROVED, digest=pin.seen_digest, reason=None, approved_by=by,
        approved_at=now, updated_at=now,
    )  # fmt: skip

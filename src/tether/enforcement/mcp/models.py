"""The MCP gateway's values: registered upstream servers and the pins of their tools.

An :class:`Upstream` is an MCP server a ``platform-admin`` put behind the gateway, served to
agents at ``/mcp/<name>``: reached over streamable HTTP (``url``) or started as a child process
speaking stdio (``command``). It may name a :class:`Injection`: the credential the gateway
sends upstream on the agent's behalf (a vault secret, or a token of a downstream-token engine),
taken under a lease of the calling agent, so the agent never sees it and the agent's own token
never leaves Tether. ``allowed_tools``, when set, is the only tools the gateway ever shows or
forwards, whatever the policies say.

A :class:`ToolPin` is the rug-pull defence: the SHA-256 of a tool's definition (its name,
description, input schema and the rest of what the server says of it, canonical JSON) as a
``platform-admin`` approved it. Its states::

    pending ──approve──▶ approved ──definition changed──▶ quarantined ──approve──▶ approved
                                    ▲                           │
                                    └── the server gives back ──┘
                                        the approved bytes exactly

A tool is forwarded only while ``approved`` and its definition still hashes to the pin; a
pending or quarantined tool is hidden from listings and refused by name.

Example::

    >>> Upstream.validate_name("crm")
    'crm'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from tether.errors import InvalidInput

__all__ = [
    "NAME_RULE",
    "Injection",
    "PinState",
    "ToolPin",
    "Transport",
    "Upstream",
]

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,61}[a-z0-9]$")
NAME_RULE = "2 to 63 characters: lowercase letters, digits and '-', starting with a letter"


class Transport(StrEnum):
    HTTP = "http"
    STDIO = "stdio"


@dataclass(frozen=True, kw_only=True)
class Injection:
    """The credential sent upstream: the value a lease of ``engine``/``role`` gives (a vault
    secret handed out by injection, or a downstream token), as HTTP header ``header`` with
    ``prefix`` before it (``Authorization: Bearer …``), or — for a stdio server — in the
    environment variable ``env`` of its process."""

    engine: str
    role: str
    header: str | None = "Authorization"
    prefix: str = "Bearer "
    env: str | None = None


@dataclass(frozen=True, kw_only=True)
class Upstream:
    name: str
    transport: Transport
    #: The streamable-HTTP endpoint (``transport`` http).
    url: str | None = None
    #: The command line, program first (``transport`` stdio).
    command: tuple[str, ...] = ()
    credential: Injection | None = None
    #: The only tools ever shown or forwarded; ``None``: every tool (policies still decide).
    allowed_tools: frozenset[str] | None = None
    created_at: datetime
    created_by: str
    updated_at: datetime
    version: int = 1

    @staticmethod
    def validate_name(name: object) -> str:
        if not isinstance(name, str) or not _NAME.match(name) or "--" in name:
            raise InvalidInput(f"invalid MCP server name {name!r}", details={"rule": NAME_RULE})
        return name

    def offers(self, tool: str) -> bool:
        """Whether the allow-list (if any) lets ``tool`` through."""
        return self.allowed_tools is None or tool in self.allowed_tools


class PinState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    QUARANTINED = "quarantined"


@dataclass(frozen=True, kw_only=True)
class ToolPin:
    """What the gateway knows of one tool of one server.

    ``digest`` is the approved definition's hash (``None`` until first approved);
    ``seen_digest`` and ``definition`` are the definition the server gave last, kept so a
    reviewer sees what changed before approving it. ``reason`` says why a tool waits (new, its
    definition changed, it has invisible characters, it shadows another server's tool)."""

    server: str
    tool: str
    state: PinState
    digest: str | None
    seen_digest: str
    definition: Mapping[str, Any]
    first_seen_at: datetime
    updated_at: datetime
    reason: str | None = None
    approved_by: str | None = None
    approved_at: datetime | None = None
    version: int = 1

    @property
    def usable(self) -> bool:
        """Approved, and the server still defines the tool as it was approved."""
        return self.state is PinState.APPROVED and self.digest == self.seen_digest

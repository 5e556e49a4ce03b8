"""The ``AuditSink`` interface every state change and decision goes through.

``await sink.append(record)`` returns an :class:`AuditReceipt` once the record is durable, and
raises if it cannot be made durable, so callers fail closed (no audit, no change). The
server's sink is this replica's tamper-evident log, :class:`tether.audit.log.AuditLog`.
"""

from __future__ import annotations

from typing import Protocol

from tether.audit.records import AuditReceipt, AuditRecord

__all__ = ["AuditSink"]


class AuditSink(Protocol):
    async def append(self, record: AuditRecord) -> AuditReceipt:
        """Make ``record`` durable, then return its receipt; raise if it cannot."""
        ...

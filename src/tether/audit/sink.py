"""The ``AuditSink`` interface every state change and decision goes through.

``await sink.append(record)`` returns an :class:`AuditReceipt` once the record is durable, and
raises if it cannot be made durable, so callers fail closed (no audit, no change). The
server's sink is this replica's tamper-evident log, :class:`tether.audit.log.AuditLog`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from tether._internal.clock import Clock
from tether.audit.records import AuditReceipt, AuditRecord
from tether.errors import Error

__all__ = ["AuditSink", "audited"]

_T = TypeVar("_T")


class AuditSink(Protocol):
    async def append(self, record: AuditRecord) -> AuditReceipt:
        """Make ``record`` durable, then return its receipt; raise if it cannot."""
        ...


async def audited(
    sink: AuditSink, record: AuditRecord, apply: Callable[[], Awaitable[_T]], *, clock: Clock
) -> _T:
    """Record the change, then apply it (no record, no change); if applying fails, a record of
    the same type with outcome ``failure`` and the error's code follows, and the error is
    raised."""
    await sink.append(record)
    try:
        return await apply()
    except Error as exc:
        await sink.append(record.failure(exc.code, time=clock.now()))
        raise

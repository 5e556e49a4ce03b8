"""The ``AuditSink`` interface every state change and decision goes through.

Its shape is final: ``await sink.append(record)`` returns an :class:`AuditReceipt` once the
record is durable, and raises if it cannot be made durable, so callers fail closed (no audit,
no change). The tamper-evident log (hash chain, Merkle checkpoints) replaces the store-backed
implementation below without changing callers.
"""

from __future__ import annotations

from typing import Protocol

from tether.audit.records import AuditReceipt, AuditRecord

__all__ = ["AuditAppendStore", "AuditSink", "StoreAuditSink"]


class AuditSink(Protocol):
    async def append(self, record: AuditRecord) -> AuditReceipt:
        """Make ``record`` durable, then return its receipt; raise if it cannot."""
        ...


class AuditAppendStore(Protocol):
    async def append_audit(self, record: AuditRecord) -> int:
        """Durably append ``record``; return its sequence number."""
        ...


class StoreAuditSink:
    """A plain durable append into the store's audit table."""

    def __init__(self, store: AuditAppendStore) -> None:
        self._store = store

    async def append(self, record: AuditRecord) -> AuditReceipt:
        sequence = await self._store.append_audit(record)
        return AuditReceipt(record_id=record.id, sequence=sequence)

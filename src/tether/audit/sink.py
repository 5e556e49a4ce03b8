"""The ``AuditSink`` interface every state change and decision goes through.

Its shape is final: ``await sink.append(record)`` returns an :class:`AuditReceipt` once the
record is durable, and raises if it cannot be made durable, so callers fail closed (no audit,
no change). The tamper-evident log (hash chain, Merkle checkpoints) replaces the store-backed
implementation below without changing callers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from tether.audit.records import AuditReceipt, AuditRecord
from tether.errors import Conflict

__all__ = ["AuditAppendStore", "AuditSink", "StoreAuditSink"]


class AuditSink(Protocol):
    async def append(self, record: AuditRecord) -> AuditReceipt:
        """Make ``record`` durable, then return its receipt; raise if it cannot."""
        ...


class AuditAppendStore(Protocol):
    async def append_audit(self, record: AuditRecord) -> int:
        """Durably append ``record``; return its sequence number."""
        ...

    async def append_audit_many(self, records: Sequence[AuditRecord]) -> list[int]:
        """Durably append ``records`` in one commit; all or none."""
        ...


#: At most this many records share one commit.
MAX_BATCH = 512


class StoreAuditSink:
    """A durable append into the store's audit table, with group commit.

    Records that arrive while a commit is in progress wait and are written together in the
    next one: under load, one fsync makes many records durable; alone, a record is written at
    once. Every caller still returns only after its own record is durable. If a batch is
    refused, its records are retried one by one, so one bad record fails only its own caller.
    """

    def __init__(self, store: AuditAppendStore) -> None:
        self._store = store
        self._pending: list[tuple[AuditRecord, asyncio.Future[int]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def append(self, record: AuditRecord) -> AuditReceipt:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((record, future))
        if self._writer is None or self._writer.done():
            # A task of its own: a caller that gives up (is cancelled) cannot stop the writes
            # that other callers are waiting for.
            self._writer = asyncio.create_task(self._drain(), name="tether-audit-writer")
        sequence = await future
        return AuditReceipt(record_id=record.id, sequence=sequence)

    async def _drain(self) -> None:
        batch: list[tuple[AuditRecord, asyncio.Future[int]]] = []
        try:
            while self._pending:
                # A caller that gave up (timed out, was cancelled) answered without its
                # record; writing it now would claim an outcome that did not happen.
                live = [(r, f) for r, f in self._pending if not f.done()]
                batch, self._pending = live[:MAX_BATCH], live[MAX_BATCH:]
                if batch:
                    await self._write(batch)
                batch = []
        except BaseException as exc:
            # Whatever stopped the writer, nobody may wait forever: every waiting caller gets
            # the error (its own ``append`` raises it, so nothing goes unreported).
            failure = exc if isinstance(exc, Exception) else RuntimeError("audit writer stopped")
            for _, future in [*batch, *self._pending]:
                _settle(future, failure)
            self._pending = []
            if not isinstance(exc, Exception):
                raise  # cancellation and interpreter exit go on

    async def _write(self, batch: list[tuple[AuditRecord, asyncio.Future[int]]]) -> None:
        try:
            if len(batch) == 1:
                sequences = [await self._store.append_audit(batch[0][0])]
            else:
                sequences = await self._store.append_audit_many([r for r, _ in batch])
        except Exception as exc:  # noqa: BLE001 - handed to every waiter, or retried
            if len(batch) == 1 or not isinstance(exc, Conflict):
                # The store is down (or worse): every record of the batch fails alike.
                for _, future in batch:
                    _settle(future, exc)
                return
            # One record was refused: find it, and write the others.
            for record, future in batch:
                try:
                    _settle(future, await self._store.append_audit(record))
                except Exception as one:  # noqa: BLE001 - handed to its waiter
                    _settle(future, one)
            return
        if len(sequences) != len(batch):
            raise RuntimeError("the store numbered a different count of records than it was given")
        for (_, future), sequence in zip(batch, sequences, strict=True):
            _settle(future, sequence)


def _settle(future: asyncio.Future[int], outcome: int | BaseException) -> None:
    if future.done():  # its caller gave up; the record is written all the same
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)

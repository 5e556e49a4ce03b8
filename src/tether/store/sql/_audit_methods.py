"""``SqlStore``'s audit log storage (:class:`~tether.audit.stored.AuditLogStore` and the
audit reads), as a mixin over the store's unit runner: appends through the audit writer
(:mod:`._audit_writer`) where the store has one, with the writes of the store's that an append
may carry into its transaction (:class:`~tether.store._sqlite_audit.CarriedWrite`), or as a
unit of :mod:`._audit` on the worker thread.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa

from tether.audit.records import AuditRecord
from tether.audit.stored import AuditLocation, LogEntry, SignedCheckpoint, StoredEntry
from tether.audit.tiles import TreeNode
from tether.credentials.models import Lease
from tether.errors import StoreUnavailable
from tether.store._sqlite_audit import CarriedWrite
from tether.store.sql import _audit as audit_units
from tether.store.sql import _codec as codec
from tether.store.sql import _credentials as credential_units
from tether.store.sql._audit_writer import AuditWriter
from tether.store.sql._runner import Runner
from tether.store.sql.tables import audit_records

__all__ = ["AuditMethods", "LeaseWrites"]

_T = TypeVar("_T")
#: Makers of the carried writes of a new lease and of a lease over its expected version.
LeaseWrites = tuple[Callable[[Lease], CarriedWrite], Callable[[Lease, int], CarriedWrite]]


class _AuditHost(Runner, Protocol):
    """What this mixin needs of ``SqlStore`` beyond the unit runner."""

    _audit_writer: AuditWriter | None
    _closed: bool
    _carried_writes: LeaseWrites | None

    async def _all(
        self,
        query: sa.Select[Any],
        convert: Callable[[sa.RowMapping], _T],
        params: Mapping[str, Any] | None = None,
    ) -> list[_T]: ...

    async def _first(
        self,
        query: sa.Select[Any],
        convert: Callable[[sa.RowMapping], _T],
        params: Mapping[str, Any] | None = None,
    ) -> _T | None: ...

    def carries_writes(self) -> bool: ...

    def _lease_writes(self) -> LeaseWrites | None: ...


class AuditMethods:
    """The audit half of ``SqlStore``; see :mod:`._audit`."""

    #: The makers of carried lease writes, built on first use (:meth:`_lease_writes`).
    _carried_writes: LeaseWrites | None

    async def append_audit_entries(
        self: _AuditHost,
        entries: Sequence[LogEntry],
        nodes: Sequence[TreeNode],
        *,
        adopt: bool = False,
        carried: Sequence[CarriedWrite] = (),
    ) -> list[int]:
        """One transaction for the batch (the group commit's); see ``_audit.py``. The
        ``carried`` writes (:meth:`lease_create_carried`, :meth:`lease_save_carried`) go in
        that transaction where the audit writer writes it; elsewhere none is written."""
        if not entries:
            return []
        if self._audit_writer is not None and not adopt:
            if self._closed:
                raise StoreUnavailable("the store is closed")
            return await self._audit_writer.append(entries, nodes, carried)
        unit = audit_units.append_unit(entries, nodes, adopt=adopt)
        return await self._run(unit, write=True, one_statement=False)

    def can_append_audit_now(self: _AuditHost) -> bool:
        """Whether :meth:`append_audit_entries_now` would likely write a lone record now
        (a cheap check, before the record's entry is built)."""
        writer = self._audit_writer
        return writer is not None and not self._closed and writer.direct()

    def append_audit_entries_now(
        self: _AuditHost,
        entries: Sequence[LogEntry],
        nodes: Sequence[TreeNode],
        *,
        carried: Sequence[CarriedWrite] = (),
    ) -> list[int] | None:
        """:meth:`append_audit_entries` done before returning, on this thread, when that is
        cheap (SQLite's audit writer commits a lone record here when its process is idle:
        ``_audit_writer``); None when it is not, with nothing written — then call
        :meth:`append_audit_entries`."""
        if self._audit_writer is None or self._closed or not entries:
            return None
        return self._audit_writer.append_now(entries, nodes, carried=carried)

    def carries_writes(self: _AuditHost) -> bool:
        """Whether audit appends carry writes of this store's now (``carried``): while its
        audit writer runs (the embedded SQLite store in the server)."""
        return self._audit_writer is not None and not self._closed

    def lease_create_carried(self: _AuditHost, lease: Lease) -> CarriedWrite | None:
        """:meth:`create_lease` as a write that an audit append can carry into its own
        transaction (:meth:`append_audit_entries`' ``carried``): a lease and the record of
        its issuance, committed together. None where audit appends cannot carry one
        (PostgreSQL, an in-memory SQLite database): store it the usual way then, as when
        the write comes back not ``written`` (a taken id or credential: that tells which)."""
        writes = self._lease_writes()
        return None if writes is None else writes[0](lease)

    def lease_save_carried(
        self: _AuditHost, lease: Lease, *, expected_version: int
    ) -> CarriedWrite | None:
        """:meth:`save_lease` as a carried write (see :meth:`lease_create_carried`): a lease
        and the records of its change, committed together. Not ``written`` if the lease
        moved since ``expected_version``: save it the usual way, which tells how."""
        writes = self._lease_writes()
        return None if writes is None else writes[1](lease, expected_version)

    def _lease_writes(self: _AuditHost) -> LeaseWrites | None:
        if not self.carries_writes():
            return None
        if self._carried_writes is None:
            self._carried_writes = credential_units.carried_lease_writes()
        return self._carried_writes

    async def audit_log_end(self: _AuditHost, log: str) -> StoredEntry | None:
        return await self._first(audit_units.LOG_END, audit_units.entry_from_row, {"log": log})

    async def audit_entries(
        self: _AuditHost, log: str, *, start: int, stop: int
    ) -> list[StoredEntry]:
        params = {"log": log, "start": start, "stop": stop}
        return await self._all(audit_units.ENTRIES, audit_units.entry_from_row, params)

    async def audit_tree_nodes(
        self: _AuditHost, log: str, keys: Collection[tuple[int, int]]
    ) -> dict[tuple[int, int], bytes]:
        if not keys:
            return {}
        rows = await self._all(
            audit_units.nodes_query(log, keys),
            lambda row: ((int(row["level"]), int(row["idx"])), bytes(row["hash"])),
        )
        return dict(rows)

    async def add_audit_checkpoint(self: _AuditHost, checkpoint: SignedCheckpoint) -> None:
        if self._audit_writer is not None:
            values = audit_units.sqlite_checkpoint_values(checkpoint)
            await self._audit_writer.add_checkpoint(values)
            return
        await self._run(audit_units.add_checkpoint_unit(checkpoint), write=True)

    async def latest_audit_checkpoint(self: _AuditHost, log: str) -> SignedCheckpoint | None:
        query, convert = audit_units.LATEST_CHECKPOINT, audit_units.checkpoint_from_row
        return await self._first(query, convert, {"log": log})

    async def audit_checkpoints(
        self: _AuditHost, log: str, *, after_size: int = 0, limit: int = 1000
    ) -> list[SignedCheckpoint]:
        params = {"log": log, "after": after_size, "limit": max(0, limit)}
        return await self._all(audit_units.CHECKPOINTS, audit_units.checkpoint_from_row, params)

    async def audit_logs(self: _AuditHost) -> list[str]:
        return await self._all(audit_units.LOGS, lambda row: str(row["log"]))

    async def unchained_audit_records(self: _AuditHost, *, limit: int) -> list[AuditRecord]:
        params = {"limit": max(0, limit)}
        return await self._all(audit_units.UNCHAINED, codec.audit_from_row, params)

    async def find_audit_record(self: _AuditHost, record_id: str) -> AuditLocation | None:
        query = sa.select(audit_records).where(audit_records.c.id == record_id)
        return await self._first(query, _location)

    async def list_audit(
        self: _AuditHost,
        *,
        after_sequence: int = 0,
        limit: int = 100,
        type_prefix: str | None = None,
        correlation_id: str | None = None,
    ) -> list[tuple[int, AuditRecord]]:
        query = (
            sa.select(audit_records)
            .where(audit_records.c.sequence > after_sequence)
            .order_by(audit_records.c.sequence)
            .limit(max(0, limit))
        )
        if type_prefix is not None:
            # substr, not LIKE: LIKE ignores case on SQLite and treats '_' and '%' as wildcards.
            prefix = sa.func.substr(audit_records.c.type, 1, len(type_prefix))
            query = query.where(prefix == type_prefix)
        if correlation_id is not None:
            query = query.where(audit_records.c.correlation_id == correlation_id)
        return await self._all(query, lambda row: (row["sequence"], codec.audit_from_row(row)))


def _location(row: sa.RowMapping) -> AuditLocation:
    return AuditLocation(
        sequence=int(row["sequence"]),
        record=codec.audit_from_row(row),
        log=row["log"],
        index=None if row["log_index"] is None else int(row["log_index"]),
    )

"""Units of work and queries for the audit log (see :mod:`tether.audit.log`).

An append numbers its records ``last + 1`` onwards among all records (``sequence``, every
replica's, for paging) under the audit write lock — SQLite's ``BEGIN IMMEDIATE``, or a
transaction-scoped advisory lock on PostgreSQL — and first checks that its replica's log
ends where the writer believes it does: a second writer on the same log (two replicas given
one id) gets :class:`~tether.errors.LogPositionTaken`, never a forked chain. Records, their
chain columns and the completed subtree hashes commit together or not at all.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Collection, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import IntegrityError

from tether.audit.stored import LogEntry, SignedCheckpoint, StoredEntry
from tether.audit.tiles import TreeNode
from tether.errors import Conflict, LogPositionTaken
from tether.store import _sqlite_audit as lite
from tether.store.sql.tables import audit_checkpoints, audit_records, audit_tree_nodes

__all__ = [
    "APPEND",
    "CHECKPOINTS",
    "ENTRIES",
    "LATEST_CHECKPOINT",
    "LOGS",
    "LOG_END",
    "PG_AUDIT_LOCK_KEY",
    "UNCHAINED",
    "add_checkpoint_unit",
    "append_unit",
    "checkpoint_from_row",
    "entry_from_row",
    "nodes_query",
]

#: An arbitrary constant naming the audit log's append lock among PostgreSQL advisory locks.
PG_AUDIT_LOCK_KEY = 0x7E7E_0002

_r = audit_records.c
_LAST_SEQUENCE = sa.select(sa.func.coalesce(sa.func.max(_r.sequence), 0))
_LAST_INDEX = sa.select(sa.func.max(_r.log_index)).where(_r.log == sa.bindparam("log"))
APPEND = audit_records.insert()
_ADOPT = (
    audit_records.update()
    .where(_r.id == sa.bindparam("record_id"), _r.log.is_(None))
    .values(
        log=sa.bindparam("log"),
        log_index=sa.bindparam("log_index"),
        entry=sa.bindparam("entry"),
        chain=sa.bindparam("chain"),
        # The record is its entry from now on (0005).
        time=None,
        actor=None,
        subject=None,
        outcome=None,
        details=None,
    )
)
_ENTRY_COLUMNS = (_r.log_index, _r.entry, _r.chain)
#: Parameter ``log``: its last entry.
LOG_END = (
    sa.select(*_ENTRY_COLUMNS)
    .where(_r.log == sa.bindparam("log"))
    .order_by(_r.log_index.desc())
    .limit(1)
)
#: Parameters ``log``, ``start``, ``stop``.
ENTRIES = (
    sa.select(*_ENTRY_COLUMNS)
    .where(
        _r.log == sa.bindparam("log"),
        _r.log_index >= sa.bindparam("start"),
        _r.log_index < sa.bindparam("stop"),
    )
    .order_by(_r.log_index)
)
#: Every log that has entries.
LOGS = sa.select(_r.log).where(_r.log.is_not(None)).distinct().order_by(_r.log)
#: Parameter ``limit``: records not yet in a log, oldest first.
UNCHAINED = (
    sa.select(audit_records)
    .where(_r.log.is_(None))
    .order_by(_r.sequence)
    .limit(sa.bindparam("limit"))
)
_c = audit_checkpoints.c
#: Parameter ``log``.
LATEST_CHECKPOINT = (
    sa.select(audit_checkpoints)
    .where(_c.log == sa.bindparam("log"))
    .order_by(_c.size.desc())
    .limit(1)
)
#: Parameters ``log``, ``after``, ``limit``: oldest first.
CHECKPOINTS = (
    sa.select(audit_checkpoints)
    .where(_c.log == sa.bindparam("log"), _c.size > sa.bindparam("after"))
    .order_by(_c.size)
    .limit(sa.bindparam("limit"))
)


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(PG_AUDIT_LOCK_KEY)))


def append_unit(
    entries: Sequence[LogEntry], nodes: Sequence[TreeNode], *, adopt: bool
) -> Callable[[Connection], list[int]]:
    log = entries[0].log
    first = entries[0].index
    node_rows = [{"log": log, "level": lv, "idx": i, "hash": h} for lv, i, h in nodes]

    def unit(conn: Connection) -> list[int]:
        if conn.dialect.name == "sqlite" and not adopt:
            return _sqlite_append(conn, entries, node_rows)
        _lock(conn)
        lite.check_end(log, conn.execute(_LAST_INDEX, {"log": log}).scalar_one_or_none(), first)
        try:
            numbers = _adopt(conn, entries) if adopt else _insert(conn, entries)
            if node_rows:
                conn.execute(audit_tree_nodes.insert(), node_rows)
        except IntegrityError:
            raise Conflict("an audit record of the batch was appended already") from None
        return numbers

    return unit


def _sqlite_append(
    conn: Connection, entries: Sequence[LogEntry], node_rows: list[dict[str, Any]]
) -> list[int]:
    """The append on SQLite, on the driver's connection, in the unit's transaction."""
    raw = conn.connection.driver_connection
    assert isinstance(raw, sqlite3.Connection)
    nodes = [(r["log"], r["level"], r["idx"], r["hash"]) for r in node_rows]
    first = lite.append_rows(raw, entries[0].log, entries[0].index, entry_rows(entries), nodes)
    return list(range(first, first + len(entries)))


def entry_rows(entries: Sequence[LogEntry]) -> list[tuple[Any, ...]]:
    """Each entry's values for ``APPEND_COLUMNS`` after ``sequence``."""
    return [
        (e.record.id, e.record.type, e.record.correlation_id, e.log, e.index, e.entry, e.chain)
        for e in entries
    ]


def _insert(conn: Connection, entries: Sequence[LogEntry]) -> list[int]:
    """The append's rows on PostgreSQL: the driver's executemany, not SQLAlchemy's per-row
    parameter handling, which cost the writer more than the rest of the append (text,
    integers and bytes, as drivers take them)."""
    start = int(conn.execute(_LAST_SEQUENCE).scalar_one()) + 1
    numbers = list(range(start, start + len(entries)))
    rows = _rows(entries, numbers)
    sql = _named_insert(conn.dialect)
    conn.exec_driver_sql(sql, [dict(zip(lite.APPEND_COLUMNS, r, strict=True)) for r in rows])
    return numbers


def _rows(entries: Sequence[LogEntry], numbers: list[int]) -> list[tuple[Any, ...]]:
    """Each entry's values for ``lite.APPEND_COLUMNS``, numbered ``numbers``."""
    return [(n, *row) for n, row in zip(numbers, entry_rows(entries), strict=True)]


@functools.lru_cache(maxsize=8)
def _named_insert(dialect: Dialect) -> str:
    """The INSERT of the appended columns as the driver takes it, with named parameters."""
    compiled = APPEND.compile(dialect=dialect, column_keys=list(lite.APPEND_COLUMNS))
    if compiled.positional:
        raise RuntimeError(f"{dialect.name}: named parameters expected")
    return compiled.string


def _adopt(conn: Connection, entries: Sequence[LogEntry]) -> list[int]:
    for e in entries:
        values = {"log": e.log, "log_index": e.index, "entry": e.entry, "chain": e.chain}
        if conn.execute(_ADOPT, values | {"record_id": e.record.id}).rowcount != 1:
            raise LogPositionTaken(f"audit record {e.record.id!r} was adopted by another log")
    ids = [e.record.id for e in entries]
    rows = conn.execute(sa.select(_r.id, _r.sequence).where(_r.id.in_(ids)))
    found = {row.id: int(row.sequence) for row in rows}
    return [found[i] for i in ids]


_SQLITE_DIALECT = sqlite_dialect.dialect()


def sqlite_checkpoint_values(checkpoint: SignedCheckpoint) -> tuple[Any, ...]:
    """``checkpoint`` as the driver takes it for ``audit_checkpoints`` on SQLite (its time
    bound as the column's type binds it; ``ValueError`` if it is naive)."""
    bind = audit_checkpoints.c.signed_at.type.bind_processor(_SQLITE_DIALECT)
    signed_at = bind(checkpoint.signed_at) if bind is not None else checkpoint.signed_at
    return (checkpoint.log, checkpoint.size, checkpoint.root, checkpoint.note, signed_at)


def add_checkpoint_unit(checkpoint: SignedCheckpoint) -> Callable[[Connection], None]:
    values = {
        "log": checkpoint.log,
        "size": checkpoint.size,
        "root": checkpoint.root,
        "note": checkpoint.note,
        "signed_at": checkpoint.signed_at,
    }
    where = (_c.log == checkpoint.log, _c.size == checkpoint.size)

    def unit(conn: Connection) -> None:
        _lock(conn)
        stored = conn.execute(sa.select(_c.root).where(*where)).scalar_one_or_none()
        if stored is None:
            conn.execute(audit_checkpoints.insert(), values)
        elif bytes(stored) != checkpoint.root:
            raise lite.other_root(checkpoint.log, checkpoint.size)

    return unit


def nodes_query(log: str, keys: Collection[tuple[int, int]]) -> sa.Select[Any]:
    t = audit_tree_nodes.c
    return sa.select(t.level, t.idx, t.hash).where(
        t.log == log, sa.tuple_(t.level, t.idx).in_(list(keys))
    )


def entry_from_row(row: sa.RowMapping) -> StoredEntry:
    return StoredEntry(
        index=int(row["log_index"]), entry=bytes(row["entry"]), chain=bytes(row["chain"])
    )


def checkpoint_from_row(row: sa.RowMapping) -> SignedCheckpoint:
    return SignedCheckpoint(
        log=row["log"],
        size=int(row["size"]),
        root=bytes(row["root"]),
        note=bytes(row["note"]),
        signed_at=row["signed_at"],
    )

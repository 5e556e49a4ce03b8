"""Reads of one row by its key on the event loop's own thread (the embedded SQLite store).

A read through the store's worker thread costs two thread hops and SQLAlchemy's statement
handling around a lookup that SQLite answers in microseconds: measured on this project's
2-core VM, a lease read by id took 0.3–0.4 ms that way, about a sixth of a revocation whose
aim is 2 ms; on the caller's thread, 0.06 ms. :class:`PointReader` runs such a lookup on a
connection of its own, on the caller's thread (holding the event loop for it, as the audit
writer's commits of a lone record do), with the statement compiled once and the row's values
converted by each column type's processor for SQLite — what the worker thread would have
returned.

It only reads (``PRAGMA query_only``) and never waits: in WAL mode a reader is not blocked by
writers, and when SQLite would make it wait all the same (``SQLITE_BUSY``: a checkpoint
restarting the log, recovery after a crash) or the read fails in any way, the caller is told
to read through the worker thread instead (:data:`NOT_NOW`). Committed writes of every
connection are visible to the next read. Used for the embedded store's file only (an
in-memory database is one connection's alone), while its audit writer runs: the server's case.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import pysqlite

__all__ = ["NOT_NOW", "PointQuery", "PointReader"]

#: The answer when a read must go through the worker thread.
NOT_NOW: Final = object()

_DIALECT = pysqlite.dialect()


class PointQuery:
    """``query`` (a SELECT of whole rows of one table, at most one row, named parameters)
    compiled once for SQLite's driver. Its parameters are keys the driver takes as they are
    (text, integers): no column conversion is applied to them."""

    __slots__ = ("_convert", "_names", "_params", "statement")

    def __init__(self, query: sa.Select[Any]) -> None:
        compiled = query.compile(dialect=_DIALECT)
        self.statement = compiled.string
        self._params = tuple(compiled.positiontup or ())
        columns = list(query.selected_columns)
        self._names = tuple(column.name for column in columns)
        kinds = (column.type.dialect_impl(_DIALECT) for column in columns)
        self._convert = tuple(kind.result_processor(_DIALECT, None) for kind in kinds)

    def params(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(values[name] for name in self._params)

    def row(self, raw: tuple[Any, ...]) -> dict[str, Any]:
        """The row as SQLAlchemy would have handed it over, by column name."""
        return {
            name: value if convert is None else convert(value)
            for name, convert, value in zip(self._names, self._convert, raw, strict=True)
        }


class PointReader:
    """One read-only connection to the SQLite file at ``path``, used on one thread."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._raw: sqlite3.Connection | None = None

    def one(self, query: PointQuery, values: Mapping[str, Any]) -> Any:
        """The row ``query`` finds for ``values``, None if there is none, or :data:`NOT_NOW`."""
        try:
            raw = self._raw or self._open()
            # Read to the end: the statement is done, so no read transaction stays open to
            # hold the next read to an old snapshot (or a checkpoint back).
            found = raw.execute(query.statement, query.params(values)).fetchall()
        except sqlite3.Error:
            self.close()  # opened afresh next time
            return NOT_NOW
        return query.row(found[0]) if found else None

    def close(self) -> None:
        raw, self._raw = self._raw, None
        if raw is not None:
            raw.close()

    def _open(self) -> sqlite3.Connection:
        # Used on the event loop's thread only, one read at a time.
        raw = sqlite3.connect(self._path, isolation_level=None, timeout=0, check_same_thread=False)
        try:
            raw.execute("PRAGMA query_only=ON")
        except sqlite3.Error:
            raw.close()
            raise
        self._raw = raw
        return raw

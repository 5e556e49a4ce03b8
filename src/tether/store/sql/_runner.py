"""What the store's mixins share: the unit runner they are mixed over, a listing unit, and the
one test of a unique-constraint violation for both SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from tether.store.sql._point_reads import PointQuery

__all__ = ["Runner", "insert_once", "rows", "unique_violation"]

_T = TypeVar("_T")


class Runner(Protocol):
    """What a mixin needs of its store: ``SqlStore._run`` and ``SqlStore._read_now``."""

    def _read_now(self, query: PointQuery, values: Mapping[str, Any]) -> Any:
        """The row ``query`` finds, read on this thread; None if none; ``NOT_NOW`` if it
        must go through :meth:`_run` (see :mod:`._point_reads`)."""
        ...

    async def _run(
        self,
        unit: Callable[[Connection], _T],
        *,
        write: bool,
        one_statement: bool = False,
        notify: str | None = None,
    ) -> _T: ...


def rows(
    query: sa.Select[Any], convert: Callable[[sa.RowMapping], _T], **params: Any
) -> Callable[[Connection], list[_T]]:
    """A unit that runs ``query`` and converts every row."""

    def unit(conn: Connection) -> list[_T]:
        return [convert(row) for row in conn.execute(query, params).mappings()]

    return unit


def insert_once(
    table: sa.Table, values: dict[str, Any], taken: Callable[[], Exception]
) -> Callable[[Connection], None]:
    """A unit that inserts one row, raising ``taken()`` if a unique key already holds it."""

    def unit(conn: Connection) -> None:
        try:
            conn.execute(table.insert(), values)
        except IntegrityError as exc:
            unique_violation(exc)
            raise taken() from None

    return unit


def unique_violation(exc: IntegrityError) -> None:
    """Return if ``exc`` broke a unique constraint (or a primary key); re-raise it otherwise."""
    if getattr(exc.orig, "sqlstate", None) == "23505" or "UNIQUE constraint failed" in str(
        exc.orig
    ):
        return
    raise exc

"""Units of work: how one store operation reaches the database, in one hop.

Every :class:`~tether.store.sql.SqlStore` operation is a *unit*: a synchronous function over a
SQLAlchemy :class:`~sqlalchemy.engine.Connection` that runs all its statements and returns
plain values. A runner executes units; there is one per backend.

* SQLite (:class:`SqliteUnits`) runs on the synchronous pysqlite engine, in one worker thread
  that the store owns and that holds one long-lived connection. A unit is a single hop from the
  event loop to that thread and back; it runs inside ``BEGIN DEFERRED`` (reads) or
  ``BEGIN IMMEDIATE`` (writes: the write lock first, so writers from other processes queue on
  the busy timeout instead of deadlocking) and commits or rolls back in the thread. Write units
  that arrive while the thread is busy are committed together (group commit): one
  ``BEGIN IMMEDIATE``, each unit in a ``SAVEPOINT`` of its own (a unit that fails is rolled back
  alone and gets its own error), one ``COMMIT`` — one fsync for the lot with
  ``synchronous=FULL`` — and only then does any of them return. The result is what running them
  one after the other gives; up to :data:`MAX_GROUP` units share a commit. The reason
  is measured: SQLAlchemy's asyncio adapter over aiosqlite makes four or five thread hand-offs
  per statement (cursor, execute, fetch, close, pool reset) at about 90 µs each on a 2-vCPU
  host, so one statement cost 1.1–1.7 ms; in one hop a read of two SELECTs costs about 300 µs
  and a durable write of three statements about 860 µs. A unit always runs to completion in its
  thread even if the coroutine awaiting it is cancelled, so no transaction is left open.
* PostgreSQL (:class:`PostgresUnits`) stays on the asyncio engine (psycopg), where waiting is
  network round trips, not thread hops: a unit runs with ``AsyncConnection.run_sync``. A unit of
  one statement runs in autocommit (no ``BEGIN``/``COMMIT`` round trips); a unit of several runs
  in one transaction.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import URL, Connection

from tether.store.sql.engine import SQLITE_BEGIN, postgres_engine, sqlite_engine

__all__ = ["MAX_GROUP", "PostgresUnits", "SqliteUnits", "Units", "open_units"]

_T = TypeVar("_T")
#: The most write units one SQLite commit carries.
MAX_GROUP = 256
#: A write unit waiting for the thread, and where its answer goes.
_Waiting = tuple[Callable[[Connection], Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop]


class Units(Protocol):
    """Runs units of work on one database."""

    async def run(
        self, unit: Callable[[Connection], _T], *, write: bool, one_statement: bool
    ) -> _T:
        """Run ``unit`` atomically. ``write`` says it may write; ``one_statement`` that it runs
        a single statement (atomic by itself) and needs no transaction around it."""
        ...

    async def close(self) -> None:
        """Give back every connection (and thread); wait for units already running."""
        ...


def open_units(url: URL) -> Units:
    """The runner for ``url`` (from :func:`~tether.store.sql.engine.parse_url`)."""
    if url.get_backend_name() == "sqlite":
        return SqliteUnits(url)
    return PostgresUnits(url)


class SqliteUnits:
    """Units on one connection in one worker thread; see the module docstring."""

    def __init__(self, url: URL) -> None:
        self._engine = sqlite_engine(url)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tether-sqlite")
        self._connection: Connection | None = None  # used in the worker thread only
        #: Write units not yet taken by the thread (appended here, taken there: a deque's
        #: append and popleft are atomic).
        self._writes: deque[_Waiting] = deque()

    async def run(
        self, unit: Callable[[Connection], _T], *, write: bool, one_statement: bool
    ) -> _T:
        del one_statement  # a BEGIN costs no hop here, so every unit is a transaction
        loop = asyncio.get_running_loop()
        if not write:
            return await loop.run_in_executor(self._executor, self._run, unit, "DEFERRED")
        answer: asyncio.Future[_T] = loop.create_future()
        self._writes.append((unit, answer, loop))
        # Each write queues one drain; the first to run takes every write waiting by then.
        drained = loop.run_in_executor(self._executor, self._drain)
        # The drain's future is awaited by no one: its (empty) outcome is retrieved here.
        drained.add_done_callback(_retrieve)
        # A caller cancelled meanwhile cancels only its wait: its unit still runs (and commits
        # or not) with the group, and no transaction is left open.
        return await answer

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._release)
        finally:
            self._executor.shutdown(wait=True)

    # -- in the worker thread ------------------------------------------------------------

    def _drain(self) -> None:
        """Commit the write units waiting now (at most :data:`MAX_GROUP`) together."""
        group: list[_Waiting] = []
        while self._writes and len(group) < MAX_GROUP:
            group.append(self._writes.popleft())
        if not group:
            return
        outcomes: list[tuple[bool, Any]] = []
        try:
            self._run(lambda conn: outcomes.extend(_each(conn, group)), "IMMEDIATE")
        except BaseException as exc:  # noqa: BLE001 - handed to every caller of the group
            # Nothing of the group was committed: a unit that failed alone keeps its own
            # error, every other one gets the transaction's.
            outcomes = [o if not o[0] else (False, exc) for o in outcomes] + [(False, exc)] * (
                len(group) - len(outcomes)
            )
        for (_, answer, loop), (ok, value) in zip(group, outcomes, strict=True):
            loop.call_soon_threadsafe(_settle, answer, ok, value)

    def _run(self, unit: Callable[[Connection], _T], mode: str) -> _T:
        conn = self._connect()
        try:
            conn.execution_options(**{SQLITE_BEGIN: mode})
            with conn.begin():
                return unit(conn)
        except BaseException:
            if conn.invalidated or conn.in_transaction():
                self._discard()  # never leave a broken connection or an open transaction
            raise

    def _connect(self) -> Connection:
        if self._connection is not None and (
            self._connection.invalidated or self._connection.closed
        ):
            self._discard()
        if self._connection is None:
            self._connection = self._engine.connect()
        return self._connection

    def _discard(self) -> None:
        conn, self._connection = self._connection, None
        if conn is not None:
            conn.invalidate()
            conn.close()

    def _release(self) -> None:
        conn, self._connection = self._connection, None
        try:
            if conn is not None:
                conn.close()
        finally:
            self._engine.dispose()


def _each(conn: Connection, group: list[_Waiting]) -> list[tuple[bool, Any]]:
    """Run each unit of ``group`` in a savepoint of its own: (succeeded, value or error). A
    unit alone needs none: if it fails, its transaction is rolled back whole."""
    if len(group) == 1:
        return [(True, group[0][0](conn))]
    outcomes: list[tuple[bool, Any]] = []
    for unit, _, _ in group:
        try:
            with conn.begin_nested():
                outcomes.append((True, unit(conn)))
        except Exception as exc:  # this unit's error, for its caller alone (unless fatal)
            if not _in_transaction(conn):
                # SQLite ended the whole transaction itself (a full disk, an I/O error):
                # what follows would commit unit by unit. Fail the group instead.
                raise
            outcomes.append((False, exc))
    return outcomes


def _in_transaction(conn: Connection) -> bool:
    """Whether SQLite still has the group's transaction open (its own view, not the ORM's)."""
    driver = conn.connection.driver_connection
    return bool(getattr(driver, "in_transaction", False))


def _settle(answer: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if answer.done():
        return
    if ok:
        answer.set_result(value)
    else:
        answer.set_exception(value)


def _retrieve(done: asyncio.Future[None]) -> None:
    if not done.cancelled():
        done.exception()


class PostgresUnits:
    """Units on the asyncio engine's pool; see the module docstring."""

    def __init__(self, url: URL) -> None:
        self._engine = postgres_engine(url)
        self._autocommit = self._engine.execution_options(isolation_level="AUTOCOMMIT")

    async def run(
        self, unit: Callable[[Connection], _T], *, write: bool, one_statement: bool
    ) -> _T:
        del write  # PostgreSQL locks rows, not the database: reads and writes begin alike
        async with (self._autocommit if one_statement else self._engine).begin() as conn:
            return await conn.run_sync(unit)

    async def close(self) -> None:
        await self._engine.dispose()

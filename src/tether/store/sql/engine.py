"""Engines for the two supported databases, set up for durability and for clear failures.

* ``sqlite:///path/tether.db`` — the embedded default, on SQLAlchemy's *synchronous* pysqlite
  engine (``sqlite+pysqlite://`` and the older ``sqlite+aiosqlite://`` name the same thing).
  The store drives it from one worker thread of its own, one hop per unit of work
  (:mod:`tether.store.sql._units` says why). The data directory is created if missing; every
  connection runs in WAL mode with ``synchronous=FULL`` (a committed audit record survives a
  power cut), foreign keys on and a busy timeout, so concurrent writers wait instead of failing.
  SQLAlchemy, not the driver, emits ``BEGIN``: the ``sqlite3`` driver's legacy mode skips it
  before DDL, which would commit a migration one statement at a time (SQLAlchemy's SQLite notes,
  "Enabling Non-Legacy SQLite Transactional Modes"). The execution option :data:`SQLITE_BEGIN`
  picks the mode.
* ``postgresql+psycopg://user:pw@host:port/db`` — production, shared by many replicas, on the
  asyncio engine (a plain ``postgresql://`` URL gets the psycopg driver).

A database that cannot be reached becomes :class:`~tether.errors.StoreUnavailable`, whose
message shows the URL with its password hidden and never echoes the password.

Example::

    >>> parse_url("sqlite+aiosqlite:///tether.db").drivername
    'sqlite+pysqlite'
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, cast

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from tether.errors import ConfigError, StoreUnavailable
from tether.store._sqlite_audit import BUSY_TIMEOUT_MS, PRAGMAS, begin_immediate

__all__ = [
    "BUSY_TIMEOUT_MS",
    "SQLITE_BEGIN",
    "parse_url",
    "postgres_engine",
    "sqlite_engine",
    "unavailable",
]

_CONNECT_TIMEOUT_S = 10
#: The driver each backend runs on, and the driver names accepted for it in a URL.
_DRIVERS = {
    "sqlite": ("sqlite+pysqlite", frozenset({"sqlite", "sqlite+pysqlite", "sqlite+aiosqlite"})),
    "postgresql": ("postgresql+psycopg", frozenset({"postgresql", "postgresql+psycopg"})),
}
#: The execution option that picks how a SQLite transaction begins: ``DEFERRED`` (default),
#: ``IMMEDIATE`` (take the write lock first, as a write or a migration does) or ``NONE`` (no
#: ``BEGIN``: each statement commits by itself).
SQLITE_BEGIN = "tether_sqlite_begin"
_SQLITE_BEGIN_MODES = frozenset({"DEFERRED", "IMMEDIATE", "NONE"})


def parse_url(url: str) -> URL:
    """The URL with the driver Tether runs it on; ``ConfigError`` for any other database."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError("the database URL cannot be parsed") from None
    driver, accepted = _DRIVERS.get(parsed.get_backend_name(), ("", frozenset[str]()))
    if parsed.drivername not in accepted:
        raise ConfigError(
            f"unsupported database URL scheme {parsed.drivername!r}: "
            "use sqlite:///path or postgresql+psycopg://user:pw@host/db"
        )
    return parsed.set(drivername=driver)


def sqlite_engine(url: URL) -> Engine:
    """A synchronous engine for ``url`` (from :func:`parse_url`); its directory is created."""
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        try:
            Path(database).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StoreUnavailable(
                f"cannot create the data directory of {database}: {exc.strerror}"
            ) from None
    engine = create_engine(url)
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def postgres_engine(url: URL) -> AsyncEngine:
    """An asyncio engine for ``url`` (from :func:`parse_url`), with a connect timeout."""
    connect_args = {} if "connect_timeout" in url.query else {"connect_timeout": _CONNECT_TIMEOUT_S}
    return create_async_engine(url, connect_args=connect_args)


def _sqlite_on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    dbapi_connection.isolation_level = None  # the driver no longer emits BEGIN; see below
    cursor = dbapi_connection.cursor()
    try:
        for pragma in PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get(SQLITE_BEGIN, "DEFERRED")
    if mode not in _SQLITE_BEGIN_MODES:
        raise ValueError(f"unknown SQLite BEGIN mode {mode!r}")
    if mode == "IMMEDIATE":
        # The write lock, tried at a finer pace than SQLite's busy handler (see there);
        # SQLAlchemy runs the BEGIN, so its errors are wrapped (and a closed connection
        # invalidated) as for any statement.
        raw = cast(sqlite3.Connection, conn.connection.driver_connection)
        try:
            begin_immediate(raw, begin=lambda: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        except sqlite3.Error as exc:
            # The raw connection failed around the BEGIN (its busy timeout read or restored):
            # it may be left without its busy timeout, so it is not used again.
            conn.invalidate(exc)
            raise OperationalError("BEGIN IMMEDIATE", None, exc) from exc
    elif mode != "NONE":
        conn.exec_driver_sql(f"BEGIN {mode}")


def unavailable(exc: Exception, url: URL) -> StoreUnavailable:
    """A ``StoreUnavailable`` that names the database (password hidden) and the cause."""
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    if url.password:
        reason = reason.replace(str(url.password), "***")
    where = url.render_as_string(hide_password=True)
    return StoreUnavailable(f"the database {where} is unavailable: {reason}")

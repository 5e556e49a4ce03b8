"""Shared fixtures: a throwaway PostgreSQL cluster, fresh databases, and the store under test.

``pg_cluster`` starts a real PostgreSQL server once per session from the Debian server
binaries (``/usr/lib/postgresql/<version>/bin``, or ``$PGBIN``): ``initdb`` and ``pg_ctl`` run
as the ``postgres`` system user when the tests run as root (both refuse root), the server
listens on 127.0.0.1 only on a free port, with password (SCRAM) authentication over TCP and
``fsync=off``. Without the binaries the PostgreSQL tests are skipped — except on CI
(``CI=true``), where they must run, so the fixture fails instead.

``pg_url`` is a fresh, empty database per test. ``store`` runs a test against each
implementation of the ``Store`` contract: the in-memory reference, SQLite in ``tmp_path`` and
PostgreSQL (a database migrated once, emptied before each test). Each uses the ``clock``
fixture to decide when replay keys expire.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

from tether._internal.clock import FixedClock
from tether._internal.pgcluster import (
    SUPERUSER,
    ClusterUnavailable,
    ThrowawayCluster,
    server_binaries,
)
from tether.store.interfaces import Store
from tether.store.memory import MemoryStore
from tether.store.sql import SqlStore, open_sql_store
from tether.store.sql.tables import metadata

TABLES = metadata.sorted_tables

PG_PASSWORD = "superpw-for-tests"


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run the PostgreSQL tests", pytrace=False)
    pytest.skip(reason)


@dataclass
class PgCluster:
    """A running throwaway cluster; ``create_database`` hands out empty databases."""

    host: str
    port: int
    user: str
    password: str
    _counter: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def url(self, dbname: str, *, password: str | None = None) -> str:
        pw = self.password if password is None else password
        return f"postgresql+psycopg://{self.user}:{pw}@{self.host}:{self.port}/{dbname}"

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        """A superuser connection to the maintenance database, in autocommit."""
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname="postgres",
            autocommit=True,
        )

    def create_database(self) -> str:
        """A new empty database; returns its name."""
        name = f"t_{os.getpid()}_{next(self._counter)}"
        with self.admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database under its users' feet (their sessions are terminated)."""
        with self.admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    if server_binaries() is None:
        _unavailable("PostgreSQL server binaries not installed (apt-get install postgresql)")
    try:
        server = ThrowawayCluster.start(password=PG_PASSWORD)
    except ClusterUnavailable as exc:
        _unavailable(str(exc))
    with server:
        yield PgCluster(host=server.host, port=server.port, user=SUPERUSER, password=PG_PASSWORD)


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    """The URL of a fresh, empty PostgreSQL database for this test."""
    return pg_cluster.url(pg_cluster.create_database())


@pytest.fixture(scope="session")
def pg_shared_url(pg_cluster: PgCluster) -> str:
    """One database for the ``store`` fixture, migrated once and emptied before each test:
    TRUNCATE takes milliseconds where CREATE DATABASE takes a quarter of a second."""
    return pg_cluster.url(pg_cluster.create_database())


def _truncate(conn: sa.Connection) -> None:
    tables = ", ".join(conn.dialect.identifier_preparer.quote(t.name) for t in TABLES)
    conn.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY"))


async def _emptied(store: SqlStore) -> SqlStore:
    await store.run_sync(_truncate, write=True)
    return store


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


#: ``sqlite-writer``: SQLite with its audit writer process, as the server opens it.
STORE_KINDS = [
    "memory",
    "sqlite",
    "sqlite-writer",
    pytest.param("postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=STORE_KINDS)
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FixedClock
) -> AsyncIterator[Store]:
    """The store under test: each implementation of the contract in turn."""
    kind: str = request.param
    opened: Store
    if kind == "memory":
        opened = MemoryStore(clock=clock)
    elif kind.startswith("sqlite"):
        opened = await open_sql_store(f"sqlite:///{tmp_path}/tether.db", clock=clock)
        if kind == "sqlite-writer":
            assert await opened.start_audit_writer()
    else:
        url = request.getfixturevalue("pg_shared_url")
        opened = await _emptied(await open_sql_store(url, clock=clock))
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def replica(store: Store) -> AsyncIterator[Store]:
    """Another replica on the store's database (SQL), or the store itself (memory)."""
    if not isinstance(store, SqlStore):
        yield store
        return
    url = store.url.render_as_string(hide_password=False)
    other = await open_sql_store(url, migrate=False)
    try:
        yield other
    finally:
        await other.close()

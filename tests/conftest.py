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

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

from tether._internal.clock import FixedClock
from tether.store.interfaces import Store
from tether.store.memory import MemoryStore
from tether.store.sql import SqlStore, open_sql_store
from tether.store.sql.tables import metadata

TABLES = metadata.sorted_tables

PG_SUPERUSER = "postgres"
PG_PASSWORD = "superpw-for-tests"


def _pg_bin() -> str | None:
    """The newest installed server binaries, or ``$PGBIN``."""
    if explicit := os.environ.get("PGBIN"):
        return explicit if os.path.exists(os.path.join(explicit, "initdb")) else None
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major_version)
    return os.path.dirname(found[-1]) if found else None


def _major_version(initdb: str) -> int:
    name = Path(initdb).parents[1].name
    return int(name) if name.isdigit() else 0


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run the PostgreSQL tests", pytrace=False)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _as_postgres(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: drop to the ``postgres`` system user."""
    return ["runuser", "-u", PG_SUPERUSER, "--", *cmd] if os.geteuid() == 0 else cmd


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


def _prepare_dir() -> str:
    directory = tempfile.mkdtemp(prefix="pgtest-")
    with open(os.path.join(directory, "pw"), "w", encoding="utf-8") as f:
        f.write(PG_PASSWORD + "\n")
    if os.geteuid() == 0:
        owner = pwd.getpwnam(PG_SUPERUSER)
        for path in (directory, os.path.join(directory, "pw")):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    os.chmod(directory, 0o700)
    return directory


def _start(pgbin: str, directory: str, port: int) -> None:
    initdb = [f"{pgbin}/initdb", "-D", f"{directory}/data", "-U", PG_SUPERUSER]
    initdb += [f"--pwfile={directory}/pw", "--auth-local=trust", "--auth-host=scram-sha-256"]
    initdb += ["--no-sync", "--no-instructions", "-E", "UTF8", "--locale=C.UTF-8"]
    subprocess.run(_as_postgres(initdb), check=True, stdout=subprocess.DEVNULL)
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -k {directory} -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    start = [f"{pgbin}/pg_ctl", "-D", f"{directory}/data", "-l", f"{directory}/log", "-w"]
    started = subprocess.run(
        _as_postgres([*start, "-o", options, "start"]), check=False, stdout=subprocess.DEVNULL
    )
    if started.returncode != 0:
        log = Path(directory, "log")
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
        pytest.fail(f"PostgreSQL did not start:\n{tail}", pytrace=False)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    pgbin = _pg_bin()
    if pgbin is None:
        _unavailable("PostgreSQL server binaries not installed (apt-get install postgresql-15)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_SUPERUSER)
        except KeyError:
            _unavailable("running as root, but there is no 'postgres' system user")
    directory = _prepare_dir()
    port = _free_port()
    try:
        _start(pgbin, directory, port)
        yield PgCluster(host="127.0.0.1", port=port, user=PG_SUPERUSER, password=PG_PASSWORD)
    finally:
        stop = [f"{pgbin}/pg_ctl", "-D", f"{directory}/data", "-m", "immediate", "-w", "stop"]
        subprocess.run(_as_postgres(stop), check=False, stdout=subprocess.DEVNULL)
        shutil.rmtree(directory, ignore_errors=True)


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

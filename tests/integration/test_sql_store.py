"""What only the SQL store promises: migrations, durability, connection setup and failures.

The schema tests run on SQLite and PostgreSQL alike (``sql_url``); the PostgreSQL ones use a
fresh, empty database per test. Audit records are appended as a log's writer appends them:
by hand with a :class:`~tests.support.audit.Chainer` per log, or through a real
:class:`~tether.audit.log.AuditLog` where the test is about the writer.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, make_url

from tests.integration.test_store_contract import make_agent, make_assessment
from tests.integration.test_store_contract_leases import active, at, make_engine, revoked
from tests.support.audit import ORIGIN, Chainer, open_log
from tether._internal.clock import FixedClock
from tether.audit.records import AuditRecord, Outcome
from tether.audit.stored import AuditLocation
from tether.errors import AuditUnavailable, ConfigError, ReplayDetected, StoreUnavailable
from tether.identity.models import AgentState
from tether.store.sql import SqlStore, _codec, open_sql_store
from tether.store.sql._point_reads import PointReader
from tether.store.sql.migrate import alembic_config
from tether.store.sql.tables import VERSION_TABLE, audit_records, metadata

#: The newest packaged migration: what every upgrade ends at.
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()

if TYPE_CHECKING:
    from tests.conftest import PgCluster

TABLE_NAMES = {t.name for t in metadata.sorted_tables}
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_record(n: int = 1) -> AuditRecord:
    return AuditRecord(
        id=f"rec_{n}",
        type="test.event",
        time=T0,
        actor="operator:sam",
        subject=None,
        outcome=Outcome.SUCCESS,
        details={"n": n},
    )


async def append(store: SqlStore, chainer: Chainer, *records: AuditRecord) -> list[int]:
    """``records`` appended as the writer ``chainer`` would (one Chainer per log)."""
    entries, nodes = chainer.entries(records)
    return await store.append_audit_entries(entries, nodes)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/tether.db"
    url: str = request.getfixturevalue("pg_url")
    return url


def _schema_diff(conn: Connection) -> list[object]:
    context = MigrationContext.configure(
        conn, opts={"version_table": VERSION_TABLE, "compare_type": True}
    )
    diff: list[object] = compare_metadata(context, metadata)
    return diff


def _table_names(conn: Connection) -> set[str]:
    return set(sa.inspect(conn).get_table_names())


def _versions(conn: Connection) -> list[str]:
    rows = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}"))  # noqa: S608
    return [row[0] for row in rows]


# -- migrations ------------------------------------------------------------------------------


async def test_migrated_schema_matches_the_tables_metadata(sql_url: str) -> None:
    async with await open_sql_store(sql_url) as store:
        assert await store.run_sync(_schema_diff) == []
        assert await store.run_sync(_table_names) == TABLE_NAMES | {VERSION_TABLE}


async def test_migration_is_idempotent(sql_url: str) -> None:
    chainer = Chainer()
    async with await open_sql_store(sql_url) as store:
        await append(store, chainer, make_record())
    async with await open_sql_store(sql_url) as store:
        assert [seq for seq, _ in await store.list_audit()] == [1]
        end = await store.audit_log_end(ORIGIN)
        assert end is not None
        assert (end.index, end.chain) == (0, chainer.chain)
        assert await store.run_sync(_versions) == [HEAD]


async def test_downgrade_to_base_removes_every_table(sql_url: str) -> None:
    async with await open_sql_store(sql_url) as store:
        await store.run_sync(lambda c: command.downgrade(alembic_config(c), "base"), write=True)
        assert await store.run_sync(_table_names) <= {VERSION_TABLE}


async def test_open_without_migrate_leaves_an_empty_database_alone(sql_url: str) -> None:
    async with await open_sql_store(sql_url, migrate=False) as store:
        assert await store.run_sync(_table_names) == set()


async def test_failed_migration_leaves_the_schema_as_it_was(sql_url: str) -> None:
    # The last table the migration creates is taken already, so its CREATE TABLE fails.
    create = "CREATE TABLE audit_records (sequence INTEGER PRIMARY KEY)"
    async with await open_sql_store(sql_url, migrate=False) as store:
        await store.run_sync(lambda c: c.exec_driver_sql(create).close(), write=True)
    with pytest.raises(StoreUnavailable, match="audit_records"):
        await open_sql_store(sql_url)
    async with await open_sql_store(sql_url, migrate=False) as store:
        assert await store.run_sync(_table_names) == {audit_records.name}


@pytest.mark.postgres
async def test_replicas_migrating_together_do_not_race(pg_url: str) -> None:
    stores = await asyncio.gather(*(open_sql_store(pg_url) for _ in range(4)))
    try:
        assert await stores[0].run_sync(_versions) == [HEAD]
    finally:
        await asyncio.gather(*(s.close() for s in stores))


# -- replicas --------------------------------------------------------------------------------


async def test_replicas_consume_a_key_exactly_once(sql_url: str) -> None:
    # Two stores are two replicas: separate engines, pools and connections on one database.
    one = await open_sql_store(sql_url)
    two = await open_sql_store(sql_url)
    expires = datetime.now(UTC) + timedelta(minutes=5)

    async def attempt(store: SqlStore, key: str) -> bool:
        try:
            await store.consume_once(key, expires_at=expires)
        except ReplayDetected:
            return False
        return True

    try:
        for n in range(10):
            outcomes = await asyncio.gather(attempt(one, f"jti-{n}"), attempt(two, f"jti-{n}"))
            assert sorted(outcomes) == [False, True]
    finally:
        await asyncio.gather(one.close(), two.close())


async def test_replicas_appending_together_number_the_audit_log_without_gaps(
    sql_url: str,
) -> None:
    """Each replica's writer appends to its own log; the records of both are numbered
    last + 1 among all records, without a gap or a number given twice."""
    one = await open_sql_store(sql_url)
    two = await open_sql_store(sql_url)
    origins = (ORIGIN, "tether.test/audit/r2")
    clock = FixedClock()
    logs = [await open_log(s, clock, origin=o) for s, o in zip((one, two), origins, strict=True)]
    try:
        appends = [logs[n % 2].append(make_record(n)) for n in range(1, 21)]
        receipts = await asyncio.gather(*appends)
        listed = await one.list_audit()
        assert sorted(r.sequence for r in receipts) == list(range(1, 21))
        assert [seq for seq, _ in listed] == list(range(1, 21))
        assert {r.id for _, r in listed} == {make_record(n).id for n in range(1, 21)}
        assert await two.audit_logs() == list(origins)
        for side, origin in enumerate(origins):
            mine = [r for n, r in enumerate(receipts, start=1) if n % 2 == side]
            assert {r.index for r in mine} == set(range(10))
            entries = await one.audit_entries(origin, start=0, stop=100)
            assert [e.index for e in entries] == list(range(10))
    finally:
        await asyncio.gather(*(log.close() for log in logs))
        await asyncio.gather(one.close(), two.close())


# -- durability and connection setup ---------------------------------------------------------


async def test_sqlite_store_keeps_its_data_across_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/tether.db"
    clock = FixedClock()
    async with await open_sql_store(url) as store:
        log = await open_log(store, clock)
        try:
            await log.append(make_record(1))
        finally:
            await log.close()  # signs a checkpoint of size 1
        await store.consume_once("jti-1", expires_at=datetime.now(UTC) + timedelta(minutes=5))
    async with await open_sql_store(url) as reopened:
        assert await reopened.list_audit() == [(1, make_record(1))]
        head = await reopened.latest_audit_checkpoint(ORIGIN)
        assert head is not None
        assert head.size == 1
        log = await open_log(reopened, clock)  # checks the tail against that checkpoint
        try:
            assert log.invalid is None
            receipt = await log.append(make_record(2))
        finally:
            await log.close()
        assert (receipt.sequence, receipt.index) == (2, 1)
        with pytest.raises(ReplayDetected):
            await reopened.consume_once("jti-1", expires_at=T0)


async def test_a_writer_reopened_on_a_new_store_verifies_and_continues_its_log(
    sql_url: str,
) -> None:
    """Entries, chain heads, subtree hashes and checkpoints read back from the database as
    written: a writer that opens the log again (past a stored subtree of 256 leaves) accepts
    its tail and appends after it."""
    clock = FixedClock()
    async with await open_sql_store(sql_url) as store:
        log = await open_log(store, clock)
        try:
            await asyncio.gather(*(log.append(make_record(n)) for n in range(1, 301)))
        finally:
            await log.close()
    async with await open_sql_store(sql_url) as reopened:
        assert list(await reopened.audit_tree_nodes(ORIGIN, [(8, 0)])) == [(8, 0)]
        head = await reopened.latest_audit_checkpoint(ORIGIN)
        assert head is not None
        assert head.size == 300
        log = await open_log(reopened, clock)
        try:
            assert log.invalid is None
            assert (log.size, log.signed_size) == (300, 300)
            receipt = await log.append(make_record(301))
        finally:
            await log.close()
        assert (receipt.sequence, receipt.index) == (301, 300)


async def test_sqlite_data_directory_is_created(tmp_path: Path) -> None:
    database = tmp_path / "deep" / "data" / "tether.db"
    async with await open_sql_store(f"sqlite:///{database}"):
        assert database.exists()


@pytest.mark.parametrize("scheme", ["sqlite", "sqlite+pysqlite", "sqlite+aiosqlite"])
async def test_every_sqlite_url_runs_on_the_sync_pysqlite_driver(
    tmp_path: Path, scheme: str
) -> None:
    async with await open_sql_store(f"{scheme}:///{tmp_path}/tether.db") as store:
        assert store.url.drivername == "sqlite+pysqlite"
        assert await append(store, Chainer(), make_record()) == [1]
        assert [seq for seq, _ in await store.list_audit()] == [1]


def _pragmas(conn: Connection) -> list[object]:
    names = ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
    return [conn.exec_driver_sql(f"PRAGMA {name}").scalar() for name in names]


async def test_sqlite_connections_are_durable_wal_with_foreign_keys(tmp_path: Path) -> None:
    async with await open_sql_store(f"sqlite:///{tmp_path}/tether.db") as store:
        assert await store.run_sync(_pragmas) == ["wal", 2, 1, 10_000]


async def test_sql_store_reads_back_aware_utc_from_a_naive_backend(tmp_path: Path) -> None:
    async with await open_sql_store(f"sqlite:///{tmp_path}/tether.db") as store:
        log = await open_log(store, FixedClock(T0))
        try:
            await log.append(make_record())
        finally:
            await log.close()  # signs a checkpoint at T0
        [(_, record)] = await store.list_audit()
        checkpoint = await store.latest_audit_checkpoint(ORIGIN)
    assert checkpoint is not None
    for value in (record.time, checkpoint.signed_at):
        assert value.tzinfo is not None
        assert value.utcoffset() == timedelta(0)
        assert value == T0


# -- failures --------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_unreachable_database_is_store_unavailable_without_the_password() -> None:
    url = f"postgresql+psycopg://tether:s3cret-pw@127.0.0.1:{_closed_port()}/tether"
    with pytest.raises(StoreUnavailable, match="unavailable") as caught:
        await open_sql_store(url)
    assert "s3cret-pw" not in str(caught.value)
    assert "***" in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


@pytest.mark.postgres
async def test_wrong_password_is_store_unavailable_without_the_password(pg_url: str) -> None:
    wrong = make_url(pg_url).set(password="not-the-password")
    url = wrong.render_as_string(hide_password=False)
    with pytest.raises(StoreUnavailable, match="authentication failed") as caught:
        await open_sql_store(url)
    assert "not-the-password" not in str(caught.value)


@pytest.mark.postgres
async def test_database_lost_while_open_is_store_unavailable(
    pg_cluster: PgCluster, pg_url: str
) -> None:
    async with await open_sql_store(pg_url) as store:
        chainer = Chainer("tether.test/audit/direct")
        await append(store, chainer, make_record())  # a pooled connection is open
        log = await open_log(store, FixedClock())
        try:
            await log.append(make_record(2))
            pg_cluster.drop_database(make_url(pg_url).database or "")
            with pytest.raises(StoreUnavailable, match="unavailable") as caught:
                await store.list_audit()
            assert caught.value.__cause__ is None
            with pytest.raises(StoreUnavailable, match="does not exist"):
                await store.consume_once("jti-1", expires_at=datetime.now(UTC))
            with pytest.raises(StoreUnavailable):
                await append(store, chainer, make_record(3))
            with pytest.raises(StoreUnavailable):
                await store.audit_log_end(ORIGIN)
            with pytest.raises(AuditUnavailable):  # the writer fails closed
                await log.append(make_record(4))
        finally:
            await log.close()


async def test_unusable_sqlite_path_is_store_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreUnavailable):
        await open_sql_store(f"sqlite:///{blocker}/sub/tether.db")


@pytest.mark.parametrize(
    "url",
    [
        "mysql+aiomysql://u:p@h/db",
        "sqlite+pysqlcipher:///x.db",
        "postgresql+asyncpg://u:p@h/db",
        "not a url",
    ],
)
async def test_unsupported_database_url_is_config_error(url: str) -> None:
    with pytest.raises(ConfigError):
        await open_sql_store(url)


async def test_closed_store_is_closed_for_good(sql_url: str) -> None:
    store: SqlStore = await open_sql_store(sql_url)
    await store.close()
    await store.close()  # closing twice is harmless
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.list_audit()


# -- units of work on SQLite -------------------------------------------------------------------


def _sqlite_workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("tether-sqlite")]


async def test_sqlite_units_run_on_one_worker_thread_released_on_close(tmp_path: Path) -> None:
    before = _sqlite_workers()
    store = await open_sql_store(f"sqlite:///{tmp_path}/tether.db")
    chainers = [Chainer(f"tether.test/audit/w{n}") for n in range(1, 11)]  # ten writers at once
    await asyncio.gather(*(append(store, c, make_record(n)) for n, c in enumerate(chainers, 1)))
    names = await asyncio.gather(
        *(store.run_sync(lambda _: threading.current_thread().name) for _ in range(10))
    )
    assert len(set(names)) == 1
    assert names[0].startswith("tether-sqlite")
    assert len(_sqlite_workers()) == len(before) + 1
    await store.close()
    assert _sqlite_workers() == before


def _slow_insert(started: threading.Event) -> Callable[[Connection], None]:
    def unit(conn: Connection) -> None:
        conn.execute(audit_records.insert().values(_codec.audit_values(make_record(1))))
        started.set()
        time.sleep(0.2)  # the awaiting coroutine is cancelled meanwhile

    return unit


async def test_cancelled_unit_runs_to_completion_and_leaves_no_transaction_open(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/tether.db"
    async with await open_sql_store(url) as store, await open_sql_store(url) as replica:
        started = threading.Event()
        task = asyncio.create_task(store.run_sync(_slow_insert(started), write=True))
        assert await asyncio.to_thread(started.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Committed, and the write lock given back: another connection reads it and writes.
        assert await append(replica, Chainer("tether.test/audit/r2"), make_record(2)) == [2]
        assert await append(store, Chainer(), make_record(3)) == [3]
        assert [r.id for _, r in await replica.list_audit()] == ["rec_1", "rec_2", "rec_3"]
        # The raw insert wrote a record outside any log.
        assert [r.id for r in await store.unchained_audit_records(limit=10)] == ["rec_1"]


def _break_connection(conn: Connection) -> None:
    dbapi_connection = conn.connection.dbapi_connection
    assert dbapi_connection is not None
    dbapi_connection.close()
    conn.exec_driver_sql("SELECT 1")


async def test_broken_sqlite_connection_is_store_unavailable_then_replaced(
    tmp_path: Path,
) -> None:
    async with await open_sql_store(f"sqlite:///{tmp_path}/tether.db") as store:
        chainer = Chainer()
        await append(store, chainer, make_record(1))
        with pytest.raises(StoreUnavailable, match="closed database"):
            await store.run_sync(_break_connection)
        assert await append(store, chainer, make_record(2)) == [2]


async def test_failed_unit_rolls_back_everything_it_wrote(sql_url: str) -> None:
    def unit(conn: Connection) -> None:
        conn.execute(audit_records.insert().values(_codec.audit_values(make_record(1))))
        raise RuntimeError("boom")

    async with await open_sql_store(sql_url) as store:
        with pytest.raises(RuntimeError, match="boom"):
            await store.run_sync(unit, write=True)
        assert await store.list_audit() == []
        assert await append(store, Chainer(), make_record(1)) == [1]


def _insert_unchained(records: list[AuditRecord]) -> Callable[[Connection], None]:
    """Rows as a version before the hash-chained log wrote them: no log, index or entry."""

    def unit(conn: Connection) -> None:
        conn.execute(audit_records.insert(), [_codec.audit_values(r) for r in records])

    return unit


async def test_records_stored_before_the_log_are_adopted_into_it_keeping_their_numbers(
    sql_url: str,
) -> None:
    old = [make_record(n) for n in range(1, 4)]
    async with await open_sql_store(sql_url) as store:
        await store.run_sync(_insert_unchained(old), write=True)
        assert await store.find_audit_record("rec_2") == AuditLocation(
            sequence=2, record=old[1], log=None, index=None
        )
        assert await store.unchained_audit_records(limit=2) == old[:2]
        assert await store.audit_logs() == []
        log = await open_log(store, FixedClock())  # adopts them, oldest first
        try:
            receipt = await log.append(make_record(4))
        finally:
            await log.close()
        assert await store.unchained_audit_records(limit=10) == []
        for n, record in enumerate(old):
            assert await store.find_audit_record(record.id) == AuditLocation(
                sequence=n + 1, record=record, log=ORIGIN, index=n
            )
        assert (receipt.sequence, receipt.index) == (4, 3)
        assert [seq for seq, _ in await store.list_audit()] == [1, 2, 3, 4]
        head = await store.latest_audit_checkpoint(ORIGIN)
        assert head is not None
        assert head.size == 4


def _record_columns(conn: Connection) -> list[tuple[object, ...]]:
    r = audit_records.c
    query = sa.select(r.id, r.actor, r.outcome, r.details, r.time).order_by(r.sequence)
    return [tuple(row) for row in conn.execute(query)]


async def test_records_are_stored_once_and_downgrading_fills_their_columns_back(
    sql_url: str,
) -> None:
    old, new = make_record(1), [make_record(2), make_record(3)]
    async with await open_sql_store(sql_url) as store:
        await store.run_sync(_insert_unchained([old]), write=True)
        await append(store, Chainer(), *new)
        # Appended records are their entries: the columns the entry holds stay empty.
        assert [row[1:] for row in await store.run_sync(_record_columns)][1:] == [
            (None, None, None, None),
            (None, None, None, None),
        ]
        assert [r for _, r in await store.list_audit()] == [old, *new]
        await store.run_sync(lambda c: command.downgrade(alembic_config(c), "0004"), write=True)
        filled = await store.run_sync(_record_columns)
        assert [(i, a, o, d) for i, a, o, d, _ in filled] == [
            (r.id, r.actor, str(r.outcome), dict(r.details)) for r in [old, *new]
        ]
        assert all(isinstance(t, datetime) and t.replace(tzinfo=UTC) == T0 for *_, t in filled)
        await store.run_sync(lambda c: command.upgrade(alembic_config(c), "head"), write=True)
        assert [r for _, r in await store.list_audit()] == [old, *new]
        assert await store.run_sync(_schema_diff) == []


async def test_an_agent_read_on_the_event_loops_thread_is_what_the_worker_thread_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's store reads an agent by name on the event loop's thread: the same agent
    (its JSON columns decoded, its timestamps aware), a change of the worker's seen at once."""
    store = await open_sql_store(f"sqlite:///{tmp_path}/tether.db", clock=FixedClock())
    assert await store.start_audit_writer()
    try:
        agent = make_agent("faq-bot")
        await store.create_agent(agent, make_assessment(agent))
        names = ("faq-bot", "nobody")

        async def through_the_worker(*_: object) -> None:
            raise AssertionError("read through the worker thread")

        with monkeypatch.context() as patched:
            patched.setattr(store, "_first", through_the_worker)
            here = [await store.get_agent(name) for name in names]
        reader, store._reader = store._reader, None
        assert reader is not None
        worker = [await store.get_agent(name) for name in names]
        store._reader = reader
        assert here == worker == [agent, None]
        assert here[0] is not None
        assert here[0].declarations == agent.declarations
        assert here[0].created_at.utcoffset() == timedelta(0)
        suspended = replace(agent, state=AgentState.SUSPENDED, version=agent.version + 1)
        await store.update_agent(suspended, expected_version=agent.version)
        assert await store.get_agent("faq-bot") == suspended, "a write of the worker's, at once"
    finally:
        await store.close()


async def test_a_lease_read_on_the_event_loops_thread_is_what_the_worker_thread_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's store reads a lease by id on the event loop's thread: the same lease,
    every timestamp aware and equal; and when that read cannot be made, the worker's."""
    store = await open_sql_store(f"sqlite:///{tmp_path}/tether.db", clock=FixedClock())
    assert await store.start_audit_writer()
    try:
        await store.create_engine(make_engine())
        live, gone = active(1), revoked(active(2), now=at(30))
        for lease in (live, gone):
            await store.create_lease(lease)
        ids = (live.id, gone.id, "lea_none")
        here = [await store.get_lease(lease_id) for lease_id in ids]
        reader, store._reader = store._reader, None
        assert reader is not None
        worker = [await store.get_lease(lease_id) for lease_id in ids]
        store._reader = reader
        assert here == worker == [live, gone, None]
        moved = revoked(live, now=at(40))
        await store.save_lease(moved, expected_version=live.version)
        assert await store.get_lease(live.id) == moved, "a write of the worker's, seen at once"
        ended_at = here[1].ended_at if here[1] is not None else None
        assert ended_at is not None
        assert ended_at.utcoffset() == timedelta(0)
        reader.close()
        tried: list[str] = []

        def broken(self: PointReader) -> sqlite3.Connection:
            tried.append(self._path)
            raise sqlite3.OperationalError("unable to open database file")

        monkeypatch.setattr(PointReader, "_open", broken)
        assert await store.get_lease(live.id) == moved
        assert tried, "the read on this thread was tried first"
    finally:
        await store.close()

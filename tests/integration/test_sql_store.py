"""What only the SQL store promises: migrations, durability, connection setup and failures.

The schema tests run on SQLite and PostgreSQL alike (``sql_url``); the PostgreSQL ones use a
fresh, empty database per test.
"""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection, make_url

from tether.audit.records import AuditRecord, Outcome
from tether.errors import ConfigError, ReplayDetected, StoreUnavailable
from tether.store.sql import SqlStore, open_sql_store
from tether.store.sql.migrate import alembic_config
from tether.store.sql.tables import VERSION_TABLE, audit_records, metadata

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


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/tether.db"
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
    async with await open_sql_store(sql_url) as store, store.engine.connect() as conn:
        assert await conn.run_sync(_schema_diff) == []
        assert await conn.run_sync(_table_names) == TABLE_NAMES | {VERSION_TABLE}


async def test_migration_is_idempotent(sql_url: str) -> None:
    async with await open_sql_store(sql_url) as store:
        await store.append_audit(make_record())
    async with await open_sql_store(sql_url) as store:
        assert [seq for seq, _ in await store.list_audit()] == [1]
        async with store.engine.connect() as conn:
            assert await conn.run_sync(_versions) == ["0001"]


async def test_downgrade_to_base_removes_every_table(sql_url: str) -> None:
    async with await open_sql_store(sql_url) as store:
        async with store.engine.begin() as conn:
            await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "base"))
        async with store.engine.connect() as conn:
            assert await conn.run_sync(_table_names) <= {VERSION_TABLE}


async def test_open_without_migrate_leaves_an_empty_database_alone(sql_url: str) -> None:
    async with await open_sql_store(sql_url, migrate=False) as store, store.engine.connect() as c:
        assert await c.run_sync(_table_names) == set()


async def test_failed_migration_leaves_the_schema_as_it_was(sql_url: str) -> None:
    # The last table the migration creates is taken already, so its CREATE TABLE fails.
    async with await open_sql_store(sql_url, migrate=False) as store, store.engine.begin() as c:
        await c.exec_driver_sql("CREATE TABLE audit_records (sequence INTEGER PRIMARY KEY)")
    with pytest.raises(StoreUnavailable, match="audit_records"):
        await open_sql_store(sql_url)
    async with await open_sql_store(sql_url, migrate=False) as store, store.engine.connect() as c:
        assert await c.run_sync(_table_names) == {audit_records.name}


@pytest.mark.postgres
async def test_replicas_migrating_together_do_not_race(pg_url: str) -> None:
    stores = await asyncio.gather(*(open_sql_store(pg_url) for _ in range(4)))
    try:
        async with stores[0].engine.connect() as conn:
            assert await conn.run_sync(_versions) == ["0001"]
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
    one = await open_sql_store(sql_url)
    two = await open_sql_store(sql_url)
    try:
        appends = [(one, two)[n % 2].append_audit(make_record(n)) for n in range(1, 21)]
        assert sorted(await asyncio.gather(*appends)) == list(range(1, 21))
        listed = await one.list_audit()
        assert [seq for seq, _ in listed] == list(range(1, 21))
        assert {r.id for _, r in listed} == {make_record(n).id for n in range(1, 21)}
    finally:
        await asyncio.gather(one.close(), two.close())


# -- durability and connection setup ---------------------------------------------------------


async def test_sqlite_store_keeps_its_data_across_restart(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/tether.db"
    async with await open_sql_store(url) as store:
        await store.append_audit(make_record(1))
        await store.consume_once("jti-1", expires_at=datetime.now(UTC) + timedelta(minutes=5))
    async with await open_sql_store(url) as reopened:
        assert await reopened.list_audit() == [(1, make_record(1))]
        assert await reopened.append_audit(make_record(2)) == 2
        with pytest.raises(ReplayDetected):
            await reopened.consume_once("jti-1", expires_at=T0)


async def test_sqlite_data_directory_is_created(tmp_path: Path) -> None:
    database = tmp_path / "deep" / "data" / "tether.db"
    async with await open_sql_store(f"sqlite+aiosqlite:///{database}"):
        assert database.exists()


async def test_plain_sqlite_url_gets_the_async_driver(tmp_path: Path) -> None:
    async with await open_sql_store(f"sqlite:///{tmp_path}/tether.db") as store:
        assert store.engine.url.drivername == "sqlite+aiosqlite"


async def test_sqlite_connections_are_durable_wal_with_foreign_keys(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/tether.db"
    async with await open_sql_store(url) as store, store.engine.connect() as conn:
        pragmas = [
            (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
            for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
        ]
    assert pragmas == ["wal", 2, 1, 10_000]


async def test_sql_store_reads_back_aware_utc_from_a_naive_backend(tmp_path: Path) -> None:
    async with await open_sql_store(f"sqlite+aiosqlite:///{tmp_path}/tether.db") as store:
        await store.append_audit(make_record())
        [(_, record)] = await store.list_audit()
    assert record.time.tzinfo is not None
    assert record.time == make_record().time


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
        await store.append_audit(make_record())  # a pooled connection is open
        pg_cluster.drop_database(make_url(pg_url).database or "")
        with pytest.raises(StoreUnavailable, match="unavailable") as caught:
            await store.list_audit()
        assert caught.value.__cause__ is None
        with pytest.raises(StoreUnavailable, match="does not exist"):
            await store.consume_once("jti-1", expires_at=datetime.now(UTC))
        with pytest.raises(StoreUnavailable):
            await store.append_audit(make_record(2))


async def test_unusable_sqlite_path_is_store_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreUnavailable):
        await open_sql_store(f"sqlite+aiosqlite:///{blocker}/sub/tether.db")


@pytest.mark.parametrize(
    "url", ["mysql+aiomysql://u:p@h/db", "sqlite+pysqlite:///x.db", "not a url"]
)
async def test_unsupported_database_url_is_config_error(url: str) -> None:
    with pytest.raises(ConfigError):
        await open_sql_store(url)


async def test_closed_store_is_closed_for_good(tmp_path: Path) -> None:
    store: SqlStore = await open_sql_store(f"sqlite+aiosqlite:///{tmp_path}/tether.db")
    await store.close()
    await store.close()  # closing twice is harmless

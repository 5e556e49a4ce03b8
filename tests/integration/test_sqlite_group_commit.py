"""SQLite group commit (tether.store.sql._units): write units that wait for the store's thread
share one transaction and one fsync, each in a savepoint of its own — the outcome is what
running them one after the other gives."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from tether.errors import AgentExists
from tether.store.sql import SqlStore, open_sql_store
from tether.store.sql._units import SqliteUnits

from .test_store_contract import make_agent, make_assessment


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    opened = await open_sql_store(f"sqlite:///{tmp_path}/tether.db")
    try:
        yield opened
    finally:
        await opened.close()


def _count_commits(store: SqlStore) -> list[int]:
    units = store._units
    assert isinstance(units, SqliteUnits)
    commits = [0]

    def count(conn: sa.Connection) -> None:
        commits[0] += 1

    event.listen(units._engine, "commit", count)
    return commits


async def _hold_the_thread(store: SqlStore) -> None:
    """Keep the store's one thread busy for a moment, so writes sent meanwhile wait together."""
    await store.run_sync(lambda conn: time.sleep(0.3))


async def _create(store: SqlStore, name: str) -> None:
    agent = make_agent(name)
    await store.create_agent(agent, make_assessment(agent))


async def test_concurrent_writes_share_commits_and_all_land(store: SqlStore) -> None:
    commits = _count_commits(store)
    busy = asyncio.create_task(_hold_the_thread(store))
    await asyncio.sleep(0.05)
    await asyncio.gather(*(_create(store, f"bot-{n:02d}") for n in range(40)))
    await busy
    assert len(await store.list_agents(limit=100)) == 40
    assert commits[0] <= 5  # the read, and a commit or two for the 40 writes (not 40)


async def test_a_failing_write_fails_alone_and_writes_nothing(store: SqlStore) -> None:
    await _create(store, "taken")
    names = ["bot-a", "taken", "bot-b", "bot-c"]
    results = await asyncio.gather(*(_create(store, n) for n in names), return_exceptions=True)
    assert isinstance(results[1], AgentExists)
    assert [r for i, r in enumerate(results) if i != 1] == [None, None, None]
    stored = {a.name for a in await store.list_agents(limit=100)}
    assert stored == {"taken", "bot-a", "bot-b", "bot-c"}
    taken = await store.get_agent("taken")
    assert taken is not None
    assert len(await store.list_assessments(taken.id)) == 1


async def test_a_cancelled_caller_leaves_no_open_transaction(store: SqlStore) -> None:
    tasks = [asyncio.create_task(_create(store, f"bot-{n}")) for n in range(10)]
    await asyncio.sleep(0)
    tasks[3].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    # The cancelled caller's unit ran with its group (or not at all): the store still works,
    # and every other write landed.
    await _create(store, "after")
    names = {a.name for a in await store.list_agents(limit=100)}
    assert {f"bot-{n}" for n in range(10) if n != 3} | {"after"} <= names


async def test_a_transaction_sqlite_ended_itself_fails_the_whole_group(store: SqlStore) -> None:
    """As after a full disk or an I/O error: the units after the failing one must not be
    committed one by one, each reported failed though written."""

    def insert(name: str) -> Callable[[sa.Connection], None]:
        def unit(conn: sa.Connection) -> None:
            conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS probe (name TEXT)")
            conn.exec_driver_sql("INSERT INTO probe VALUES (?)", (name,))

        return unit

    def fatal(conn: sa.Connection) -> None:
        conn.exec_driver_sql("ROLLBACK")  # what SQLite does by itself on SQLITE_FULL
        raise sa.exc.OperationalError("INSERT", {}, Exception("database or disk is full"))

    units = [insert("a"), fatal, insert("c")]
    busy = asyncio.create_task(_hold_the_thread(store))
    await asyncio.sleep(0.05)  # the thread is busy: the three writes queue up as one group
    results = await asyncio.gather(
        *(store.run_sync(u, write=True) for u in units), return_exceptions=True
    )
    await busy
    assert all(isinstance(r, BaseException) for r in results), results
    rows = await store.run_sync(
        lambda conn: conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE name = 'probe'"
        ).fetchall()
    )
    assert rows == []  # nothing of the group was written, not even the table

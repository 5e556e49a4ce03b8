"""Waiting for SQLite's write lock (``begin_immediate``): a writer that finds the lock taken
tries again at a fine pace instead of SQLite's busy handler (which sleeps 1, 2, 5, 10 ms…
whatever the holder does), gives up after its timeout with nothing open, and leaves the
connection's own busy timeout as it found it."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.audit import Chainer
from tether._internal.clock import FixedClock
from tether.audit.records import AuditRecord
from tether.store._sqlite_audit import begin_immediate, is_busy
from tether.store.sql import open_sql_store

CONFIGURED_MS = 4321


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA busy_timeout={CONFIGURED_MS}")
    return conn


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A connection holding the database's write lock."""
    conn = _connect(tmp_path / "db.sqlite")
    conn.execute("CREATE TABLE t (n INTEGER)")
    conn.execute("BEGIN IMMEDIATE")
    yield conn
    conn.close()


def _busy_timeout(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA busy_timeout").fetchone()[0])


def test_a_writer_takes_the_lock_once_its_holder_commits_and_keeps_its_busy_timeout(
    holder: sqlite3.Connection, tmp_path: Path
) -> None:
    writer = _connect(tmp_path / "db.sqlite")
    release = threading.Timer(0.1, holder.execute, ("COMMIT",))
    release.start()
    try:
        begin_immediate(writer, timeout=10)
        assert writer.in_transaction
        writer.execute("INSERT INTO t VALUES (1)")
        writer.execute("COMMIT")
    finally:
        release.join()
    assert not holder.in_transaction, "the lock was taken before its holder let it go"
    assert _busy_timeout(writer) == CONFIGURED_MS
    assert writer.execute("SELECT n FROM t").fetchall() == [(1,)]


def test_a_writer_gives_up_after_its_timeout_with_nothing_open(
    holder: sqlite3.Connection, tmp_path: Path
) -> None:
    writer = _connect(tmp_path / "db.sqlite")
    with pytest.raises(sqlite3.OperationalError) as refused:
        begin_immediate(writer, timeout=0.05)
    assert is_busy(refused.value)
    assert not writer.in_transaction
    assert _busy_timeout(writer) == CONFIGURED_MS
    assert holder.in_transaction


def test_an_error_that_is_not_a_held_lock_is_raised_at_once(tmp_path: Path) -> None:
    writer = _connect(tmp_path / "db.sqlite")
    writer.execute("BEGIN")
    with pytest.raises(sqlite3.OperationalError) as refused:
        begin_immediate(writer, timeout=3600)  # were it retried, this test would not end
    assert not is_busy(refused.value)
    assert _busy_timeout(writer) == CONFIGURED_MS


async def test_a_store_write_waits_for_the_lock_and_is_written_once_it_is_free(
    tmp_path: Path,
) -> None:
    # The store's own writes (its worker thread, through SQLAlchemy) begin the same way.
    store = await open_sql_store(f"sqlite:///{tmp_path}/tether.db", clock=FixedClock())
    try:
        holding = _connect(tmp_path / "tether.db")
        holding.execute("BEGIN IMMEDIATE")
        release = threading.Timer(0.1, holding.execute, ("COMMIT",))
        release.start()
        record = AuditRecord.new(
            type="agent.registered", actor="operator:sam", subject="a", time=FixedClock().now()
        )
        written = await store.append_audit_entries(*Chainer().entries([record]))
        assert not holding.in_transaction, "written while another connection held the lock"
        release.join()
        holding.close()
        assert written == [1]
    finally:
        await store.close()

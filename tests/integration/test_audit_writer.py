"""The audit writer process (SQLite): it writes as the store's own thread does, and when it
dies or its server does, nothing acknowledged is lost and nothing is left running.

The store contract suite also runs against a store with the writer (``sqlite-writer`` in
``tests/conftest.py``); these are the failures only a process has.
"""

from __future__ import annotations

import asyncio
import math
import os
import pickle
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.audit import ORIGIN, Chainer, open_log
from tether._internal.clock import FixedClock
from tether.audit.chain import verify_log
from tether.audit.records import AuditRecord
from tether.errors import Conflict, InvalidInput, StoreUnavailable
from tether.store import _sqlite_audit
from tether.store._sqlite_audit import CarriedWrite
from tether.store.sql import SqlStore, open_sql_store
from tether.store.sql._audit import entry_rows
from tether.store.sql._audit_writer import CHECKPOINT_TURN, AuditWriter
from tether.store.sql.tables import audit_checkpoints, audit_records, audit_tree_nodes

CLOCK = FixedClock()


def record(n: int) -> AuditRecord:
    return AuditRecord.new(
        type="agent.registered", actor="operator:sam", subject=f"agent-{n}", time=CLOCK.now()
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    opened = await open_sql_store(f"sqlite:///{tmp_path}/tether.db", clock=CLOCK)
    assert await opened.start_audit_writer()
    try:
        yield opened
    finally:
        await opened.close()


def _writer(store: SqlStore) -> AuditWriter:
    writer = store._audit_writer
    assert writer is not None
    return writer


def _pid(store: SqlStore) -> int:
    process = _writer(store)._process
    assert process is not None
    return process.pid


async def _gone(store: SqlStore) -> None:
    """Until the store has seen its writer process end."""
    for _ in range(500):
        if _writer(store)._sock is None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the end of the writer process went unseen")


async def _verified(store: SqlStore) -> int:
    end = await store.audit_log_end(ORIGIN)
    entries = await store.audit_entries(ORIGIN, start=0, stop=0 if end is None else end.index + 1)
    return verify_log(
        [e.entry for e in entries], origin=ORIGIN, chain_heads=[e.chain for e in entries]
    ).size


def test_the_process_writes_the_tables_the_store_defines() -> None:
    names = (_sqlite_audit.RECORDS, _sqlite_audit.NODES, _sqlite_audit.CHECKPOINTS)
    assert names == (audit_records.name, audit_tree_nodes.name, audit_checkpoints.name)
    assert set(_sqlite_audit.APPEND_COLUMNS) <= set(audit_records.c.keys())


async def test_a_killed_writer_fails_the_batch_it_held_and_the_next_starts_a_new_one(
    store: SqlStore,
) -> None:
    chainer = Chainer()
    entries, nodes = chainer.entries([record(1)])
    assert await store.append_audit_entries(entries, nodes) == [1]
    first = _pid(store)
    os.kill(first, signal.SIGSTOP)  # the batch below waits in its socket, unread
    held = Chainer()
    held.tree, held.chain = chainer.tree.copy(), chainer.chain
    # Two records: a lone one would be committed on this thread (the process holds nothing).
    waiting = asyncio.ensure_future(
        store.append_audit_entries(*held.entries([record(2), record(3)]))
    )
    await asyncio.sleep(0.05)
    os.kill(first, signal.SIGKILL)
    with pytest.raises(StoreUnavailable, match="writer process stopped"):
        await waiting
    await _gone(store)
    # Nothing of the failed batch was written; the next append starts a new process.
    assert await store.append_audit_entries(*chainer.entries([record(4), record(5)])) == [2, 3]
    assert _pid(store) != first
    assert await _verified(store) == 3


async def test_a_writer_killed_between_batches_is_started_again_and_nothing_is_lost(
    store: SqlStore,
) -> None:
    problems: list[str] = []
    log = await open_log(
        store,
        CLOCK,
        depth=2,
        checkpoint_seconds=3600,  # no timed checkpoint in flight when the writer is killed
        on_problem=lambda kind, _: problems.append(kind),
    )
    try:
        acknowledged = [await log.append(record(n)) for n in range(20)]
        os.kill(_pid(store), signal.SIGKILL)
        await _gone(store)
        acknowledged += [await log.append(record(n)) for n in range(20, 40)]
    finally:
        await log.close()
    assert [r.index for r in acknowledged] == list(range(40))
    assert await _verified(store) == 40
    assert problems == [], "the writer was gone before the next batch: it simply started again"


async def test_closing_the_store_ends_the_writer_process(store: SqlStore) -> None:
    await store.append_audit_entries(*Chainer().entries([record(1)]))
    process = _writer(store)._process
    assert process is not None
    await store.close()
    assert process.poll() is not None


def test_the_process_exits_when_its_server_is_gone(tmp_path: Path) -> None:
    # The server's end of the socket closes as it dies (kill -9 included): the process
    # reads the end, and exits instead of living on as an orphan.
    path = tmp_path / "tether.db"
    asyncio.run(_migrated(path))
    mine, theirs = socket.socketpair()
    command = [sys.executable, "-c", "from tether.store._sqlite_audit import main; main()"]
    process = subprocess.Popen(
        [*command, str(theirs.fileno()), str(path)], pass_fds=(theirs.fileno(),)
    )
    theirs.close()
    assert _sqlite_audit.read_frame(mine) is not None  # ready
    mine.close()
    assert process.wait(timeout=10) == 0


async def _migrated(path: Path) -> None:
    store = await open_sql_store(f"sqlite:///{path}")
    await store.close()


async def test_the_writer_process_is_not_handed_tethers_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TETHER_KEK", "a-secret-the-writer-never-needs")
    opened = await open_sql_store(f"sqlite:///{tmp_path}/tether.db", clock=CLOCK)
    try:
        assert await opened.start_audit_writer()
        environ = await asyncio.to_thread(Path(f"/proc/{_pid(opened)}/environ").read_bytes)
    finally:
        await opened.close()
    assert b"TETHER_" not in environ
    assert b"a-secret-the-writer-never-needs" not in environ


def test_requests_waiting_together_commit_together_and_a_refused_one_alone_rolls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three requests waiting before the process reads any: one transaction, three
    # savepoints. The second repeats the first's place (refused: the log has moved on); the
    # first and the checkpoint after it are written all the same.
    path = tmp_path / "tether.db"
    asyncio.run(_migrated(path))
    groups: list[int] = []
    answer = _sqlite_audit._answer

    def counted(raw: sqlite3.Connection, group: list[Any]) -> list[Any]:
        groups.append(len(group))
        return answer(raw, group)

    monkeypatch.setattr(_sqlite_audit, "_answer", counted)
    entries, nodes = Chainer().entries([record(1)])
    checkpoint = (ORIGIN, 1, b"r" * 32, b"note", "2026-01-01 00:00:00.000000")
    mine, theirs = socket.socketpair()
    for request in (
        ("append", ORIGIN, 0, entry_rows(entries), nodes),
        ("append", ORIGIN, 0, entry_rows(Chainer().entries([record(2)])[0]), []),
        ("checkpoint", checkpoint),
    ):
        _sqlite_audit.write_frame(mine, pickle.dumps(request))
    serving = threading.Thread(target=_sqlite_audit.serve, args=(str(path), theirs))
    serving.start()
    frames = [_sqlite_audit.read_frame(mine) for _ in range(4)]  # ready, then three answers
    _sqlite_audit.write_frame(mine, b"")
    serving.join(10)
    mine.close()
    answers = [pickle.loads(f or b"") for f in frames[1:]]  # noqa: S301 - our own process
    assert [kind for kind, _ in answers] == ["ok", "position", "ok"]
    assert groups == [3]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM audit_records").fetchone() == (1,)
        assert db.execute("SELECT size FROM audit_checkpoints").fetchall() == [(1,)]


async def test_a_writer_that_cannot_open_the_database_says_why_and_starts_nothing(
    tmp_path: Path,
) -> None:
    writer = AuditWriter(str(tmp_path))  # a directory, not a database file
    with pytest.raises(StoreUnavailable, match="could not open the database: unable to open"):
        await writer.start()
    await writer.close()
    assert writer._process is None


# -- a lone record, committed on the caller's thread -----------------------------------------


async def test_a_lone_record_is_durable_while_the_writer_process_is_stopped(
    store: SqlStore,
) -> None:
    chainer = Chainer()
    await store.append_audit_entries(*chainer.entries([record(1)]))
    process = _pid(store)
    os.kill(process, signal.SIGSTOP)
    try:
        # The process holds nothing: the record is committed here, not left waiting for it.
        async with asyncio.timeout(10):
            assert await store.append_audit_entries(*chainer.entries([record(2)])) == [2]
    finally:
        os.kill(process, signal.SIGCONT)
    with sqlite3.connect(_writer(store)._path) as db:
        assert db.execute("SELECT count(*) FROM audit_records").fetchone() == (2,)
    assert await _verified(store) == 2


async def test_a_lone_record_behind_a_batch_the_process_holds_waits_its_turn(
    store: SqlStore,
) -> None:
    # Committed here before the batch ahead of it, it would sit at the batch's place: the
    # log forks or refuses. It goes behind the batch instead, in order.
    chainer = Chainer()
    process = _pid(store)
    os.kill(process, signal.SIGSTOP)
    try:
        ahead = asyncio.ensure_future(
            store.append_audit_entries(*chainer.entries([record(1), record(2)]))
        )
        await asyncio.sleep(0.05)  # the batch is in the process's socket, unread
        assert not store.can_append_audit_now(), "the process holds a batch"
        behind = asyncio.ensure_future(store.append_audit_entries(*chainer.entries([record(3)])))
        await asyncio.sleep(0.05)
        assert not behind.done(), "a lone record went ahead of a batch the process held"
    finally:
        os.kill(process, signal.SIGCONT)
    assert await ahead == [1, 2]
    assert await behind == [3]
    assert await _verified(store) == 3


async def test_a_lone_record_goes_to_the_process_while_another_connection_writes(
    store: SqlStore,
) -> None:
    # The write lock is held elsewhere: the caller's thread never waits for it (the event
    # loop keeps running); the process waits, and writes once the lock is free.
    holder = sqlite3.connect(_writer(store)._path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    running = asyncio.ensure_future(ticker())
    try:
        append = asyncio.ensure_future(store.append_audit_entries(*Chainer().entries([record(1)])))
        await asyncio.sleep(0.2)
        assert not append.done(), "written while another connection held the write lock"
        seen = ticks
        holder.execute("COMMIT")
        assert await append == [1]
    finally:
        running.cancel()
        holder.close()
    assert seen >= 5, "the event loop waited for the lock"
    assert await _verified(store) == 1


async def test_lone_records_leave_the_wal_for_the_process_to_checkpoint(store: SqlStore) -> None:
    # The caller's thread never checkpoints the WAL (the copy would hold the event loop);
    # every CHECKPOINT_TURN-th lone record goes to the process, whose connection does. Were
    # that turn missing, 10 turns of records would leave the WAL ten times as long.
    chainer = Chainer()
    for n in range(10 * CHECKPOINT_TURN):
        await store.append_audit_entries(*chainer.entries([record(n)]))
    with sqlite3.connect(_writer(store)._path) as db:
        page = db.execute("PRAGMA page_size").fetchone()[0]
        autocheckpoint = db.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    wal = await asyncio.to_thread(os.path.getsize, f"{_writer(store)._path}-wal")
    frames_a_record = 16  # a record's rows and index entries, with room to spare
    assert wal <= (autocheckpoint + CHECKPOINT_TURN * frames_a_record) * (page + 24)
    assert await _verified(store) == 10 * CHECKPOINT_TURN


async def test_slow_commits_send_lone_records_to_the_process(tmp_path: Path) -> None:
    # A slow disk must not hold the event loop commit after commit: once this thread's
    # commits are slow on average (here: any commit at all), lone records go to the process.
    opened = await open_sql_store(f"sqlite:///{tmp_path}/tether.db", clock=CLOCK)
    writer = AuditWriter(str(tmp_path / "tether.db"), direct_slow=0.0)
    try:
        await writer.start()
        chainer = Chainer()
        assert await writer.append(*chainer.entries([record(1)])) == [1]  # here, and slow
        process = writer._process
        assert process is not None
        os.kill(process.pid, signal.SIGSTOP)
        try:
            second = asyncio.ensure_future(writer.append(*chainer.entries([record(2)])))
            await asyncio.sleep(0.1)
            assert not second.done(), "committed on the event loop after a slow commit"
        finally:
            os.kill(process.pid, signal.SIGCONT)
        assert await second == [2]
    finally:
        await writer.close()
        await opened.close()


# -- the audit log on this writer: a record alone is written without a task ------------------


class _Writes:
    """What the log hands the store: each batch written at once on the caller's thread
    (``now``) and each one handed over to be awaited (``later``), by their sizes."""

    def __init__(self, store: SqlStore) -> None:
        self.now: list[int] = []
        self.later: list[int] = []
        at_once, handed = store.append_audit_entries_now, store.append_audit_entries

        def now(entries: Any, nodes: Any, **options: Any) -> list[int] | None:
            written = at_once(entries, nodes, **options)
            if written is not None:
                self.now.append(len(entries))
            return written

        async def later(entries: Any, nodes: Any, **options: Any) -> list[int]:
            self.later.append(len(entries))
            return await handed(entries, nodes, **options)

        store.append_audit_entries_now = now  # type: ignore[method-assign]
        store.append_audit_entries = later  # type: ignore[method-assign]


async def test_records_appended_together_share_a_commit_and_one_alone_is_written_at_once(
    store: SqlStore,
) -> None:
    # A record alone skips the writer task; but records whose callers run in the same turn
    # of the event loop must still share a commit, not take one fsync each on the loop.
    log = await open_log(store, depth=2)
    writes = _Writes(store)
    try:
        await log.append(record(0))
        assert (writes.now, writes.later) == ([1], [])
        await asyncio.gather(*(log.append(record(n)) for n in range(1, 9)))
        assert sum(writes.later) + sum(writes.now) == 9
        assert len(writes.later) + len(writes.now) <= 3, "eight records, one commit each"
        await log.append(record(9))
        assert writes.now[-1] == 1
    finally:
        await log.close()
    assert await _verified(store) == 10


async def test_records_carry_a_write_into_their_commit_only_while_the_log_is_idle(
    store: SqlStore,
) -> None:
    """A write carried by records (a lease closed with the records of its revocation) runs
    in their transaction; while other records are on their way it is not run at all, and
    nothing is written for the caller to do apart."""
    log = await open_log(store, depth=2)
    await store.run_sync(lambda c: c.exec_driver_sql("CREATE TABLE seen (n INTEGER)"), write=True)
    counts = "INSERT INTO seen (n) SELECT count(*) FROM audit_records"
    try:
        carried = CarriedWrite(counts, ())
        receipts = await log.append_carrying([record(1), record(2)], carried)
        assert receipts is not None
        assert [r.index for r in receipts] == [0, 1]
        assert carried.written
        assert await _seen(store) == [2], "run once, after the rows, before the commit"
        on_the_way = asyncio.ensure_future(log.append(record(3)))
        await asyncio.sleep(0)  # pending now
        left = CarriedWrite(counts, ())
        assert await log.append_carrying([record(4)], left) is None
        assert not left.written
        await on_the_way
        unwritable = AuditRecord.new(
            type="agent.registered",
            actor="operator:sam",
            subject="x",
            time=CLOCK.now(),
            details={"n": math.nan},
        )
        with pytest.raises(InvalidInput):
            await log.append_carrying([unwritable], CarriedWrite(counts, ()))
    finally:
        await log.close()
    assert await _seen(store) == [2]
    assert await _verified(store) == 3


async def _seen(store: SqlStore) -> list[int]:
    rows = await store.run_sync(lambda c: c.exec_driver_sql("SELECT n FROM seen").all())
    return [int(n) for (n,) in rows]


async def test_a_record_whose_caller_gave_up_before_it_was_written_is_not_written(
    store: SqlStore,
) -> None:
    # A record alone waits one turn of the event loop for company before it is written;
    # a caller cancelled in that turn got no receipt, so its record must not appear.
    log = await open_log(store, depth=2)
    try:
        giving_up = asyncio.ensure_future(log.append(record(1)))
        await asyncio.sleep(0)  # it waits for its turn now
        giving_up.cancel()
        with pytest.raises(asyncio.CancelledError):
            await giving_up
        receipt = await log.append(record(2))
        await asyncio.sleep(0.05)  # a writer that took the first record would have written it
    finally:
        await log.close()
    assert receipt.index == 0
    with sqlite3.connect(_writer(store)._path) as db:
        subjects = db.execute("SELECT entry FROM audit_records").fetchall()
    assert len(subjects) == 1
    assert b"agent-2" in subjects[0][0]


async def test_a_record_refused_when_written_alone_fails_alone_and_the_log_goes_on(
    store: SqlStore,
) -> None:
    log = await open_log(store, depth=2)
    first = record(1)
    try:
        await log.append(first)
        with pytest.raises(Conflict):
            await log.append(first)  # its id is taken
        receipt = await log.append(record(2))
    finally:
        await log.close()
    assert receipt.index == 1
    assert await _verified(store) == 2


async def test_the_store_offers_a_commit_on_the_callers_thread_only_while_its_writer_process_runs(
    tmp_path: Path,
) -> None:
    # Without the process (PostgreSQL, or before it starts), a lone record is not built for
    # this thread only to be built again for the writer task.
    opened = await open_sql_store(f"sqlite:///{tmp_path}/tether.db", clock=CLOCK)
    try:
        assert not opened.can_append_audit_now()
        assert await opened.start_audit_writer()
        assert opened.can_append_audit_now()
    finally:
        await opened.close()

"""Group commit in the audit sink: shared commits under load, every caller durable, faults
isolated to their own caller."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from tether.audit.records import AuditRecord
from tether.audit.sink import StoreAuditSink
from tether.errors import Conflict
from tether.store.memory import MemoryStore

T0 = datetime(2026, 12, 1, tzinfo=UTC)


class CountingStore(MemoryStore):
    """The memory store, counting commits, with an optional slow commit."""

    def __init__(self) -> None:
        super().__init__()
        self.commits = 0
        self.delay = 0.0

    async def append_audit(self, record: AuditRecord) -> int:
        self.commits += 1
        await asyncio.sleep(self.delay)
        return await super().append_audit(record)

    async def append_audit_many(self, records: Sequence[AuditRecord]) -> list[int]:
        self.commits += 1
        await asyncio.sleep(self.delay)
        return await super().append_audit_many(records)


def record(n: int) -> AuditRecord:
    return AuditRecord.new(type="decision", actor="a", subject=None, time=T0, details={"n": n})


async def test_concurrent_appends_share_commits_and_keep_their_order() -> None:
    store = CountingStore()
    store.delay = 0.01
    sink = StoreAuditSink(store)
    records = [record(i) for i in range(50)]
    receipts = await asyncio.gather(*(sink.append(r) for r in records))
    assert [r.record_id for r in receipts] == [r.id for r in records]
    assert sorted(r.sequence for r in receipts) == list(range(1, 51))
    assert store.commits < 10, f"{store.commits} commits for 50 records"
    listed = await store.list_audit(limit=100)
    assert {r.id for _, r in listed} == {r.id for r in records}


async def test_a_lone_append_is_written_at_once() -> None:
    store = CountingStore()
    receipt = await StoreAuditSink(store).append(record(1))
    assert (receipt.sequence, store.commits) == (1, 1)


async def test_a_refused_record_fails_only_its_own_caller() -> None:
    store = CountingStore()
    store.delay = 0.01
    sink = StoreAuditSink(store)
    duplicate = record(0)
    await sink.append(duplicate)
    outcomes = await asyncio.gather(
        sink.append(record(1)),
        sink.append(duplicate),
        sink.append(record(2)),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], Conflict)
    assert not isinstance(outcomes[0], BaseException)
    assert not isinstance(outcomes[2], BaseException)


async def test_a_caller_that_gives_up_does_not_stop_the_others() -> None:
    store = CountingStore()
    store.delay = 0.05
    sink = StoreAuditSink(store)
    first = asyncio.create_task(sink.append(record(1)))
    await asyncio.sleep(0)
    others = [asyncio.create_task(sink.append(record(i))) for i in range(2, 5)]
    await asyncio.sleep(0)
    first.cancel()
    receipts = await asyncio.gather(*others)
    assert len(receipts) == 3
    with pytest.raises(asyncio.CancelledError):
        await first
    # ``first`` was cancelled while its record was being written: the write completes.
    assert len(await store.list_audit(limit=10)) == 4


async def test_a_store_outage_fails_each_caller_once_without_retrying_the_batch() -> None:
    store = CountingStore()
    store.delay = 0.01

    async def down(records: Sequence[AuditRecord]) -> list[int]:
        store.commits += 1
        raise RuntimeError("disk gone")

    sink = StoreAuditSink(store)
    first = asyncio.create_task(sink.append(record(0)))
    await asyncio.sleep(0)
    store.append_audit_many = down  # type: ignore[method-assign]
    rest = await asyncio.gather(
        *(sink.append(record(i)) for i in range(1, 6)), return_exceptions=True
    )
    await first
    assert all(isinstance(r, RuntimeError) for r in rest)
    assert store.commits == 2, "one commit for the first record, one failed one for the batch"


async def test_a_broken_writer_never_leaves_a_caller_waiting() -> None:
    store = CountingStore()
    store.delay = 0.01

    async def short(records: Sequence[AuditRecord]) -> list[int]:
        return [1]  # fewer numbers than records: the writer itself fails

    sink = StoreAuditSink(store)
    first = asyncio.create_task(sink.append(record(0)))
    await asyncio.sleep(0)
    store.append_audit_many = short  # type: ignore[method-assign]
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(sink.append(record(i)) for i in range(1, 4)), return_exceptions=True),
        timeout=5,
    )
    await first
    assert all(isinstance(o, Exception) for o in outcomes)


async def test_a_record_whose_caller_gave_up_before_the_write_is_not_written() -> None:
    store = CountingStore()
    store.delay = 0.05
    sink = StoreAuditSink(store)
    first = asyncio.create_task(sink.append(record(0)))
    await asyncio.sleep(0)
    abandoned = asyncio.create_task(sink.append(record(1)))
    await asyncio.sleep(0)
    abandoned.cancel()
    await first
    await asyncio.sleep(0.1)
    assert [r.details["n"] for _, r in await store.list_audit(limit=10)] == [0]

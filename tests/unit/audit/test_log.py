"""The audit log as a sink: entries, chain, checkpoints, witnesses, failure and recovery."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Collection, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.audit import ORIGIN, open_log, signer
from tether._internal.clock import FixedClock
from tether.audit.chain import LogInvalid, verify_log
from tether.audit.log import AuditLog
from tether.audit.merkle import (
    leaf_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)
from tether.audit.notes import NoteInvalid, TreeHead
from tether.audit.records import AuditReceipt, AuditRecord
from tether.audit.stored import LogEntry, SignedCheckpoint, StoredEntry
from tether.audit.tiles import TreeNode, consistency_proof_at, inclusion_proof_at
from tether.errors import (
    AuditLogInvalid,
    AuditUnavailable,
    Conflict,
    InvalidInput,
    LogPositionTaken,
)
from tether.store.memory import MemoryStore
from tether.store.witness import FileWitness, WitnessDamaged

CLOCK = FixedClock()


def record(n: int = 0, **changes: Any) -> AuditRecord:
    made = AuditRecord.new(
        type="agent.registered", actor="operator:alice", subject=f"agent-{n}", time=CLOCK.now()
    )
    return replace(made, **changes)


async def entries_of(store: MemoryStore, log: str = ORIGIN) -> list[StoredEntry]:
    end = await store.audit_log_end(log)
    return await store.audit_entries(log, start=0, stop=0 if end is None else end.index + 1)


async def verified(store: MemoryStore, log: str = ORIGIN) -> int:
    """The log's size after checking every entry, chain head and stored checkpoint."""
    stored = await entries_of(store, log)
    checkpoints = await store.audit_checkpoints(log)
    signed = {c.size: c.root for c in checkpoints}
    state = verify_log(
        [e.entry for e in stored],
        origin=log,
        chain_heads=[e.chain for e in stored],
        checkpoints=signed,
    )
    return state.size


class Flaky(MemoryStore):
    """A memory store whose appends can be made to fail before or after they land."""

    def __init__(self) -> None:
        super().__init__(clock=CLOCK)
        self.fail: str | None = None  # "before" | "after"

    async def append_audit_entries(
        self, entries: Sequence[LogEntry], nodes: Sequence[TreeNode], *, adopt: bool = False
    ) -> list[int]:
        if self.fail == "before":
            raise ConnectionError("the database went away")
        numbers = await super().append_audit_entries(entries, nodes, adopt=adopt)
        if self.fail == "after":
            raise ConnectionError("the commit landed but its answer was lost")
        return numbers


# -- appending -----------------------------------------------------------------------------


async def test_appended_records_become_consecutive_entries_of_a_log_that_verifies() -> None:
    store = MemoryStore(clock=CLOCK)
    log = await open_log(store, CLOCK)
    receipts = await asyncio.gather(*(log.append(record(n)) for n in range(50)))
    await log.close()
    assert sorted(r.index or 0 for r in receipts) == list(range(50))
    assert await verified(store) == 50
    first = json.loads((await entries_of(store))[0].entry)
    assert first["log"] == ORIGIN
    assert first["index"] == 0


async def test_the_log_continues_its_chain_after_a_restart() -> None:
    store = MemoryStore(clock=CLOCK)
    first = await open_log(store, CLOCK)
    for n in range(5):
        await first.append(record(n))
    await first.close()
    second = await open_log(store, CLOCK)
    receipt = await second.append(record(5))
    await second.close()
    assert receipt.index == 5
    assert await verified(store) == 6


async def test_a_record_refused_by_the_store_fails_only_its_own_caller() -> None:
    store = MemoryStore(clock=CLOCK)
    log = await open_log(store, CLOCK)
    taken = record(1)
    await log.append(taken)
    results = await asyncio.gather(
        log.append(record(2)), log.append(taken), log.append(record(3)), return_exceptions=True
    )
    await log.close()
    assert isinstance(results[1], Conflict)
    assert not isinstance(results[0], BaseException)
    assert not isinstance(results[2], BaseException)
    assert await verified(store) == 3


@pytest.mark.parametrize(
    "bad",
    [
        {"time": CLOCK.now().replace(tzinfo=None)},
        {"details": {"score": float("nan")}},
        {"details": {"n": 2**60}},
    ],
    ids=["naive-time", "nan", "integer-beyond-2^53"],
)
async def test_a_record_json_cannot_carry_fails_alone_and_its_batch_lands(
    bad: dict[str, Any],
) -> None:
    problems: list[str] = []
    store = MemoryStore(clock=CLOCK)
    log = await open_log(store, CLOCK, on_problem=lambda kind, _: problems.append(kind))
    results = await asyncio.gather(
        log.append(record(1)), log.append(record(2, **bad)), log.append(record(3)),
        return_exceptions=True,
    )  # fmt: skip
    await log.close()
    assert isinstance(results[1], InvalidInput)
    assert [r.index for r in results if isinstance(r, AuditReceipt)] == [0, 1]
    assert await verified(store) == 2
    assert "audit.sink_failed" not in problems, "a bad record is not a failing sink"


async def test_a_second_writer_on_the_same_log_is_refused_and_never_forks_it() -> None:
    store = MemoryStore(clock=CLOCK)
    one, two = await open_log(store, CLOCK), await open_log(store, CLOCK)
    await one.append(record(1))
    with pytest.raises(LogPositionTaken):
        await two.append(record(2))
    await one.close()
    await two.close()
    assert await verified(store) == 1


# -- fail closed, recover by itself ----------------------------------------------------------


class FailsFirstWrite(MemoryStore):
    """A memory store whose first append fails before anything is written."""

    def __init__(self) -> None:
        super().__init__(clock=CLOCK)
        self.outcomes: list[str] = []

    async def append_audit_entries(
        self, entries: Sequence[LogEntry], nodes: Sequence[TreeNode], *, adopt: bool = False
    ) -> list[int]:
        if not self.outcomes:
            self.outcomes.append("failed")
            raise ConnectionError("the database went away")
        try:
            numbers = await super().append_audit_entries(entries, nodes, adopt=adopt)
        except LogPositionTaken:
            self.outcomes.append("position taken")
            raise
        self.outcomes.append(f"wrote {len(entries)}")
        return numbers


async def test_a_batch_built_on_one_that_failed_is_written_again_never_lost_nor_forked() -> None:
    # With two batches in the store's hands, a backlog is split in two, the second built on
    # the first and handed over before the first has landed. The first fails: the second is
    # refused by the store (it does not start at the log's end), and its records are written
    # again — not reported as a conflict, not lost, never after a gap.
    store = FailsFirstWrite()
    problems: list[str] = []
    log = await open_log(store, CLOCK, depth=2, on_problem=lambda kind, _: problems.append(kind))
    results = await asyncio.gather(
        *(log.append(record(n)) for n in range(100)), return_exceptions=True
    )
    await log.close()
    failed = [r for r in results if isinstance(r, BaseException)]
    written = [r for r in results if isinstance(r, AuditReceipt)]
    assert store.outcomes == ["failed", "position taken", f"wrote {len(written)}"]
    assert failed
    assert all(isinstance(r, AuditUnavailable) for r in failed)
    assert len(failed) + len(written) == 100
    assert sorted(r.index or 0 for r in written) == list(range(len(written)))
    assert await verified(store) == len(written)
    assert problems[:2] == ["audit.sink_failed", "audit.sink_recovered"]


async def test_a_failing_store_fails_the_append_raises_an_alert_and_recovery_is_automatic() -> None:
    store = Flaky()
    problems: list[str] = []
    log = await open_log(store, CLOCK, on_problem=lambda kind, _details: problems.append(kind))
    await log.append(record(1))
    store.fail = "before"
    with pytest.raises(AuditUnavailable):
        await log.append(record(2))
    with pytest.raises(AuditUnavailable):
        await log.append(record(3))
    store.fail = None
    receipt = await log.append(record(4))
    await log.close()
    assert receipt.index == 1
    assert problems == ["audit.sink_failed", "audit.sink_recovered"]
    assert await verified(store) == 2


async def test_a_commit_whose_answer_was_lost_is_found_again_not_overwritten() -> None:
    store = Flaky()
    log = await open_log(store, CLOCK)
    store.fail = "after"
    with pytest.raises(AuditUnavailable):
        await log.append(record(1))
    store.fail = None
    receipt = await log.append(record(2))
    await log.close()
    assert receipt.index == 1, "entry 0 landed: the log reads its end again before writing"
    assert await verified(store) == 2


# -- checkpoints ---------------------------------------------------------------------------


async def test_a_checkpoint_is_signed_every_n_records_and_names_the_merkle_root() -> None:
    store = MemoryStore(clock=CLOCK)
    log = await open_log(store, CLOCK, checkpoint_every=10, checkpoint_seconds=60)
    for n in range(25):
        await log.append(record(n))
    for _ in range(100):  # the checkpointer runs beside the writer
        latest = await store.latest_audit_checkpoint(ORIGIN)
        if latest is not None and latest.size >= 20:
            break
        await asyncio.sleep(0.01)
    checkpoints = await store.audit_checkpoints(ORIGIN)
    await log.close()
    assert {10, 20} <= {c.size for c in checkpoints}
    leaves = [leaf_hash(e.entry) for e in await entries_of(store)]
    for checkpoint in checkpoints:
        head = log.open_checkpoint(checkpoint.note)
        assert head == TreeHead(origin=ORIGIN, size=checkpoint.size, root=checkpoint.root)
        assert checkpoint.root == root_hash(leaves[: checkpoint.size])


async def test_a_checkpoint_follows_within_the_interval_when_records_are_few() -> None:
    store = MemoryStore(clock=CLOCK)
    log = await open_log(store, CLOCK, checkpoint_seconds=0.05)
    await log.append(record(1))
    for _ in range(200):
        latest = await store.latest_audit_checkpoint(ORIGIN)
        if latest is not None and latest.size == 1:
            break
        await asyncio.sleep(0.01)
    await log.close()
    assert latest is not None
    assert latest.size == 1


async def test_a_checkpoint_signed_by_another_key_is_refused() -> None:
    store = MemoryStore(clock=CLOCK)
    log = await open_log(store, CLOCK)
    await log.append(record(1))
    checkpoint = await log.sign()
    await log.close()
    assert checkpoint is not None
    other = await open_log(MemoryStore(clock=CLOCK), CLOCK, signer=signer(2))
    await other.close()
    with pytest.raises(NoteInvalid):
        other.open_checkpoint(checkpoint.note)


# -- opening checks the tail ---------------------------------------------------------------


async def _log_of(size: int, **options: Any) -> tuple[MemoryStore, AuditLog]:
    store = MemoryStore(clock=CLOCK)
    log = await open_log(store, CLOCK, **options)
    for n in range(size):
        await log.append(record(n))
    return store, log


async def test_an_entry_changed_after_the_last_checkpoint_stops_the_log_at_open() -> None:
    store, log = await _log_of(10)
    await log.close()  # signs size 10
    more = await open_log(store, CLOCK)
    for n in range(10, 15):
        await more.append(record(n))
    # Close without signing: the tail 10..14 is unsigned, as after a crash.
    more._checkpointer.cancel()  # type: ignore[union-attr]
    entries = store._entries[ORIGIN]
    entries[12] = replace(entries[12], entry=entries[12].entry.replace(b"agent-12", b"agent-99"))
    reopened = await open_log(store, CLOCK)
    assert reopened.invalid is not None
    assert reopened.invalid.index == 12
    with pytest.raises(AuditLogInvalid):
        await reopened.append(record(99))
    await reopened.close()


async def test_an_entry_changed_before_the_last_checkpoint_is_found_by_its_root() -> None:
    store, log = await _log_of(300)
    await log.close()
    entries = store._entries[ORIGIN]
    entries[299] = replace(entries[299], entry=entries[299].entry.replace(b"agent", b"agenT"))
    reopened = await open_log(store, CLOCK)
    await reopened.close()
    assert reopened.invalid is not None
    assert "not the signed one" in reopened.invalid.reason


async def test_cutting_off_the_newest_records_is_found_by_the_witness(tmp_path: Path) -> None:
    witness = FileWitness.open(tmp_path / "witness.jsonl")
    store, log = await _log_of(20, witnesses=[witness])
    await log.close()
    # The attacker drops the last five entries and every checkpoint from the database.
    store._entries[ORIGIN] = store._entries[ORIGIN][:15]
    store._checkpoints.clear()
    reopened = await open_log(
        store, CLOCK, witnesses=[FileWitness.open(tmp_path / "witness.jsonl")]
    )
    await reopened.close()
    assert reopened.invalid is not None
    assert "truncated" in reopened.invalid.reason


async def test_without_a_witness_the_same_cut_goes_unnoticed_which_is_why_witnesses_exist() -> None:
    store, log = await _log_of(20)
    await log.close()
    store._entries[ORIGIN] = store._entries[ORIGIN][:15]
    store._checkpoints.clear()
    reopened = await open_log(store, CLOCK)
    await reopened.close()
    assert reopened.invalid is None


def test_a_torn_last_line_of_a_witness_file_is_cut_off_at_open(tmp_path: Path) -> None:
    path = tmp_path / "witness.jsonl"
    good = b'{"log":"a","size":1,"note":"x"}\n'
    path.write_bytes(good + b'{"log":"a","size":2,"no')
    witness = FileWitness.open(path)
    assert path.read_bytes() == good
    assert asyncio.run(witness.latest("a")) == b"x"


def test_a_damaged_line_before_the_last_refuses_the_witness_file(tmp_path: Path) -> None:
    path = tmp_path / "witness.jsonl"
    path.write_bytes(b"not json\n" + b'{"log":"a","size":1,"note":"x"}\n')
    with pytest.raises(WitnessDamaged, match="line 1"):
        FileWitness.open(path)


async def test_a_witness_that_is_down_raises_an_alert_but_never_blocks_the_log() -> None:
    class Down:
        name = "down"

        async def publish(self, checkpoint: SignedCheckpoint) -> None:
            raise ConnectionError("refused")

        async def latest(self, log: str) -> bytes | None:
            return None

    problems: list[str] = []
    _store, log = await _log_of(
        3, witnesses=[Down()], on_problem=lambda kind, _d: problems.append(kind)
    )
    checkpoint = await log.sign()
    await log.close()
    assert checkpoint is not None
    assert checkpoint.size == 3
    assert "audit.witness_failed" in problems


# -- proofs from stored subtrees ---------------------------------------------------------------


class Counting(MemoryStore):
    def __init__(self) -> None:
        super().__init__(clock=CLOCK)
        self.entries_read = 0

    async def audit_entries(self, log: str, *, start: int, stop: int) -> list[StoredEntry]:
        found = await super().audit_entries(log, start=start, stop=stop)
        self.entries_read += len(found)
        return found

    async def audit_tree_nodes(
        self, log: str, keys: Collection[tuple[int, int]]
    ) -> dict[tuple[int, int], bytes]:
        return await super().audit_tree_nodes(log, keys)


async def test_a_proof_in_a_large_log_reads_two_tiles_not_the_log() -> None:
    store = Counting()
    log = await open_log(store, CLOCK)
    for start in range(0, 3000, 500):
        await asyncio.gather(*(log.append(record(n)) for n in range(start, start + 500)))
    await log.close()
    checkpoint = await store.latest_audit_checkpoint(ORIGIN)
    assert checkpoint is not None
    assert checkpoint.size == 3000
    store.entries_read = 0
    proof = await inclusion_proof_at(store, ORIGIN, 1234, 3000)
    assert store.entries_read <= 2 * 256
    [entry] = await store.audit_entries(ORIGIN, start=1234, stop=1235)
    verify_inclusion(
        leaf_hash(entry.entry), index=1234, size=3000, proof=proof, root=checkpoint.root
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=5))
def test_every_record_has_an_inclusion_proof_and_checkpoints_are_consistent(
    batches: list[int],
) -> None:
    async def run() -> None:
        store = MemoryStore(clock=CLOCK)
        log = await open_log(store, CLOCK, checkpoint_seconds=60)
        heads: list[SignedCheckpoint] = []
        count = 0
        for size in batches:
            await asyncio.gather(*(log.append(record(count + n)) for n in range(size)))
            count += size
            checkpoint = await log.sign()
            assert checkpoint is not None
            heads.append(checkpoint)
        await log.close()
        entries = await entries_of(store)
        last = heads[-1]
        for index in {0, count // 2, count - 1}:
            proof = await inclusion_proof_at(store, ORIGIN, index, last.size)
            leaf = leaf_hash(entries[index].entry)
            verify_inclusion(leaf, index=index, size=last.size, proof=proof, root=last.root)
        for older, newer in itertools.pairwise(heads):
            proof = await consistency_proof_at(store, ORIGIN, older.size, newer.size)
            verify_consistency(older.size, newer.size, older.root, newer.root, proof)

    asyncio.run(run())


def test_a_log_invalid_names_its_first_bad_index() -> None:
    error = LogInvalid(7, "it says it is entry 8")
    assert (error.index, str(error)) == (7, "entry 7: it says it is entry 8")


def test_a_record_of_an_unregistered_type_is_refused() -> None:
    with pytest.raises(ValueError, match="not an audit record type"):
        AuditRecord.new(type="agent.teleported", actor="a", subject=None, time=CLOCK.now())


async def test_verifying_a_log_whose_stored_checkpoint_another_key_signed_fails() -> None:
    from tether.audit.reader import verify_stored  # noqa: PLC0415 - the reader under test

    store, log = await _log_of(5)
    await log.close()
    assert (await verify_stored(store, ORIGIN, open_checkpoint=log.open_checkpoint)).ok
    forged_store = MemoryStore(clock=CLOCK)
    forger = await open_log(forged_store, CLOCK, signer=signer(9))
    for n in range(6):
        await forger.append(record(n))
    await forger.close()
    fake = await forged_store.latest_audit_checkpoint(ORIGIN)
    assert fake is not None
    store._checkpoints[ORIGIN][fake.size] = fake
    report = await verify_stored(store, ORIGIN, open_checkpoint=log.open_checkpoint)
    assert not report.ok
    assert report.problem is not None
    assert "not validly signed" in report.problem.reason


async def test_a_well_linked_last_entry_that_is_not_an_entry_is_never_signed() -> None:
    store, log = await _log_of(4)
    await log.close()  # signs 4
    more = await open_log(store, CLOCK)
    await more.append(record(4))
    more._checkpointer.cancel()  # type: ignore[union-attr]
    entries = store._entries[ORIGIN]
    keep = len(b'{"index":4,"log":"') + len(ORIGIN) + len(b'","prev":"') + 64
    junk = entries[4].entry[:keep] + b'" -- not json at all'
    entries[4] = replace(entries[4], entry=junk, chain=leaf_hash(junk))
    reopened = await open_log(store, CLOCK)
    await reopened.close()
    assert reopened.invalid is not None
    assert reopened.invalid.index == 4
    latest = await store.latest_audit_checkpoint(ORIGIN)
    assert latest is not None
    assert latest.size == 4, "nothing more was signed"

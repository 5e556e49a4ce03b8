"""The ``Store`` contract for single-use keys, operator tokens, the key ring and the audit log.

Run against every implementation (memory, SQLite, PostgreSQL) by the ``store`` fixture
(``tests/conftest.py``); the agent half of the contract is in ``test_store_contract.py``.

The audit log is one hash-chained Merkle log per replica (:mod:`tether.audit.log`). Tests of
the store's rules build entries by hand with a :class:`~tests.support.audit.Chainer` per
writer; tests about a writer open a real :class:`~tether.audit.log.AuditLog`.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tests.support.audit import KEY_NAME, ORIGIN, Chainer, open_log, signer
from tether._internal.clock import FixedClock
from tether.audit.chain import verify_log
from tether.audit.merkle import leaf_hash, root_hash
from tether.audit.notes import TreeHead, sign_note
from tether.audit.records import AuditRecord, Outcome
from tether.audit.stored import AuditLocation, LogEntry, SignedCheckpoint, StoredEntry
from tether.audit.tiles import tree_at
from tether.crypto.stored import KeyPurpose, StoredKey
from tether.errors import Conflict, LogPositionTaken, OperatorTokenNotFound, ReplayDetected
from tether.identity.models import OperatorToken, Role
from tether.store.interfaces import Store

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- factories -------------------------------------------------------------------------------


def make_token(n: int = 1, *, created_at: datetime = T0) -> OperatorToken:
    return OperatorToken(
        id=f"opt_{n}",
        token_hash=f"{n:064x}",
        role=Role.SECURITY_ADMIN,
        display_name=f"operator {n}",
        created_at=created_at,
        expires_at=created_at + timedelta(days=30),
        created_by="root",
    )


def make_stored_key(
    kid: str, purpose: KeyPurpose = KeyPurpose.TOKEN_SIGNING, *, created_at: datetime = T0
) -> StoredKey:
    return StoredKey(
        kid=kid,
        purpose=purpose,
        alg="ES256",
        public_pem=b"-----BEGIN PUBLIC KEY-----\n" + kid.encode(),
        sealed_private=bytes(range(256)),
        created_at=created_at,
    )


def make_record(
    type: str = "agent.registered", *, n: int = 1, details: dict[str, object] | None = None
) -> AuditRecord:
    return AuditRecord(
        id=f"rec_{type}_{n}",
        type=type,
        time=at(n),
        actor="operator:sam",
        subject="spiffe://acme.org/agent/faq-bot",
        outcome=Outcome.SUCCESS,
        correlation_id=f"req-{n}",
        details=details or {"n": n},
    )


# -- replay ----------------------------------------------------------------------------------


async def test_replay_key_is_consumed_once(store: Store, clock: FixedClock) -> None:
    expires = clock.now() + timedelta(minutes=5)
    await store.consume_once("assertion:agt_1:jti-1", expires_at=expires)
    with pytest.raises(ReplayDetected):
        await store.consume_once("assertion:agt_1:jti-1", expires_at=expires)
    await store.consume_once("assertion:agt_1:jti-2", expires_at=expires)


async def test_concurrent_consumes_of_one_key_let_exactly_one_succeed(
    store: Store, clock: FixedClock
) -> None:
    expires = clock.now() + timedelta(minutes=5)

    async def attempt(key: str) -> bool:
        try:
            await store.consume_once(key, expires_at=expires)
        except ReplayDetected:
            return False
        return True

    # A double consume, then a crowd; on the SQL stores each task holds its own connection.
    assert sorted(await asyncio.gather(attempt("jti-pair"), attempt("jti-pair"))) == [False, True]
    outcomes = await asyncio.gather(*(attempt("jti-crowd") for _ in range(20)))
    assert outcomes.count(True) == 1


async def test_naive_expiry_is_value_error_and_consumes_nothing(
    store: Store, clock: FixedClock
) -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        await store.consume_once("jti-1", expires_at=clock.now().replace(tzinfo=None))
    await store.consume_once("jti-1", expires_at=clock.now() + timedelta(seconds=30))


async def test_expired_replay_key_can_be_consumed_again(store: Store, clock: FixedClock) -> None:
    await store.consume_once("jti-1", expires_at=clock.now() + timedelta(seconds=30))
    clock.advance(29)
    with pytest.raises(ReplayDetected):
        await store.consume_once("jti-1", expires_at=clock.now() + timedelta(seconds=30))
    clock.advance(1)
    await store.consume_once("jti-1", expires_at=clock.now() + timedelta(seconds=30))
    with pytest.raises(ReplayDetected):
        await store.consume_once("jti-1", expires_at=clock.now() + timedelta(seconds=30))


async def test_purge_removes_only_keys_expired_before(store: Store, clock: FixedClock) -> None:
    for n, seconds in enumerate((10, 20, 30)):
        await store.consume_once(f"jti-{n}", expires_at=clock.now() + timedelta(seconds=seconds))
    assert await store.purge_replay_keys(before=clock.now() + timedelta(seconds=20)) == 1
    assert await store.purge_replay_keys(before=clock.now() + timedelta(seconds=20)) == 0
    with pytest.raises(ReplayDetected):
        await store.consume_once("jti-1", expires_at=clock.now() + timedelta(seconds=20))
    await store.consume_once("jti-0", expires_at=clock.now() + timedelta(seconds=20))


# -- operator tokens -------------------------------------------------------------------------


async def test_operator_token_reads_back_by_hash(store: Store) -> None:
    token = make_token()
    await store.create_operator_token(token)
    assert await store.get_operator_token(token.token_hash) == token
    assert await store.get_operator_token("0" * 64) is None


async def test_operator_tokens_are_listed_oldest_first(store: Store) -> None:
    tokens = [make_token(n, created_at=at(10 - n)) for n in (1, 2, 3)]
    for token in tokens:
        await store.create_operator_token(token)
    assert await store.list_operator_tokens() == tokens[::-1]


async def test_duplicate_operator_token_hash_is_conflict(store: Store) -> None:
    await store.create_operator_token(make_token())
    with pytest.raises(Conflict):
        await store.create_operator_token(replace(make_token(), id="opt_other"))


async def test_revoking_operator_token_keeps_the_first_revocation_time(store: Store) -> None:
    token = make_token()
    await store.create_operator_token(token)
    await store.revoke_operator_token(token.id, at=at(100))
    await store.revoke_operator_token(token.id, at=at(200))
    assert await store.get_operator_token(token.token_hash) == replace(token, revoked_at=at(100))


async def test_revoking_unknown_operator_token_is_not_found(store: Store) -> None:
    with pytest.raises(OperatorTokenNotFound):
        await store.revoke_operator_token("opt_nobody", at=at(1))


# -- stored keys -----------------------------------------------------------------------------


async def test_stored_key_is_saved_then_replaced_by_kid(store: Store) -> None:
    key = make_stored_key("sig-1")
    await store.save_stored_key(key)
    assert await store.list_stored_keys() == [key]
    retired = replace(key, retired_at=at(60), publish_until=at(3600), certificate_pem=b"cert")
    await store.save_stored_key(retired)
    assert await store.list_stored_keys() == [retired]


async def test_stored_keys_are_listed_oldest_first_and_by_purpose(store: Store) -> None:
    newer = make_stored_key("sig-2", created_at=at(20))
    ca = make_stored_key("ca-1", KeyPurpose.X509_CA, created_at=at(5))
    older = make_stored_key("sig-1", created_at=at(10))
    for key in (newer, ca, older):
        await store.save_stored_key(key)
    assert await store.list_stored_keys() == [ca, older, newer]
    assert await store.list_stored_keys(KeyPurpose.TOKEN_SIGNING) == [older, newer]
    assert await store.list_stored_keys(KeyPurpose.AUDIT_CHECKPOINT) == []


# -- audit: helpers --------------------------------------------------------------------------

LOG = ORIGIN
OTHER_LOG = "tether.test/audit/r2"


async def append(store: Store, chainer: Chainer, *records: AuditRecord) -> list[int]:
    """``records`` appended as the writer ``chainer`` would; if the store refuses them the
    chainer stays where it was (a writer reads its end again after a failed write)."""
    tree, chain = chainer.tree.copy(), chainer.chain
    entries, nodes = chainer.entries(records)
    try:
        return await store.append_audit_entries(entries, nodes)
    except Exception:
        chainer.tree, chainer.chain = tree, chain
        raise


def make_checkpoint(chainer: Chainer, *, signed_at: datetime = T0) -> SignedCheckpoint:
    """A signed tree head of what ``chainer`` has built so far."""
    size, root = chainer.tree.size, chainer.tree.root()
    key = signer()
    body = TreeHead(origin=chainer.log, size=size, root=root).body()
    note = sign_note(body, name=KEY_NAME, public_key=key.public_raw(), sign=key.sign)
    return SignedCheckpoint(log=chainer.log, size=size, root=root, note=note, signed_at=signed_at)


def stored(entries: list[LogEntry]) -> list[StoredEntry]:
    return [StoredEntry(index=e.index, entry=e.entry, chain=e.chain) for e in entries]


async def end_index(store: Store, log: str) -> int | None:
    end = await store.audit_log_end(log)
    return None if end is None else end.index


async def place(store: Store, record_id: str) -> tuple[int, str | None, int | None]:
    found = await store.find_audit_record(record_id)
    assert found is not None, record_id
    return found.sequence, found.log, found.index


# -- audit: numbering and reading ------------------------------------------------------------


async def test_audit_append_returns_increasing_sequence(store: Store) -> None:
    chainer = Chainer()
    sequences = [await append(store, chainer, make_record(n=n)) for n in range(1, 4)]
    assert sequences == [[1], [2], [3]]
    assert [r.id for _, r in await store.list_audit()] == [make_record(n=n).id for n in (1, 2, 3)]
    assert await end_index(store, LOG) == 2


async def test_concurrent_audit_appends_get_distinct_sequences(store: Store) -> None:
    """Twenty writers, each on a log of its own, append at once: one numbering, no gap."""
    chainers = [Chainer(f"tether.test/audit/w{n:02}") for n in range(20)]
    results = await asyncio.gather(
        *(append(store, c, make_record(n=n)) for n, c in enumerate(chainers))
    )
    assert sorted(n for numbered in results for n in numbered) == list(range(1, 21))
    assert await store.audit_logs() == [c.log for c in chainers]
    assert [await end_index(store, c.log) for c in chainers] == [0] * 20


async def test_concurrent_appends_through_one_writer_are_numbered_without_gaps(
    store: Store, clock: FixedClock
) -> None:
    """Callers of one log's writer at once share its group commits: every record gets the
    next number and the next index, in the same order, and the checkpoint covers them all."""
    records = [make_record(n=n) for n in range(1, 51)]
    log = await open_log(store, clock, checkpoint_seconds=3600)  # signed here, by the test
    try:
        receipts = await asyncio.gather(*(log.append(r) for r in records))
        head = await log.sign()
    finally:
        await log.close()
    assert sorted(r.sequence for r in receipts) == list(range(1, 51))
    assert {r.index for r in receipts} == set(range(50))
    for receipt in receipts:
        assert await place(store, receipt.record_id) == (receipt.sequence, LOG, receipt.index)
    by_index = sorted(receipts, key=lambda r: r.index or 0)
    assert [r.sequence for r in by_index] == sorted(r.sequence for r in receipts)
    assert head is not None
    assert head.size == 50
    assert await store.latest_audit_checkpoint(LOG) == head


async def test_audit_list_pages_after_sequence(store: Store) -> None:
    await append(store, Chainer(), *(make_record(n=n) for n in range(1, 6)))
    page = await store.list_audit(after_sequence=2, limit=2)
    assert [(seq, r.id) for seq, r in page] == [(3, make_record(n=3).id), (4, make_record(n=4).id)]
    assert await store.list_audit(after_sequence=5) == []
    assert await store.list_audit(limit=0) == []


async def test_audit_type_prefix_is_exact_not_a_pattern(store: Store) -> None:
    types = ("agent.registered", "agentXkey", "AGENT.updated", "client.x")
    await append(store, Chainer(), *(make_record(t, n=n) for n, t in enumerate(types)))
    assert [r.type for _, r in await store.list_audit(type_prefix="agent.")] == ["agent.registered"]
    assert [r.type for _, r in await store.list_audit(type_prefix="agent_")] == []
    assert len(await store.list_audit(type_prefix="")) == 4


async def test_list_audit_filters_by_correlation_id(store: Store) -> None:
    ids = ("req-a", "req-b", None, "req-a", "REQ-A", "req-a", "req-a%")
    records = [
        replace(make_record("client.x" if n == 4 else "agent.updated", n=n), correlation_id=c)
        for n, c in enumerate(ids, start=1)
    ]
    await append(store, Chainer(), *records)

    def numbers(listed: list[tuple[int, AuditRecord]]) -> list[int]:
        return [seq for seq, _ in listed]

    assert numbers(await store.list_audit(correlation_id="req-a")) == [1, 4, 6]
    assert numbers(await store.list_audit(correlation_id="req-a", after_sequence=1, limit=1)) == [4]
    assert numbers(await store.list_audit(correlation_id="req-a", type_prefix="agent.")) == [1, 6]
    assert numbers(await store.list_audit(correlation_id="REQ-A")) == [5]
    assert numbers(await store.list_audit(correlation_id="req-a%")) == [7]
    assert await store.list_audit(correlation_id="req") == []


async def test_audit_record_reads_back_equal_with_its_details(store: Store) -> None:
    details: dict[str, object] = {"kid": "k", "scopes": ["a", "b"], "n": 3, "nested": {"ok": True}}
    record = make_record(details=details)
    record = replace(record, outcome=Outcome.FAILURE, correlation_id=None, subject=None)
    await append(store, Chainer(), record)
    assert await store.list_audit() == [(1, record)]
    assert await store.find_audit_record(record.id) == AuditLocation(
        sequence=1, record=record, log=LOG, index=0
    )


async def test_a_batch_of_audit_records_is_numbered_in_order(store: Store) -> None:
    chainer = Chainer()
    [first] = await append(store, chainer, make_record(n=100))
    batch = [make_record(n=i) for i in range(1, 6)]
    assert await append(store, chainer, *batch) == list(range(first + 1, first + 6))
    listed = await store.list_audit(after_sequence=first, limit=10)
    assert [r.id for _, r in listed] == [r.id for r in batch]
    assert [await place(store, r.id) for r in batch] == [(first + i, LOG, i) for i in range(1, 6)]
    assert await store.append_audit_entries([], []) == []


async def test_batches_and_single_appends_on_two_replicas_leave_no_gap_and_no_twin(
    store: Store, replica: Store
) -> None:
    """Group commits on two replicas at once, each on its own log: each batch is numbered
    last + 1 onwards under the write lock, so the numbers interleave without a gap or a
    number given twice, while each log's indexes run 0, 1, 2, … on their own."""
    batches = [[make_record(n=100 * k + i) for i in range(5)] for k in range(8)]
    chainers = {0: Chainer(LOG), 1: Chainer(OTHER_LOG)}

    async def writer(side: int) -> list[list[int]]:
        target, chainer = (replica, store)[side], chainers[side]
        numbered: list[list[int]] = []
        for k in range(side, 8, 2):
            if k % 3 == 0:  # one record per commit
                numbered.append([n for r in batches[k] for n in await append(target, chainer, r)])
            else:
                numbered.append(await append(target, chainer, *batches[k]))
        return numbered

    results = [n for side in await asyncio.gather(writer(0), writer(1)) for n in side]
    numbers = sorted(n for numbered in results for n in numbered)
    assert numbers == list(range(1, 41))
    for numbered in results:  # a batch's records are numbered in its order
        assert numbered == sorted(numbered)
    listed = await store.list_audit(limit=100)
    assert [seq for seq, _ in listed] == numbers
    for chainer in chainers.values():
        entries = await replica.audit_entries(chainer.log, start=0, stop=100)
        assert [e.index for e in entries] == list(range(20))
        assert entries[-1].chain == chainer.chain


# -- audit: one writer per log ---------------------------------------------------------------


async def test_a_second_writer_on_the_same_log_is_refused_not_forked(
    store: Store, replica: Store
) -> None:
    """Two replicas given one id: the second writer's entry 0 is refused, nothing of it is
    written, and the first writer goes on as if nothing happened."""
    first, second = Chainer(), Chainer()
    written, _ = first.entries([make_record(n=1), make_record(n=2)])
    assert await store.append_audit_entries(written, []) == [1, 2]
    with pytest.raises(LogPositionTaken):
        await append(replica, second, make_record(n=3))
    assert await store.audit_entries(LOG, start=0, stop=10) == stored(written)
    assert [r.id for _, r in await store.list_audit()] == [make_record(n=n).id for n in (1, 2)]
    assert await store.find_audit_record(make_record(n=3).id) is None
    assert await append(store, first, make_record(n=3)) == [3]
    assert await store.audit_logs() == [LOG]


async def test_an_append_that_would_leave_a_hole_in_the_log_is_refused(store: Store) -> None:
    ahead = Chainer()
    ahead.entries([make_record(n=n) for n in range(1, 4)])  # built, never stored
    with pytest.raises(LogPositionTaken):
        await append(store, ahead, make_record(n=4))
    assert await store.audit_log_end(LOG) is None
    assert await store.list_audit() == []
    assert await store.audit_logs() == []


async def test_two_writers_racing_for_one_position_leave_exactly_one_entry(
    store: Store, replica: Store
) -> None:
    """Four writers on one log (two per replica) append entry 0 at once: one wins, the
    others are told the position is taken (not a duplicate record, not a fork)."""
    targets = (store, replica, store, replica)
    await asyncio.gather(*(t.list_audit(limit=1) for t in targets))  # connections ready
    for round_ in range(5):
        log = f"tether.test/audit/race{round_}"
        outcomes = await asyncio.gather(
            *(
                append(target, Chainer(log), make_record(n=10 * round_ + k))
                for k, target in enumerate(targets)
            ),
            return_exceptions=True,
        )
        assert sorted(type(o).__name__ for o in outcomes) == ["LogPositionTaken"] * 3 + ["list"]
        assert len(await store.audit_entries(log, start=0, stop=10)) == 1
    assert [seq for seq, _ in await store.list_audit()] == [1, 2, 3, 4, 5]


async def test_two_writers_given_one_log_do_not_fork_it(
    store: Store, replica: Store, clock: FixedClock
) -> None:
    """The same rule as the writers meet it: both opened the log empty; the one that commits
    second is refused and told so."""
    first = await open_log(store, clock)
    second = await open_log(replica, clock)
    try:
        receipt = await first.append(make_record(n=1))
        with pytest.raises(LogPositionTaken):
            await second.append(make_record(n=2))
    finally:
        await first.close()
        await second.close()
    assert (receipt.sequence, receipt.index) == (1, 0)
    assert [e.index for e in await store.audit_entries(LOG, start=0, stop=10)] == [0]
    assert [r.id for _, r in await store.list_audit()] == [make_record(n=1).id]


async def test_two_logs_append_side_by_side_with_one_global_numbering(
    store: Store, replica: Store
) -> None:
    one, two = Chainer(LOG), Chainer(OTHER_LOG)
    assert await append(store, one, make_record(n=1), make_record(n=2)) == [1, 2]
    assert await append(replica, two, make_record(n=3)) == [3]
    assert await append(store, one, make_record(n=4)) == [4]
    assert await append(replica, two, make_record(n=5), make_record(n=6)) == [5, 6]
    assert await store.audit_logs() == [LOG, OTHER_LOG]
    for chainer in (one, two):
        end = await replica.audit_log_end(chainer.log)
        assert end is not None
        assert (end.index, end.chain) == (2, chainer.chain)
    assert [await place(store, make_record(n=n).id) for n in range(1, 7)] == [
        (1, LOG, 0),
        (2, LOG, 1),
        (3, OTHER_LOG, 0),
        (4, LOG, 2),
        (5, OTHER_LOG, 1),
        (6, OTHER_LOG, 2),
    ]
    assert [seq for seq, _ in await replica.list_audit()] == list(range(1, 7))


# -- audit: entries, subtrees, refusals ------------------------------------------------------


async def test_entries_read_back_byte_exact_with_their_chain_heads(store: Store) -> None:
    chainer = Chainer()
    records = [make_record(n=n) for n in range(1, 11)]
    records[0] = make_record(n=1, details={"name": "café ✓", "quote": '"</script>\\', "n": -1})
    written: list[LogEntry] = []
    for batch in (records[:1], records[1:4], records[4:]):
        entries, nodes = chainer.entries(batch)
        await store.append_audit_entries(entries, nodes)
        written += entries
    expected = stored(written)
    got = await store.audit_entries(LOG, start=0, stop=10)
    assert got == expected
    assert all(type(e.entry) is bytes and type(e.chain) is bytes for e in got)
    state = verify_log([e.entry for e in got], origin=LOG, chain_heads=[e.chain for e in got])
    assert (state.size, state.chain, state.root) == (10, chainer.chain, chainer.tree.root())
    assert await store.audit_entries(LOG, start=3, stop=7) == expected[3:7]
    assert await store.audit_entries(LOG, start=8, stop=100) == expected[8:]
    assert await store.audit_entries(LOG, start=10, stop=20) == []
    assert await store.audit_entries(OTHER_LOG, start=0, stop=10) == []
    assert await store.audit_log_end(LOG) == expected[-1]
    assert await store.audit_log_end(OTHER_LOG) is None


async def test_subtree_nodes_are_stored_with_their_batch(store: Store) -> None:
    chainer = Chainer()
    written: list[LogEntry] = []
    for first in (0, 100, 200):  # the third batch completes leaves 0‥255
        entries, nodes = chainer.entries([make_record(n=n) for n in range(first, first + 100)])
        assert [(level, index) for level, index, _ in nodes] == ([(8, 0)] if first == 200 else [])
        assert await store.audit_tree_nodes(LOG, [(8, 0)]) == {}
        await store.append_audit_entries(entries, nodes)
        written += entries
    leaves = [leaf_hash(e.entry) for e in written]
    found = await store.audit_tree_nodes(LOG, [(8, 0), (8, 1), (9, 0)])
    assert found == {(8, 0): root_hash(leaves[:256])}
    assert type(found[(8, 0)]) is bytes
    assert await store.audit_tree_nodes(OTHER_LOG, [(8, 0)]) == {}
    assert await store.audit_tree_nodes(LOG, []) == {}
    tree = await tree_at(store, LOG, 300)  # the stored node and the 44 leaves after it
    assert tree.root() == root_hash(leaves) == chainer.tree.root()


async def test_appending_the_same_audit_record_twice_is_conflict(
    store: Store, replica: Store
) -> None:
    one, two = Chainer(LOG), Chainer(OTHER_LOG)
    await append(store, one, make_record())
    with pytest.raises(Conflict) as again:
        await append(store, one, make_record())
    with pytest.raises(Conflict) as elsewhere:
        await append(replica, two, make_record())
    for refused in (again, elsewhere):  # a taken record id, not a taken position
        assert not isinstance(refused.value, LogPositionTaken)
    assert len(await store.list_audit()) == 1
    assert await store.audit_logs() == [LOG]
    assert await end_index(store, LOG) == 0


async def test_refused_audit_appends_leave_no_gap_in_the_sequence(store: Store) -> None:
    chainer = Chainer()
    assert await append(store, chainer, make_record(n=1)) == [1]
    with pytest.raises(Conflict):
        await append(store, chainer, make_record(n=1))
    with pytest.raises(LogPositionTaken):
        await append(store, Chainer(), make_record(n=3))
    assert await append(store, chainer, make_record(n=2)) == [2]
    assert [seq for seq, _ in await store.list_audit()] == [1, 2]
    assert [e.index for e in await store.audit_entries(LOG, start=0, stop=10)] == [0, 1]


async def test_a_refused_batch_writes_none_of_its_records(store: Store) -> None:
    """Neither its records, nor their entries, nor the subtree hash it would complete."""
    chainer = Chainer()
    kept = make_record(n=1000)
    await append(store, chainer, kept, *(make_record(n=n) for n in range(1, 255)))  # 255
    with pytest.raises(Conflict) as refused:  # would complete leaves 0‥255 but holds a twin
        await append(store, chainer, make_record(n=255), kept, make_record(n=256))
    assert not isinstance(refused.value, LogPositionTaken)
    with pytest.raises(Conflict):  # one record twice in one batch
        await append(store, chainer, make_record(n=255), make_record(n=255))
    assert len(await store.list_audit(limit=1000)) == 255
    assert await end_index(store, LOG) == 254
    assert await store.audit_tree_nodes(LOG, [(8, 0)]) == {}
    for n in (255, 256):
        assert await store.find_audit_record(make_record(n=n).id) is None
    assert await append(store, chainer, make_record(n=255), make_record(n=256)) == [256, 257]
    assert list(await store.audit_tree_nodes(LOG, [(8, 0)])) == [(8, 0)]


async def test_find_audit_record_names_its_log_and_index(store: Store, replica: Store) -> None:
    await append(store, Chainer(LOG), make_record(n=1), make_record(n=2))
    await append(replica, Chainer(OTHER_LOG), make_record(n=3))
    assert await store.find_audit_record(make_record(n=2).id) == AuditLocation(
        sequence=2, record=make_record(n=2), log=LOG, index=1
    )
    assert await replica.find_audit_record(make_record(n=3).id) == AuditLocation(
        sequence=3, record=make_record(n=3), log=OTHER_LOG, index=0
    )
    assert await store.find_audit_record("rec_nobody") is None
    assert await store.unchained_audit_records(limit=10) == []


# -- audit: checkpoints ----------------------------------------------------------------------


async def test_a_checkpoint_is_stored_once_and_a_different_root_at_the_same_size_is_conflict(
    store: Store,
) -> None:
    chainer = Chainer()
    await append(store, chainer, *(make_record(n=n) for n in (1, 2, 3)))
    signed = make_checkpoint(chainer, signed_at=at(10))
    await store.add_audit_checkpoint(signed)
    await store.add_audit_checkpoint(replace(signed, signed_at=at(20)))  # the same head again
    assert await store.audit_checkpoints(LOG) == [signed]
    fork = Chainer()
    fork.entries([make_record(n=n) for n in (4, 5, 6)])
    forged = make_checkpoint(fork, signed_at=at(30))
    assert (forged.size, forged.log) == (signed.size, signed.log)
    assert forged.root != signed.root
    with pytest.raises(Conflict):
        await store.add_audit_checkpoint(forged)
    assert await store.latest_audit_checkpoint(LOG) == signed
    assert await store.audit_checkpoints(LOG) == [signed]


async def test_checkpoints_are_listed_smallest_first_after_a_size(store: Store) -> None:
    chainer, other = Chainer(LOG), Chainer(OTHER_LOG)
    signed: list[SignedCheckpoint] = []
    for n in range(1, 6):
        await append(store, chainer, make_record(n=n))
        signed.append(make_checkpoint(chainer, signed_at=at(n)))
    await append(store, other, make_record(n=99))
    for checkpoint in reversed(signed):  # stored largest first: the order is by size
        await store.add_audit_checkpoint(checkpoint)
    await store.add_audit_checkpoint(make_checkpoint(other))
    assert await store.latest_audit_checkpoint(LOG) == signed[-1]
    assert await store.audit_checkpoints(LOG) == signed
    assert await store.audit_checkpoints(LOG, after_size=2, limit=2) == signed[2:4]
    assert await store.audit_checkpoints(LOG, after_size=5) == []
    assert await store.audit_checkpoints(LOG, limit=0) == []
    assert [c.size for c in await store.audit_checkpoints(OTHER_LOG)] == [1]
    assert await store.latest_audit_checkpoint("tether.test/audit/none") is None


# -- time ------------------------------------------------------------------------------------


async def test_record_times_come_back_aware_utc_and_equal(store: Store) -> None:
    tokyo = timezone(timedelta(hours=9))
    moment = datetime(2026, 6, 1, 23, 30, 15, 654321, tzinfo=tokyo)
    token = replace(make_token(), created_at=moment, expires_at=moment + timedelta(days=1))
    await store.create_operator_token(token)
    await store.save_stored_key(make_stored_key("sig-1", created_at=moment))
    chainer = Chainer()
    await append(store, chainer, replace(make_record(), time=moment))
    await store.add_audit_checkpoint(make_checkpoint(chainer, signed_at=moment))
    got = await store.get_operator_token(token.token_hash)
    [key] = await store.list_stored_keys()
    [(_, record)] = await store.list_audit()
    checkpoint = await store.latest_audit_checkpoint(LOG)
    assert got is not None
    assert checkpoint is not None
    assert got.expires_at == moment + timedelta(days=1)
    times = (got.created_at, key.created_at, record.time, checkpoint.signed_at)
    for value in (*times, got.expires_at):
        assert value.utcoffset() == timedelta(0)
    assert times == (moment,) * 4


async def test_a_naive_checkpoint_time_is_value_error_and_stores_nothing(store: Store) -> None:
    chainer = Chainer()
    await append(store, chainer, make_record())
    naive = make_checkpoint(chainer, signed_at=T0.replace(tzinfo=None))
    with pytest.raises(ValueError, match="naive datetime"):
        await store.add_audit_checkpoint(naive)
    assert await store.latest_audit_checkpoint(LOG) is None

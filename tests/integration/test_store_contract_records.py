"""The ``Store`` contract for single-use keys, operator tokens, the key ring and the audit log.

Run against every implementation (memory, SQLite, PostgreSQL) by the ``store`` fixture
(``tests/conftest.py``); the agent half of the contract is in ``test_store_contract.py``.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tether._internal.clock import FixedClock
from tether.audit.records import AuditRecord, Outcome
from tether.crypto.stored import KeyPurpose, StoredKey
from tether.errors import Conflict, OperatorTokenNotFound, ReplayDetected
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


# -- audit -----------------------------------------------------------------------------------


async def test_audit_append_returns_increasing_sequence(store: Store) -> None:
    sequences = [await store.append_audit(make_record(n=n)) for n in range(1, 4)]
    assert sequences == [1, 2, 3]
    assert [r.id for _, r in await store.list_audit()] == [make_record(n=n).id for n in (1, 2, 3)]


async def test_concurrent_audit_appends_get_distinct_sequences(store: Store) -> None:
    sequences = await asyncio.gather(*(store.append_audit(make_record(n=n)) for n in range(20)))
    assert sorted(sequences) == list(range(1, 21))


async def test_audit_list_pages_after_sequence(store: Store) -> None:
    for n in range(1, 6):
        await store.append_audit(make_record(n=n))
    page = await store.list_audit(after_sequence=2, limit=2)
    assert [(seq, r.id) for seq, r in page] == [(3, make_record(n=3).id), (4, make_record(n=4).id)]
    assert await store.list_audit(after_sequence=5) == []


async def test_audit_type_prefix_is_exact_not_a_pattern(store: Store) -> None:
    for n, type in enumerate(("agent.registered", "agentXkey", "AGENT.updated", "client.x")):
        await store.append_audit(make_record(type, n=n))
    assert [r.type for _, r in await store.list_audit(type_prefix="agent.")] == ["agent.registered"]
    assert [r.type for _, r in await store.list_audit(type_prefix="agent_")] == []
    assert len(await store.list_audit(type_prefix="")) == 4


async def test_audit_record_reads_back_equal_with_its_details(store: Store) -> None:
    details: dict[str, object] = {"kid": "k", "scopes": ["a", "b"], "n": 3, "nested": {"ok": True}}
    record = make_record(details=details)
    record = replace(record, outcome=Outcome.FAILURE, correlation_id=None, subject=None)
    await store.append_audit(record)
    assert await store.list_audit() == [(1, record)]


async def test_appending_the_same_audit_record_twice_is_conflict(store: Store) -> None:
    await store.append_audit(make_record())
    with pytest.raises(Conflict):
        await store.append_audit(make_record())
    assert len(await store.list_audit()) == 1


async def test_refused_audit_appends_leave_no_gap_in_the_sequence(store: Store) -> None:
    assert await store.append_audit(make_record(n=1)) == 1
    with pytest.raises(Conflict):
        await store.append_audit(make_record(n=1))
    naive = replace(make_record(n=2), time=at(2).replace(tzinfo=None))
    with pytest.raises(ValueError, match="naive datetime"):
        await store.append_audit(naive)
    assert await store.append_audit(make_record(n=2)) == 2
    assert [seq for seq, _ in await store.list_audit()] == [1, 2]


# -- time ------------------------------------------------------------------------------------


async def test_record_times_come_back_aware_utc_and_equal(store: Store) -> None:
    tokyo = timezone(timedelta(hours=9))
    moment = datetime(2026, 6, 1, 23, 30, 15, 654321, tzinfo=tokyo)
    token = replace(make_token(), created_at=moment, expires_at=moment + timedelta(days=1))
    await store.create_operator_token(token)
    await store.save_stored_key(make_stored_key("sig-1", created_at=moment))
    await store.append_audit(replace(make_record(), time=moment))
    got = await store.get_operator_token(token.token_hash)
    [key] = await store.list_stored_keys()
    [(_, record)] = await store.list_audit()
    assert got is not None
    assert got.expires_at == moment + timedelta(days=1)
    for value in (got.created_at, got.expires_at, key.created_at, record.time):
        assert value.utcoffset() == timedelta(0)
    assert (got.created_at, key.created_at, record.time) == (moment, moment, moment)


async def test_a_batch_of_audit_records_is_numbered_in_order(store: Store) -> None:
    first = await store.append_audit(make_record(n=100))
    batch = [make_record(n=i) for i in range(1, 6)]
    assert await store.append_audit_many(batch) == list(range(first + 1, first + 6))
    listed = await store.list_audit(after_sequence=first, limit=10)
    assert [r.id for _, r in listed] == [r.id for r in batch]
    assert await store.append_audit_many([]) == []


async def test_batches_and_single_appends_on_two_replicas_leave_no_gap_and_no_twin(
    store: Store, replica: Store
) -> None:
    """Group commits on two replicas at once: each batch is numbered last + 1 onwards under
    the write lock, so the numbers interleave without a gap or a number given twice."""
    batches = [[make_record(n=100 * k + i) for i in range(5)] for k in range(8)]

    async def write(k: int, batch: list[AuditRecord]) -> list[int]:
        target = store if k % 2 else replica
        if k % 3 == 0:
            return [await target.append_audit(r) for r in batch]
        return await target.append_audit_many(batch)

    results = await asyncio.gather(*(write(k, b) for k, b in enumerate(batches)))
    numbers = sorted(n for numbered in results for n in numbered)
    assert numbers == list(range(numbers[0], numbers[0] + 40))
    for numbered in results:  # a batch's records are numbered in its order
        assert numbered == sorted(numbered)
    listed = await store.list_audit(limit=100)
    assert [seq for seq, _ in listed] == numbers


async def test_a_refused_batch_writes_none_of_its_records(store: Store) -> None:
    kept = make_record(n=100)
    await store.append_audit(kept)
    with pytest.raises(Conflict):
        await store.append_audit_many([make_record(n=1), kept, make_record(n=2)])
    assert [r.id for _, r in await store.list_audit(limit=10)] == [kept.id]

"""The ``Store`` contract for revoked agent tokens (JWT-SVIDs).

Run against every implementation (memory, SQLite, PostgreSQL) by the ``store`` fixture
(``tests/conftest.py``). ``replica`` is a second store on the same database for the SQL
backends, as another server replica has, and the same store for memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tether.errors import Conflict, VersionConflict
from tether.identity.models import AgentState
from tether.identity.revocations import Revocation, RevocationKind
from tether.store.interfaces import Store
from tether.store.sql import SqlStore, open_sql_store

from .test_store_contract import make_assessment, register

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LIFETIME = timedelta(seconds=330)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_revocation(
    n: int = 1,
    *,
    kind: RevocationKind = RevocationKind.AGENT,
    target: str = "faq-bot",
    revoked_at: datetime = T0,
    reason: str | None = "key leaked",
) -> Revocation:
    return Revocation(
        id=f"rvk_{n}",
        kind=kind,
        target=target,
        revoked_at=revoked_at,
        until=revoked_at + LIFETIME,
        actor="operator:sam",
        reason=reason,
    )


@pytest.fixture
async def replica(store: Store) -> AsyncIterator[Store]:
    """Another replica on the store's database (SQL), or the store itself (memory)."""
    if not isinstance(store, SqlStore):
        yield store
        return
    other = await open_sql_store(store.url.render_as_string(hide_password=False), migrate=False)
    try:
        yield other
    finally:
        await other.close()


async def test_revocation_reads_back_while_live_on_every_replica(
    store: Store, replica: Store
) -> None:
    entries = [
        make_revocation(1, kind=RevocationKind.JTI, target="jti_abc", reason=None),
        make_revocation(2),
        make_revocation(3, kind=RevocationKind.INSTANCE, target="spiffe://acme.org/agent/a/i/p"),
    ]
    for entry in entries:
        await store.add_revocation(entry)
    assert await replica.list_revocations(now=at(1)) == entries


async def test_live_revocations_are_listed_oldest_first_then_by_id(store: Store) -> None:
    await store.add_revocation(make_revocation(3, revoked_at=at(5)))
    await store.add_revocation(make_revocation(2, revoked_at=at(1)))
    await store.add_revocation(make_revocation(1, revoked_at=at(5)))
    listed = await store.list_revocations(now=at(6))
    assert [r.id for r in listed] == ["rvk_2", "rvk_1", "rvk_3"]


async def test_an_entry_is_live_until_its_until_and_purged_from_then(store: Store) -> None:
    early, late = make_revocation(1), make_revocation(2, revoked_at=at(60))
    await store.add_revocation(early)
    await store.add_revocation(late)
    assert await store.list_revocations(now=early.until - timedelta(microseconds=1)) == [
        early,
        late,
    ]
    assert await store.list_revocations(now=early.until) == [late]
    assert await store.purge_revocations(before=early.until - timedelta(seconds=1)) == 0
    assert await store.purge_revocations(before=early.until) == 1
    assert await store.list_revocations(now=T0) == [late], "purged for good"
    assert await store.purge_revocations(before=late.until) == 1


async def test_duplicate_revocation_id_is_conflict_and_keeps_the_first(store: Store) -> None:
    first = make_revocation(1)
    await store.add_revocation(first)
    with pytest.raises(Conflict):
        await store.add_revocation(replace(first, target="other-bot"))
    assert await store.list_revocations(now=T0) == [first]


async def test_revocation_times_come_back_as_aware_utc(store: Store) -> None:
    tokyo = timezone(timedelta(hours=9))
    entry = make_revocation(1, revoked_at=datetime(2026, 1, 1, 9, 0, tzinfo=tokyo))
    await store.add_revocation(entry)
    [stored] = await store.list_revocations(now=T0)
    assert stored == entry
    assert stored.revoked_at.utcoffset() == timedelta(0)
    assert stored.until == T0 + LIFETIME


async def test_naive_datetimes_are_value_errors_and_write_nothing(store: Store) -> None:
    naive = make_revocation(1, revoked_at=T0.replace(tzinfo=None))
    with pytest.raises(ValueError, match="naive datetime"):
        await store.add_revocation(naive)
    with pytest.raises(ValueError, match="naive datetime"):
        await store.list_revocations(now=T0.replace(tzinfo=None))
    with pytest.raises(ValueError, match="naive datetime"):
        await store.purge_revocations(before=T0.replace(tzinfo=None))
    assert await store.list_revocations(now=at(-3600)) == []


# -- an agent stopped and its tokens revoked, in one transaction ---------------------------------


async def test_agent_change_and_its_revocation_are_written_together(store: Store) -> None:
    agent = await register(store)
    stopped = replace(agent, state=AgentState.SUSPENDED, version=2)
    entry = make_revocation(1)
    await store.update_agent(stopped, expected_version=1, revocation=entry)
    assert await store.get_agent("faq-bot") == stopped
    assert await store.list_revocations(now=T0) == [entry]


async def test_version_conflict_writes_no_revocation(store: Store) -> None:
    agent = await register(store)
    stale = replace(agent, state=AgentState.SUSPENDED, version=3)
    with pytest.raises(VersionConflict):
        await store.update_agent(stale, expected_version=2, revocation=make_revocation(1))
    assert await store.list_revocations(now=T0) == []
    assert await store.get_agent("faq-bot") == agent


async def test_taken_revocation_id_refuses_the_whole_agent_change(store: Store) -> None:
    agent = await register(store)
    taken = make_revocation(1)
    await store.add_revocation(taken)
    stopped = replace(agent, state=AgentState.QUARANTINED, version=2)
    with pytest.raises(Conflict):
        await store.update_agent(
            stopped,
            expected_version=1,
            assessment=make_assessment(agent, 2),
            revocation=replace(taken, target="other"),
        )
    assert await store.get_agent("faq-bot") == agent, "the agent did not change"
    assert len(await store.list_assessments(agent.id)) == 1, "nor did its assessments"
    assert await store.list_revocations(now=T0) == [taken]

"""The ``Store`` contract for consent grants (``GrantStore``).

Run against every implementation (memory, SQLite, PostgreSQL) by the ``store`` fixture
(``tests/conftest.py``); ``replica`` is a second store on the same database where replicas
exist. The tests that hold a row lock from another connection, or listen for change notes,
run on PostgreSQL only: there a bulk revocation must wait for a grant another transaction
holds, never pass over it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest
import sqlalchemy as sa

from tether.delegation.models import Grant, GrantMatch, GrantState
from tether.errors import Conflict, GrantNotFound, InvalidInput, VersionConflict
from tether.store.interfaces import Store
from tether.store.sql import SqlStore, open_sql_store
from tether.store.sql.changes import GRANTS, MAX_GRANT_TOPICS, both, grant_topic

T0 = datetime(2026, 1, 1, tzinfo=UTC)
#: When the bulk revocations happen.
NOW = T0 + timedelta(hours=1)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_grant(
    n: int,
    *,
    user: str = "alice",
    agent: str = "faq-bot",
    session: str | None = None,
    created: float = 0,
    ttl: float = 7200,
) -> Grant:
    return Grant(
        id=f"grt_{n:03d}",
        user=user,
        agent=agent,
        scopes=frozenset({"orders:read", "calendar:write", "db:ro"}),
        purpose="Answer questions about my orders",
        purpose_code="support.orders",
        session=session,
        created_at=at(created),
        expires_at=at(created + ttl),
        created_by=f"user:{user}",
    )


def revoked(grant: Grant, *, when: datetime = NOW, reason: str | None = "signed out") -> Grant:
    """``grant`` as a bulk revocation at ``when`` by ``user:alice`` stores it."""
    return replace(
        grant,
        state=GrantState.REVOKED,
        revoked_at=when,
        revoked_by="user:alice",
        revoke_reason=reason,
        version=grant.version + 1,
    )


async def put(store: Store, *grants: Grant) -> None:
    for grant in grants:
        await store.create_grant(grant)


async def ids(grants: Awaitable[list[Grant]]) -> list[str]:
    return [grant.id for grant in await grants]


async def revoke(store: Store, match: GrantMatch, *, limit: int = 100) -> list[Grant]:
    return await store.revoke_grants(
        match, at=NOW, by="user:alice", reason="signed out", limit=limit
    )


# -- one grant -------------------------------------------------------------------------------


async def test_created_grant_reads_back_equal_in_utc(store: Store) -> None:
    east = timezone(timedelta(hours=2))
    grant = revoked(make_grant(1, session="ses_1"), when=at(30).astimezone(east))
    await store.create_grant(replace(grant, created_at=T0.astimezone(east)))
    await store.create_grant(make_grant(2))
    stored = await store.get_grant(grant.id)
    assert stored == replace(grant, revoked_at=at(30))
    assert stored is not None
    assert stored.created_at.utcoffset() == timedelta(0)
    assert stored.revoked_at is not None
    assert stored.revoked_at.utcoffset() == timedelta(0)
    assert isinstance(stored.scopes, frozenset)
    assert stored.state is GrantState.REVOKED
    assert await store.get_grant("grt_002") == make_grant(2)
    assert await store.get_grant("grt_999") is None


async def test_a_taken_grant_id_is_conflict_and_writes_nothing(store: Store) -> None:
    first = make_grant(1)
    await store.create_grant(first)
    with pytest.raises(Conflict, match="grt_001"):
        await store.create_grant(make_grant(1, user="bob"))
    assert await store.get_grant(first.id) == first


async def test_scopes_are_stored_as_a_sorted_json_list(store: Store) -> None:
    if not isinstance(store, SqlStore):
        pytest.skip("the memory store has no columns")
    await store.create_grant(make_grant(1))
    column = await store.run_sync(
        lambda conn: conn.execute(sa.text("SELECT scopes FROM grants")).scalar_one()
    )
    assert column == '["calendar:write","db:ro","orders:read"]'


# -- updates ---------------------------------------------------------------------------------


async def test_update_grant_is_compare_and_set_on_version(store: Store) -> None:
    grant = make_grant(1)
    await store.create_grant(grant)
    narrowed = replace(grant, scopes=frozenset({"orders:read"}), version=2)
    await store.update_grant(narrowed, expected_version=1)
    assert await store.get_grant(grant.id) == narrowed
    ended = revoked(narrowed)
    await store.update_grant(ended, expected_version=2)
    assert await store.get_grant(grant.id) == ended


async def test_stale_version_writes_nothing(store: Store) -> None:
    grant = make_grant(1)
    await store.create_grant(grant)
    await store.update_grant(revoked(grant), expected_version=1)
    stale = replace(grant, purpose="something else", version=2)
    with pytest.raises(VersionConflict, match="version 1"):
        await store.update_grant(stale, expected_version=1)
    assert await store.get_grant(grant.id) == revoked(grant)


async def test_update_of_an_unknown_grant_is_grant_not_found(store: Store) -> None:
    with pytest.raises(GrantNotFound, match="grt_001"):
        await store.update_grant(revoked(make_grant(1)), expected_version=1)
    assert await store.get_grant("grt_001") is None


async def test_naive_datetimes_are_value_error_and_write_nothing(store: Store) -> None:
    naive = T0.replace(tzinfo=None)
    with pytest.raises(ValueError, match="naive datetime"):
        await store.create_grant(replace(make_grant(1), expires_at=naive))
    assert await store.get_grant("grt_001") is None
    await store.create_grant(make_grant(1))
    with pytest.raises(ValueError, match="naive datetime"):
        await store.update_grant(
            replace(revoked(make_grant(1)), revoked_at=naive), expected_version=1
        )
    with pytest.raises(ValueError, match="naive datetime"):
        await store.list_grants(GrantMatch(), in_force_at=naive)
    with pytest.raises(ValueError, match="naive datetime"):
        await store.revoke_grants(GrantMatch(user="alice"), at=naive, by="x", reason=None, limit=9)
    assert await store.get_grant("grt_001") == make_grant(1)


# -- listing ---------------------------------------------------------------------------------

LISTED = [
    make_grant(1, user="u1", agent="a1", session="s1"),
    make_grant(2, user="u2", agent="a1"),
    make_grant(3, user="u1", agent="a2", session="s2"),
    make_grant(4, user="u1", agent="a1", session="s1"),
]


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        (GrantMatch(), ["grt_001", "grt_002", "grt_003", "grt_004"]),
        (GrantMatch(user="u1"), ["grt_001", "grt_003", "grt_004"]),
        (GrantMatch(agent="a1"), ["grt_001", "grt_002", "grt_004"]),
        (GrantMatch(session="s1"), ["grt_001", "grt_004"]),
        (GrantMatch(user="u1", agent="a2"), ["grt_003"]),
        (GrantMatch(user="u1", agent="a1", session="s1"), ["grt_001", "grt_004"]),
        (GrantMatch(user="u2", session="s1"), []),
    ],
    ids=["all", "user", "agent", "session", "user+agent", "all-three", "none"],
)
async def test_list_grants_keeps_those_matching_every_given_field(
    store: Store, match: GrantMatch, expected: list[str]
) -> None:
    await put(store, *reversed(LISTED))
    assert await ids(store.list_grants(match)) == expected


async def test_grants_in_force_are_active_and_not_expired(store: Store) -> None:
    await put(
        store,
        make_grant(1, ttl=3600),  # expires at NOW exactly: no longer in force
        make_grant(2, ttl=3601),
        revoked(make_grant(3)),
        make_grant(4, ttl=60),
        make_grant(5),
    )
    everything = GrantMatch()
    assert await ids(store.list_grants(everything, in_force_at=NOW)) == ["grt_002", "grt_005"]
    assert await ids(store.list_grants(everything, in_force_at=T0)) == [
        "grt_001",
        "grt_002",
        "grt_004",
        "grt_005",
    ]
    assert len(await store.list_grants(everything)) == 5


async def test_list_grants_pages_by_id(store: Store) -> None:
    await put(store, *(make_grant(n) for n in (7, 3, 5, 1, 6, 2, 4)))
    pages: list[list[str]] = []
    after: str | None = None
    while page := await ids(store.list_grants(GrantMatch(), limit=3, after=after)):
        pages.append(page)
        after = page[-1]
    assert pages == [[f"grt_00{n}" for n in r] for r in ((1, 2, 3), (4, 5, 6), (7,))]
    assert await store.list_grants(GrantMatch(), limit=0) == []


async def test_a_page_of_grants_holds_at_most_500(store: Store) -> None:
    await put(store, *(make_grant(n) for n in range(501)))
    assert len(await store.list_grants(GrantMatch(), limit=10_000)) == 500


# -- bulk revocation -------------------------------------------------------------------------


async def test_revoke_grants_changes_only_active_matching_grants(store: Store) -> None:
    already = revoked(make_grant(2), when=at(5), reason="earlier")
    expired = make_grant(4, ttl=60)  # expired, still active: revoked too
    untouched = [make_grant(5, user="bob"), make_grant(6, agent="other-bot"), already]
    await put(store, make_grant(3), make_grant(1), expired, *untouched)
    done = await store.revoke_grants(
        GrantMatch(user="alice", agent="faq-bot"),
        at=NOW,
        by="user:alice",
        reason="signed out",
        limit=10,
    )
    assert done == [revoked(make_grant(1)), revoked(make_grant(3)), revoked(expired)]
    for grant in done:
        assert await store.get_grant(grant.id) == grant
    for grant in untouched:
        assert await store.get_grant(grant.id) == grant


async def test_revoke_grants_takes_at_most_limit_lowest_ids_first(store: Store) -> None:
    await put(store, *(make_grant(n) for n in (4, 2, 5, 1, 3)))
    match = GrantMatch(user="alice")
    assert await ids(revoke(store, match, limit=2)) == ["grt_001", "grt_002"]
    assert await revoke(store, match, limit=0) == []
    assert await ids(revoke(store, match, limit=10)) == ["grt_003", "grt_004", "grt_005"]
    assert await revoke(store, match, limit=10) == []
    assert await store.list_grants(match, in_force_at=T0) == []


async def test_revoke_grants_by_session_leaves_other_sessions_in_force(store: Store) -> None:
    await put(store, make_grant(1, session="s1"), make_grant(2, session="s2"), make_grant(3))
    assert await ids(revoke(store, GrantMatch(session="s1"))) == ["grt_001"]
    assert await ids(store.list_grants(GrantMatch(), in_force_at=T0)) == ["grt_002", "grt_003"]


async def test_an_empty_match_revokes_nothing_and_is_invalid_input(store: Store) -> None:
    await put(store, make_grant(1))
    for limit in (10, 0):
        with pytest.raises(InvalidInput):
            await revoke(store, GrantMatch(), limit=limit)
    assert await store.get_grant("grt_001") == make_grant(1)


async def test_concurrent_revocations_never_revoke_a_grant_twice(
    store: Store, replica: Store
) -> None:
    await put(store, *(make_grant(n) for n in range(40)))
    calls = [
        revoke((store, replica)[n % 2], GrantMatch(agent="faq-bot"), limit=12) for n in range(5)
    ]
    batches = await asyncio.gather(*calls)
    taken = [grant for batch in batches for grant in batch]
    assert len(taken) == len({grant.id for grant in taken}) == 40
    assert {grant.version for grant in taken} == {2}


# -- PostgreSQL: row locks held elsewhere, change notes --------------------------------------


@pytest.mark.postgres
async def test_revoke_grants_waits_for_a_grant_another_transaction_holds(pg_url: str) -> None:
    raw_url = pg_url.replace("postgresql+psycopg://", "postgresql://", 1)
    async with await open_sql_store(pg_url) as store:
        await put(store, *(make_grant(n) for n in (1, 2, 3)))
        async with await psycopg.AsyncConnection.connect(raw_url) as other:
            await other.execute("SELECT id FROM grants WHERE id = 'grt_002' FOR UPDATE")
            revoking = asyncio.create_task(revoke(store, GrantMatch(user="alice")))
            await asyncio.sleep(0.3)
            assert not revoking.done()  # waiting for the lock, not passing grt_002 over
            await other.rollback()
        done = await asyncio.wait_for(revoking, timeout=10)
    assert [grant.id for grant in done] == ["grt_001", "grt_002", "grt_003"]


@pytest.mark.postgres
async def test_grant_writes_note_each_grant_or_all_grants_when_many(pg_url: str) -> None:
    raw_url = pg_url.replace("postgresql+psycopg://", "postgresql://", 1)
    many = MAX_GRANT_TOPICS + 1
    async with (
        await open_sql_store(pg_url) as store,
        await psycopg.AsyncConnection.connect(raw_url, autocommit=True) as listener,
    ):
        await put(store, make_grant(1), make_grant(2), make_grant(3))
        await put(store, *(make_grant(n, user="bob") for n in range(100, 100 + many)))
        await listener.execute("LISTEN tether_changes")
        await store.update_grant(replace(make_grant(3), version=2), expected_version=1)
        with pytest.raises(VersionConflict):  # refused: no note
            await store.update_grant(replace(make_grant(3), version=2), expected_version=1)
        await store.create_grant(make_grant(4, user="carol"))
        await revoke(store, GrantMatch(user="alice"), limit=2)
        await revoke(store, GrantMatch(user="nobody"))  # revoked nothing: no note
        await revoke(store, GrantMatch(user="bob"), limit=many)
        got = [n.payload async for n in listener.notifies(timeout=1, stop_after=5)]
    assert got == [
        grant_topic("grt_003"),
        grant_topic("grt_004"),
        both(grant_topic("grt_001"), grant_topic("grt_002")),
        GRANTS,
    ]
    assert got[2] == "grant:grt_001 grant:grt_002"

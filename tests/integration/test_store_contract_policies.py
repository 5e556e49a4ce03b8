"""The ``Store`` contract for versioned policy sets and the active-version pointer.

Run against every implementation (memory, SQLite, PostgreSQL) by the ``store`` fixture
(``tests/conftest.py``). ``replica`` is a second store on the same database for the SQL
backends (its own engine, pool and connections, as another server replica has) and the same
store for memory, so the concurrency rules are pinned across replicas where replicas exist.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tether.errors import PolicySetNotFound, VersionConflict
from tether.policy.models import PolicySetVersion
from tether.store.interfaces import Store

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def policy_text(n: int) -> str:
    return f'@id("rule-{n}")\npermit (principal, action, resource);\n'


async def add(
    store: Store,
    n: int,
    *,
    activate: bool = False,
    expected_active: int | None = None,
    created_at: datetime | None = None,
    comment: str | None = None,
) -> PolicySetVersion:
    text = policy_text(n)
    return await store.add_policy_set(
        text=text,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        created_at=at(n) if created_at is None else created_at,
        created_by="operator:sam",
        comment=comment,
        activate=activate,
        expected_active=expected_active,
    )


async def versions(store: Store) -> list[int]:
    return [p.version for p in await store.list_policy_sets(limit=500)]


async def active_version(store: Store) -> int | None:
    active = await store.active_policy_set()
    return None if active is None else active.version


# -- numbering -------------------------------------------------------------------------------


async def test_versions_are_numbered_without_gaps(store: Store) -> None:
    added = [await add(store, n, comment=f"change {n}") for n in (1, 2, 3)]
    assert [p.version for p in added] == [1, 2, 3]
    text = policy_text(2)
    assert added[1] == PolicySetVersion(
        version=2,
        text=text,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        created_at=at(2),
        created_by="operator:sam",
        comment="change 2",
    )
    for policy_set in added:
        assert await store.get_policy_set(policy_set.version) == policy_set


async def test_concurrent_adds_get_distinct_versions(store: Store, replica: Store) -> None:
    adds = [add((store, replica)[n % 2], n) for n in range(1, 11)]
    added = await asyncio.gather(*adds)
    assert sorted(p.version for p in added) == list(range(1, 11))
    assert await versions(store) == list(range(10, 0, -1))
    for policy_set in added:  # each caller got back the version holding its own text
        assert await replica.get_policy_set(policy_set.version) == policy_set


async def test_times_come_back_as_aware_utc(store: Store) -> None:
    east = timezone(timedelta(hours=2))
    added = await add(store, 1, created_at=datetime(2026, 1, 1, 2, 0, tzinfo=east))
    stored = await store.get_policy_set(added.version)
    assert stored is not None
    assert stored.created_at == T0
    assert stored.created_at.utcoffset() == timedelta(0)
    assert added == stored


# -- the active version ----------------------------------------------------------------------


async def test_no_version_is_active_before_the_first_activation(store: Store) -> None:
    assert await store.active_policy_set() is None
    await add(store, 1)
    assert await store.active_policy_set() is None


async def test_active_version_alone_follows_every_activation_on_every_replica(
    store: Store, replica: Store
) -> None:
    assert await replica.active_policy_version() is None
    await add(store, 1)
    await add(store, 2)
    assert await replica.active_policy_version() is None  # added, not active
    for version, expected in ((2, None), (1, 2)):
        await store.activate_policy_set(version, expected_active=expected, at=at(version))
        assert await replica.active_policy_version() == version
        assert await active_version(replica) == version


async def test_activation_is_compare_and_set(store: Store) -> None:
    one, two = await add(store, 1), await add(store, 2)
    await store.activate_policy_set(1, expected_active=None, at=at(10))
    assert await store.active_policy_set() == one
    with pytest.raises(VersionConflict, match="version 1"):
        await store.activate_policy_set(2, expected_active=None, at=at(11))
    with pytest.raises(VersionConflict):
        await store.activate_policy_set(2, expected_active=2, at=at(11))
    await store.activate_policy_set(2, expected_active=1, at=at(12))
    assert await store.active_policy_set() == two
    await store.activate_policy_set(1, expected_active=2, at=at(13))  # a rollback is a move too
    assert await store.active_policy_set() == one


async def test_concurrent_activations_let_exactly_one_win(store: Store, replica: Store) -> None:
    for n in range(1, 9):
        await add(store, n)

    async def attempt(version: int) -> int | None:
        target = (store, replica)[version % 2]
        try:
            await target.activate_policy_set(version, expected_active=None, at=at(version))
        except VersionConflict:
            return None
        return version

    winners = [v for v in await asyncio.gather(*(attempt(v) for v in range(1, 9))) if v]
    assert len(winners) == 1
    assert await active_version(store) == winners[0]
    assert await active_version(replica) == winners[0]


async def test_conflicting_activation_writes_nothing(store: Store) -> None:
    with pytest.raises(VersionConflict, match="none"):
        await add(store, 1, activate=True, expected_active=3)
    assert await versions(store) == []  # and no version number was consumed
    first = await add(store, 1, activate=True, expected_active=None)
    assert first.version == 1
    with pytest.raises(VersionConflict):
        await add(store, 2, activate=True, expected_active=None)
    await add(store, 3)
    with pytest.raises(VersionConflict):
        await store.activate_policy_set(2, expected_active=2, at=at(20))
    assert await versions(store) == [2, 1]
    assert await store.active_policy_set() == first


async def test_unknown_version_is_policy_set_not_found(store: Store) -> None:
    assert await store.get_policy_set(1) is None
    with pytest.raises(PolicySetNotFound, match="version 1"):
        await store.activate_policy_set(1, expected_active=None, at=at(1))
    await add(store, 1, activate=True, expected_active=None)
    for unknown in (0, -1, 2):
        assert await store.get_policy_set(unknown) is None
        # An unknown version is not found even when the expectation is stale as well.
        for expected in (None, 1):
            with pytest.raises(PolicySetNotFound):
                await store.activate_policy_set(unknown, expected_active=expected, at=at(2))
    assert await active_version(store) == 1


async def test_add_with_activate_is_atomic(store: Store, replica: Store) -> None:
    one = await add(store, 1, activate=True, expected_active=None)
    assert await store.active_policy_set() == one
    await add(store, 2)  # without activate the active version stays
    assert await active_version(store) == 1
    three = await add(store, 3, activate=True, expected_active=1)
    assert await store.active_policy_set() == three

    async def attempt(n: int) -> PolicySetVersion | None:
        target = (store, replica)[n % 2]
        try:
            return await add(target, n, activate=True, expected_active=3)
        except VersionConflict:
            return None

    # Racing writers that all expect version 3: one stores and activates, the rest store nothing.
    outcomes = await asyncio.gather(*(attempt(n) for n in range(10, 16)))
    [winner] = [p for p in outcomes if p is not None]
    assert winner.version == 4
    assert await replica.active_policy_set() == winner
    assert await versions(store) == [4, 3, 2, 1]


# -- listing ---------------------------------------------------------------------------------


async def test_listing_is_newest_first_and_paged(store: Store) -> None:
    for n in range(1, 6):
        await add(store, n)
    page1 = await store.list_policy_sets(limit=2)
    page2 = await store.list_policy_sets(limit=2, before=page1[-1].version)
    page3 = await store.list_policy_sets(limit=2, before=page2[-1].version)
    assert [p.version for p in page1 + page2 + page3] == [5, 4, 3, 2, 1]
    assert await store.list_policy_sets(before=1) == []
    assert [p.version for p in await store.list_policy_sets()] == [5, 4, 3, 2, 1]
    assert await store.list_policy_sets(limit=1) == [await store.get_policy_set(5)]


@pytest.mark.parametrize("limit", [0, -5])
async def test_listing_returns_at_least_one(store: Store, limit: int) -> None:
    await add(store, 1)
    await add(store, 2)
    assert [p.version for p in await store.list_policy_sets(limit=limit)] == [2]


async def test_listing_returns_at_most_500(store: Store) -> None:
    await asyncio.gather(*(add(store, n) for n in range(1, 502)))
    listed = await store.list_policy_sets(limit=10_000)
    assert [p.version for p in listed] == list(range(501, 1, -1))


# -- refused input ---------------------------------------------------------------------------


async def test_naive_time_is_refused_and_writes_nothing(store: Store) -> None:
    naive = T0.replace(tzinfo=None)
    for activate in (False, True):
        with pytest.raises(ValueError, match="naive datetime"):
            await add(store, 1, created_at=naive, activate=activate)
    assert await versions(store) == []
    assert await store.active_policy_set() is None
    await add(store, 1)
    with pytest.raises(ValueError, match="naive datetime"):
        await store.activate_policy_set(1, expected_active=None, at=naive)
    with pytest.raises(ValueError, match="naive datetime"):  # refused before the lookup
        await store.activate_policy_set(9, expected_active=None, at=naive)
    assert await store.active_policy_set() is None
    assert (await add(store, 2)).version == 2

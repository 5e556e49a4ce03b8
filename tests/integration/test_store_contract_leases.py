"""The ``Store`` contract for leases and credential engines (``LeaseStore``, ``EngineStore``).

Run against every implementation (memory, SQLite, PostgreSQL) by the ``store`` fixture
(``tests/conftest.py``); ``replica`` is a second store on the same database where replicas
exist. Leases are built with :mod:`tether.credentials.lifecycle`, as the lease service builds
them. The tests that hold a row lock from another connection run on PostgreSQL only: there the
bulk changes must skip locked rows (``FOR UPDATE SKIP LOCKED``) rather than wait for them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

import psycopg
import pytest

from tether.credentials import lifecycle
from tether.credentials.models import (
    EndKind,
    EngineConfig,
    Lease,
    LeaseMatch,
    LeaseState,
    RoleTemplate,
)
from tether.errors import (
    Conflict,
    InvalidTransition,
    LeaseNotFound,
    VersionConflict,
)
from tether.store.interfaces import Store
from tether.store.sql import open_sql_store

T0 = datetime(2026, 1, 1, tzinfo=UTC)
#: "Now" for the reaper's queries.
NOW = T0 + timedelta(hours=1)
ENGINE = "pg-main"
RETRY = lifecycle.RetryPolicy(base=10, cap=10, max_attempts=3)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- factories -------------------------------------------------------------------------------


def issuing(
    n: int,
    *,
    created: float = 0,
    ttl: int = 60,
    engine: str = ENGINE,
    agent: str = "faq-bot",
    instance: str = "pod-1",
    grant_id: str | None = None,
    user: str | None = None,
) -> Lease:
    return lifecycle.new_lease(
        id=f"lea_{n:03d}",
        engine=engine,
        role="ro",
        credential=f"tether_{n:03d}",
        agent=agent,
        instance=instance,
        now=at(created),
        ttl=ttl,
        max_ttl=7200,
        grant_id=grant_id,
        user=user,
    )


def active(n: int, **kwargs: Any) -> Lease:
    lease = issuing(n, **kwargs)
    return lifecycle.activated(lease, now=lease.created_at)


def revoking(lease: Lease, *, now: datetime, claim_until: datetime) -> Lease:
    return lifecycle.begin_end(
        lease, now=now, kind=EndKind.REVOKED, reason="offboarded", claim_until=claim_until
    )


def failed_once(lease: Lease, *, now: datetime) -> Lease:
    """Revoking, its first attempt failed at ``now``: retried 10 s later, held by nobody."""
    ending = revoking(lease, now=now, claim_until=now + timedelta(seconds=5))
    return lifecycle.revocation_failed(ending, now=now, error="connection refused", policy=RETRY)


def revoked(lease: Lease, *, now: datetime) -> Lease:
    return lifecycle.ended(revoking(lease, now=now, claim_until=now), now=now)


def claim(now: datetime) -> Callable[[Lease], Lease]:
    """What the reaper does with a due lease: start ending it, held for a minute."""

    def change(lease: Lease) -> Lease:
        kind = EndKind.FAILED if lease.state is LeaseState.ISSUING else EndKind.EXPIRED
        hold = now + timedelta(seconds=60)
        return lifecycle.begin_end(lease, now=now, kind=kind, reason=None, claim_until=hold)

    return change


def make_engine(name: str = ENGINE, *, version: int = 1, host: str = "db.internal") -> EngineConfig:
    return EngineConfig(
        name=name,
        kind="postgres",
        settings={"host": host, "port": 5432, "databases": ["app"], "tls": {"mode": "full"}},
        roles={
            "ro": RoleTemplate(name="ro", group="app_ro"),
            "rw": RoleTemplate(
                name="rw", group="app_rw", max_ttl=600, options=MappingProxyType({"a": 1})
            ),
        },
        created_at=T0,
        created_by="operator:sam",
        updated_at=at(version),
        version=version,
        sealed_secret=b"\x00sealed\xff",
    )


async def put(store: Store, *leases: Lease) -> None:
    for lease in leases:
        await store.create_lease(lease)


async def ids(leases: Awaitable[list[Lease]]) -> list[str]:
    return [lease.id for lease in await leases]


# -- one lease -------------------------------------------------------------------------------


async def test_created_lease_reads_back_equal_in_utc(store: Store) -> None:
    east = timezone(timedelta(hours=2))
    retried = failed_once(active(1, grant_id="grt_1", user="alice"), now=at(30))
    held = revoking(retried, now=at(40), claim_until=at(100))  # every field set but ended_at
    lease = replace(held, created_at=T0.astimezone(east))
    await store.create_lease(lease)
    await store.create_lease(revoked(active(2), now=at(5)))
    stored = await store.get_lease(lease.id)
    assert stored == replace(lease, created_at=T0)
    assert stored is not None
    assert stored.created_at.utcoffset() == timedelta(0)
    assert await store.get_lease("lea_002") == revoked(active(2), now=at(5))
    assert await store.get_lease("lea_999") is None


async def test_taken_lease_id_is_conflict_and_writes_nothing(store: Store) -> None:
    first = issuing(1)
    await store.create_lease(first)
    with pytest.raises(Conflict, match="lea_001"):
        await store.create_lease(replace(issuing(1), credential="tether_other"))
    assert await store.get_lease(first.id) == first
    assert await store.live_credentials(ENGINE) == {"tether_001"}


async def test_taken_credential_is_conflict_and_writes_nothing(store: Store) -> None:
    await store.create_lease(issuing(1))
    with pytest.raises(Conflict):
        await store.create_lease(replace(issuing(2), credential="tether_001"))
    assert await store.get_lease("lea_002") is None


async def test_save_lease_is_compare_and_set_on_version(store: Store) -> None:
    lease = issuing(1)
    await store.create_lease(lease)
    live = lifecycle.activated(lease, now=at(1))
    await store.save_lease(live, expected_version=1)
    assert await store.get_lease(lease.id) == live
    stale = lifecycle.renew(lifecycle.activated(lease, now=at(1)), now=at(2), ttl=600)
    with pytest.raises(VersionConflict, match="version 1"):
        await store.save_lease(replace(stale, version=2), expected_version=1)
    assert await store.get_lease(lease.id) == live


async def test_save_of_an_unknown_lease_is_lease_not_found(store: Store) -> None:
    with pytest.raises(LeaseNotFound):
        await store.save_lease(issuing(1), expected_version=1)
    assert await store.get_lease("lea_001") is None


async def test_save_onto_another_leases_credential_is_conflict(store: Store) -> None:
    await put(store, issuing(1), issuing(2))
    moved = replace(lifecycle.activated(issuing(2), now=at(1)), credential="tether_001")
    with pytest.raises(Conflict):
        await store.save_lease(moved, expected_version=1)
    assert await store.get_lease("lea_002") == issuing(2)


async def test_naive_datetimes_are_value_error_and_write_nothing(store: Store) -> None:
    naive = T0.replace(tzinfo=None)
    with pytest.raises(ValueError, match="naive datetime"):
        await store.create_lease(replace(issuing(1), expires_at=naive))
    assert await store.get_lease("lea_001") is None
    await store.create_lease(issuing(1))
    with pytest.raises(ValueError, match="naive datetime"):
        await store.save_lease(replace(issuing(1), updated_at=naive), expected_version=1)
    with pytest.raises(ValueError, match="naive datetime"):
        await store.change_due_leases(now=naive, stale_before=NOW, change=claim(NOW), limit=9)
    with pytest.raises(ValueError, match="naive datetime"):
        await store.create_engine(replace(make_engine(), created_at=naive))
    assert await store.get_lease("lea_001") == issuing(1)
    assert await store.list_engines() == []


# -- listing ---------------------------------------------------------------------------------

LISTED = [
    issuing(1, agent="a1", instance="i1", grant_id="g1", user="u1", engine="e1"),
    issuing(2, agent="a2", instance="i1", engine="e1"),
    issuing(3, agent="a1", instance="i2", grant_id="g2", user="u2", engine="e2"),
]


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        (LeaseMatch(), ["lea_001", "lea_002", "lea_003"]),
        (LeaseMatch(agent="a1"), ["lea_001", "lea_003"]),
        (LeaseMatch(instance="i1"), ["lea_001", "lea_002"]),
        (LeaseMatch(grant_id="g1"), ["lea_001"]),
        (LeaseMatch(user="u2"), ["lea_003"]),
        (LeaseMatch(engine="e1"), ["lea_001", "lea_002"]),
        (LeaseMatch(agent="a1", engine="e2"), ["lea_003"]),
        (LeaseMatch(agent="a2", user="u1"), []),
    ],
    ids=["all", "agent", "instance", "grant", "user", "engine", "agent+engine", "none"],
)
async def test_list_leases_keeps_those_matching_every_given_field(
    store: Store, match: LeaseMatch, expected: list[str]
) -> None:
    await put(store, *reversed(LISTED))
    assert await ids(store.list_leases(match)) == expected


async def test_list_leases_keeps_the_given_states(store: Store) -> None:
    await put(store, issuing(1), active(2), revoked(active(3), now=at(5)))
    everything = LeaseMatch()
    assert await ids(store.list_leases(everything, states=[LeaseState.ACTIVE])) == ["lea_002"]
    chosen = {LeaseState.ISSUING, LeaseState.REVOKED}
    assert await ids(store.list_leases(everything, states=chosen)) == ["lea_001", "lea_003"]
    assert await store.list_leases(everything, states=[]) == []


async def test_list_leases_pages_by_id(store: Store) -> None:
    await put(store, *(issuing(n) for n in (7, 3, 5, 1, 6, 2, 4)))
    pages: list[list[str]] = []
    after: str | None = None
    while page := await ids(store.list_leases(LeaseMatch(), limit=3, after=after)):
        pages.append(page)
        after = page[-1]
    assert pages == [[f"lea_00{n}" for n in r] for r in ((1, 2, 3), (4, 5, 6), (7,))]


async def test_a_page_of_leases_holds_at_most_500(store: Store) -> None:
    await put(store, *(issuing(n) for n in range(501)))
    assert len(await store.list_leases(LeaseMatch(), limit=10_000)) == 500


# -- bulk changes ----------------------------------------------------------------------------


async def test_change_leases_stores_each_change_lowest_ids_first(store: Store) -> None:
    mine = [active(n, agent="faq-bot") for n in (4, 1, 3, 2)]
    await put(store, *mine, active(5, agent="other"), issuing(6, agent="faq-bot"))
    changed = await store.change_leases(
        LeaseMatch(agent="faq-bot"),
        states={LeaseState.ACTIVE},
        change=lambda lease: revoking(lease, now=at(10), claim_until=at(70)),
        limit=3,
    )
    assert [lease.id for lease in changed] == ["lea_001", "lea_002", "lea_003"]
    assert {(c.state, c.version, c.claimed_until) for c in changed} == {
        (LeaseState.REVOKING, 3, at(70))
    }
    for lease in changed:
        assert await store.get_lease(lease.id) == lease
    untouched = await store.list_leases(LeaseMatch(), states={LeaseState.ACTIVE})
    assert [lease.id for lease in untouched] == ["lea_004", "lea_005"]


async def test_change_raising_an_error_writes_nothing(store: Store) -> None:
    before = [issuing(1), active(2), issuing(3)]
    await put(store, *before)
    with pytest.raises(InvalidTransition, match="lea_002"):
        await store.change_leases(
            LeaseMatch(),
            states={LeaseState.ISSUING, LeaseState.ACTIVE},
            change=lambda lease: lifecycle.activated(lease, now=at(1)),
            limit=10,
        )
    assert await store.list_leases(LeaseMatch()) == before


async def test_change_breaking_credential_uniqueness_is_conflict_and_writes_nothing(
    store: Store,
) -> None:
    before = [active(1), active(2), active(3)]
    await put(store, *before)

    def change(lease: Lease) -> Lease:  # the second one takes the third's credential
        new = revoking(lease, now=at(10), claim_until=at(70))
        return replace(new, credential="tether_003") if lease.id == "lea_002" else new

    with pytest.raises(Conflict):
        await store.change_leases(LeaseMatch(), states={LeaseState.ACTIVE}, change=change, limit=2)
    assert await store.list_leases(LeaseMatch()) == before


async def test_change_due_leases_takes_exactly_the_due_ones_soonest_first(store: Store) -> None:
    soon = NOW - timedelta(seconds=30)
    due = [
        active(1, created=3590, ttl=10),  # expired at NOW exactly
        active(2, created=0, ttl=60),  # expired long ago
        issuing(3, created=100),  # its issuance never finished
        failed_once(active(4), now=NOW - timedelta(seconds=40)),  # retry due at NOW - 30
        revoking(active(5), now=soon, claim_until=NOW),  # its claim ran out
        lifecycle.revocation_failed(  # irrevocable, retry due at NOW - 20
            failed_once(failed_once(active(6), now=at(0)), now=at(100)),
            now=NOW - timedelta(seconds=30),
            error="still refused",
            policy=RETRY,
        ),
    ]
    not_due = [
        active(7, created=3590, ttl=11),  # expires after NOW
        issuing(8, created=3000),  # recent: still issuing
        revoking(active(9), now=soon, claim_until=NOW + timedelta(seconds=1)),  # held
        failed_once(active(10), now=NOW - timedelta(seconds=5)),  # retry not due yet
        revoked(active(11), now=at(5)),
        issuing(12, created=1000),  # created at stale_before, not before it
    ]
    assert due[5].state is LeaseState.IRREVOCABLE
    await put(store, *due, *not_due)
    taken = await store.change_due_leases(
        now=NOW, stale_before=at(1000), change=claim(NOW), limit=100
    )
    assert [lease.id for lease in taken] == [f"lea_00{n}" for n in (2, 3, 4, 5, 6, 1)]
    assert all(lease.claimed_until == NOW + timedelta(seconds=60) for lease in taken)
    for lease in not_due:
        assert await store.get_lease(lease.id) == lease
    again = await store.change_due_leases(
        now=NOW, stale_before=at(1000), change=claim(NOW), limit=9
    )
    assert again == []


async def test_change_due_leases_takes_at_most_limit(store: Store) -> None:
    await put(store, *(active(n, created=n) for n in range(1, 6)))
    first = await store.change_due_leases(now=NOW, stale_before=T0, change=claim(NOW), limit=2)
    assert [lease.id for lease in first] == ["lea_001", "lea_002"]
    rest = await store.change_due_leases(now=NOW, stale_before=T0, change=claim(NOW), limit=10)
    assert [lease.id for lease in rest] == ["lea_003", "lea_004", "lea_005"]


async def test_concurrent_due_claims_never_take_a_lease_twice(store: Store, replica: Store) -> None:
    await put(store, *(active(n, created=n) for n in range(40)))
    calls = [
        (store, replica)[n % 2].change_due_leases(
            now=NOW, stale_before=T0, change=claim(NOW), limit=12
        )
        for n in range(5)
    ]
    batches = await asyncio.gather(*calls)
    taken = [lease.id for batch in batches for lease in batch]
    assert len(taken) == len(set(taken)) == 40
    assert all(lease.state is LeaseState.REVOKING for batch in batches for lease in batch)


# -- row locks held elsewhere (PostgreSQL) ---------------------------------------------------


async def _while_locked(
    pg_url: str, run: Callable[[Store], Awaitable[list[Lease]]]
) -> tuple[list[str], list[str]]:
    """Leases 1–3 due; what ``run`` takes while another transaction holds lease 2's row,
    then what it takes after that transaction ends."""
    async with await open_sql_store(pg_url) as store:
        await put(store, *(active(n) for n in (1, 2, 3)))
        raw_url = pg_url.replace("postgresql+psycopg://", "postgresql://", 1)
        async with await psycopg.AsyncConnection.connect(raw_url) as other:
            await other.execute("SELECT id FROM leases WHERE id = 'lea_002' FOR UPDATE")
            during = [lease.id for lease in await asyncio.wait_for(run(store), timeout=10)]
            await other.rollback()
        after = [lease.id for lease in await run(store)]
    return during, after


@pytest.mark.postgres
async def test_change_due_leases_skips_leases_another_transaction_holds(pg_url: str) -> None:
    during, after = await _while_locked(
        pg_url,
        lambda store: store.change_due_leases(
            now=NOW, stale_before=T0, change=claim(NOW), limit=10
        ),
    )
    assert (during, after) == (["lea_001", "lea_003"], ["lea_002"])


@pytest.mark.postgres
async def test_change_leases_skips_leases_another_transaction_holds(pg_url: str) -> None:
    during, after = await _while_locked(
        pg_url,
        lambda store: store.change_leases(
            LeaseMatch(agent="faq-bot"),
            states={LeaseState.ACTIVE},
            change=lambda lease: revoking(lease, now=at(10), claim_until=at(70)),
            limit=10,
        ),
    )
    assert (during, after) == (["lea_001", "lea_003"], ["lea_002"])


# -- what the reaper and the engines ask -----------------------------------------------------


async def test_live_credentials_are_those_of_live_leases_of_the_engine(store: Store) -> None:
    await put(
        store,
        issuing(1),
        active(2),
        failed_once(active(3), now=at(10)),
        revoked(active(4), now=at(10)),
        active(5, engine="other"),
    )
    assert await store.live_credentials(ENGINE) == {"tether_001", "tether_002", "tether_003"}
    assert await store.live_credentials("unknown") == set()


async def test_next_lease_expiry_is_the_earliest_of_active_leases(store: Store) -> None:
    assert await store.next_lease_expiry() is None
    await put(store, issuing(1, created=0, ttl=5), active(2, created=0, ttl=90))
    await put(store, active(3, created=10, ttl=60), failed_once(active(4, ttl=1), now=at(0)))
    assert await store.next_lease_expiry() == at(70)

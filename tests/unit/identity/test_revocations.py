"""The revocation list: what it refuses, for how long, and what a refresh may never lose."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from tether._internal.clock import FixedClock
from tether.errors import Conflict, StoreUnavailable
from tether.identity.revocations import (
    ISSUANCE_MARGIN,
    Revocation,
    RevocationKind,
    RevocationList,
)
from tether.store.memory import MemoryStore

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LIFETIME, LEEWAY = 300, 30
INSTANCE = "spiffe://acme.org/agent/faq-bot/i/pod-1"
#: How long an entry lives: the last token it covers is issued ISSUANCE_MARGIN after it, lives
#: LIFETIME, is accepted LEEWAY longer, and iat/exp are whole seconds (one more).
KEEP = ISSUANCE_MARGIN + LIFETIME + LEEWAY + 1


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def store(clock: FixedClock) -> MemoryStore:
    return MemoryStore(clock=clock)


async def open_list(store: MemoryStore, clock: FixedClock) -> RevocationList:
    return await RevocationList.load(store, clock=clock, max_token_lifetime=LIFETIME, leeway=LEEWAY)


@pytest.fixture
async def revocations(store: MemoryStore, clock: FixedClock) -> RevocationList:
    return await open_list(store, clock)


def ts(moment: datetime) -> int:
    return int(moment.timestamp())


async def revoke(
    revocations: RevocationList,
    kind: RevocationKind,
    target: str,
    reason: str | None = None,
) -> Revocation:
    entry = revocations.entry(kind=kind, target=target, actor="operator:sam", reason=reason)
    await revocations.record(entry)
    return entry


def check(
    revocations: RevocationList,
    *,
    iat: int | None,
    jti: str | None = "jti_1",
    agent: str = "faq-bot",
    instance: str | None = INSTANCE,
) -> str | None:
    return revocations.is_revoked(jti=jti, agent=agent, instance=instance, issued_at=iat)


async def test_nothing_is_revoked_in_an_empty_list(revocations: RevocationList) -> None:
    assert check(revocations, iat=ts(T0)) is None
    assert revocations.live() == []


async def test_revoked_jti_refuses_that_token_only(revocations: RevocationList) -> None:
    await revoke(revocations, RevocationKind.JTI, "jti_1", reason="leaked in a log")
    assert check(revocations, iat=ts(T0) + 100) == "jti revocation: leaked in a log"
    assert check(revocations, iat=ts(T0), jti="jti_2") is None
    assert check(revocations, iat=ts(T0), jti=None) is None


async def test_agent_revocation_spares_tokens_issued_after_the_margin(
    revocations: RevocationList, clock: FixedClock
) -> None:
    clock.advance(10)
    await revoke(revocations, RevocationKind.AGENT, "faq-bot")
    assert check(revocations, iat=ts(T0)) == "agent revocation"
    assert check(revocations, iat=ts(clock.now()) + ISSUANCE_MARGIN + 1) is None
    assert check(revocations, iat=ts(T0), agent="other-bot", instance=None) is None


@pytest.mark.parametrize("kind", [RevocationKind.AGENT, RevocationKind.INSTANCE])
async def test_token_issued_while_the_suspension_is_written_is_revoked_too(
    revocations: RevocationList, kind: RevocationKind
) -> None:
    # A token whose request read the agent as active just before the suspension, or that a
    # replica whose clock runs ahead signed, carries an iat after revoked_at.
    target = "faq-bot" if kind is RevocationKind.AGENT else INSTANCE
    await revoke(revocations, kind, target)
    for late in (1, ISSUANCE_MARGIN // 2, ISSUANCE_MARGIN):
        assert check(revocations, iat=ts(T0) + late) is not None, f"issued {late} s after"
    assert check(revocations, iat=ts(T0) + ISSUANCE_MARGIN + 1) is None


async def test_token_issued_in_the_last_second_of_the_margin_is_revoked(
    revocations: RevocationList, clock: FixedClock
) -> None:
    clock.advance(0.5)  # the margin ends at T0 + ISSUANCE_MARGIN + 0.5
    await revoke(revocations, RevocationKind.AGENT, "faq-bot")
    # iat has whole seconds: this token may have been issued before the margin ended
    assert check(revocations, iat=ts(T0) + ISSUANCE_MARGIN) is not None
    # … and this one only after it (at T0 + ISSUANCE_MARGIN + 1 or later)
    assert check(revocations, iat=ts(T0) + ISSUANCE_MARGIN + 1) is None


async def test_token_issued_in_the_second_of_the_revocation_is_revoked(
    revocations: RevocationList, clock: FixedClock
) -> None:
    clock.advance(0.5)  # iat has whole seconds: a token of this second may be older
    await revoke(revocations, RevocationKind.AGENT, "faq-bot")
    assert check(revocations, iat=ts(T0)) is not None


async def test_token_without_iat_is_revoked_by_an_agent_entry(
    revocations: RevocationList,
) -> None:
    await revoke(revocations, RevocationKind.AGENT, "faq-bot")
    assert check(revocations, iat=None) is not None


async def test_instance_revocation_spares_the_agents_other_instances(
    revocations: RevocationList,
) -> None:
    await revoke(revocations, RevocationKind.INSTANCE, INSTANCE, reason="pod compromised")
    assert check(revocations, iat=ts(T0)) == "instance revocation: pod compromised"
    other = "spiffe://acme.org/agent/faq-bot/i/pod-2"
    assert check(revocations, iat=ts(T0), instance=other) is None
    assert check(revocations, iat=ts(T0), instance=None) is None
    assert check(revocations, iat=ts(T0) + ISSUANCE_MARGIN) is not None, "within the margin"
    assert check(revocations, iat=ts(T0) + ISSUANCE_MARGIN + 1) is None, "issued after: spared"


@pytest.mark.parametrize("newest_first", [False, True])
async def test_latest_revocation_of_a_target_wins_in_any_order(
    revocations: RevocationList, clock: FixedClock, newest_first: bool
) -> None:
    older = revocations.entry(kind=RevocationKind.AGENT, target="faq-bot", actor="a")
    clock.advance(60)
    newer = revocations.entry(kind=RevocationKind.AGENT, target="faq-bot", actor="a")
    for entry in (newer, older) if newest_first else (older, newer):
        revocations.add(entry)
    # issued after the older entry's margin, within the newer's: only the newer covers it
    assert check(revocations, iat=ts(T0) + ISSUANCE_MARGIN + 1) is not None


async def test_entry_is_kept_until_every_token_it_covers_has_expired(
    revocations: RevocationList,
) -> None:
    entry = revocations.entry(kind=RevocationKind.JTI, target="jti_1", actor="operator:sam")
    assert entry.revoked_at == T0
    assert entry.until == T0 + timedelta(seconds=ISSUANCE_MARGIN + LIFETIME + LEEWAY + 1)
    assert entry.id.startswith("rvk_")


async def test_recorded_entry_is_in_the_store_and_in_force_at_once(
    revocations: RevocationList, store: MemoryStore
) -> None:
    entry = await revoke(revocations, RevocationKind.AGENT, "faq-bot")
    assert await store.list_revocations(now=T0) == [entry]
    assert revocations.live() == [entry]


async def test_entry_the_store_refuses_is_not_in_force(
    revocations: RevocationList, store: MemoryStore
) -> None:
    entry = await revoke(revocations, RevocationKind.JTI, "jti_1")
    twin = revocations.entry(kind=RevocationKind.JTI, target="jti_2", actor="operator:sam")
    with pytest.raises(Conflict, match="exists"):
        await revocations.record(replace(twin, id=entry.id))
    assert check(revocations, iat=ts(T0), jti="jti_2") is None


async def test_refresh_learns_what_another_replica_revoked(
    store: MemoryStore, clock: FixedClock
) -> None:
    here, there = await open_list(store, clock), await open_list(store, clock)
    await revoke(there, RevocationKind.AGENT, "faq-bot")
    assert check(here, iat=ts(T0)) is None, "not until it refreshes"
    await here.refresh()
    assert check(here, iat=ts(T0)) is not None


async def test_load_reads_only_live_entries(store: MemoryStore, clock: FixedClock) -> None:
    first = await open_list(store, clock)
    await revoke(first, RevocationKind.JTI, "jti_old")
    clock.advance(KEEP)
    await revoke(first, RevocationKind.JTI, "jti_new")
    second = await open_list(store, clock)
    assert [r.target for r in second.live()] == ["jti_new"]
    assert check(second, iat=ts(T0), jti="jti_old") is None


async def test_refresh_forgets_expired_entries_and_purge_deletes_them(
    revocations: RevocationList, store: MemoryStore, clock: FixedClock
) -> None:
    await revoke(revocations, RevocationKind.JTI, "jti_1")
    clock.advance(KEEP - 0.001)
    await revocations.refresh()
    assert check(revocations, iat=ts(T0)) is not None, "a token it covers may still be accepted"
    assert await revocations.purge() == 0
    clock.advance(0.001)
    assert revocations.live() == [], "expired: no longer listed"
    await revocations.refresh()
    assert check(revocations, iat=ts(T0)) is None
    assert await revocations.purge() == 1
    assert await store.list_revocations(now=T0) == []


class _FlakyStore(MemoryStore):
    """A store whose reads of the revocation list fail while ``down`` is set."""

    down = False

    async def list_revocations(self, *, now: datetime) -> list[Revocation]:
        if self.down:
            raise StoreUnavailable("the database is down")
        return await super().list_revocations(now=now)


async def test_failed_refresh_keeps_the_last_list(clock: FixedClock) -> None:
    store = _FlakyStore(clock=clock)
    revocations = await open_list(store, clock)
    await revoke(revocations, RevocationKind.AGENT, "faq-bot")
    store.down = True
    with pytest.raises(StoreUnavailable):
        await revocations.refresh()
    assert check(revocations, iat=ts(T0)) is not None


class _SlowStore(MemoryStore):
    """A store whose revocation read returns what it read before ``release`` is set."""

    def __init__(self, clock: FixedClock) -> None:
        super().__init__(clock=clock)
        self.reading = asyncio.Event()
        self.release = asyncio.Event()

    async def list_revocations(self, *, now: datetime) -> list[Revocation]:
        snapshot = await super().list_revocations(now=now)
        self.reading.set()
        await self.release.wait()
        return snapshot


async def test_refresh_keeps_an_entry_recorded_while_it_read(clock: FixedClock) -> None:
    store = _SlowStore(clock)
    revocations = RevocationList(store, clock=clock, max_token_lifetime=LIFETIME, leeway=LEEWAY)
    refreshing = asyncio.create_task(revocations.refresh())
    await store.reading.wait()
    await revoke(revocations, RevocationKind.AGENT, "faq-bot")  # after the read, before the swap
    store.release.set()
    await refreshing
    assert check(revocations, iat=ts(T0)) is not None, "a refresh never loses a live entry"

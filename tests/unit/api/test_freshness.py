"""A replica never decides from state it cannot show is current (pure logic: a fake clock and
fake parts; two real replicas on PostgreSQL are in ``tests/integration/replicas``)."""

from __future__ import annotations

import asyncio

import pytest

from tether.api._freshness import Freshness
from tether.errors import StoreUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Part:
    """A part that counts its reads; a read may take time or fail."""

    def __init__(self, clock: Clock, *, takes: float = 0.0) -> None:
        self.clock, self.takes, self.reads = clock, takes, 0
        self.failing: Exception | None = None

    async def refresh(self) -> object:
        if self.failing is not None:
            raise self.failing
        await asyncio.sleep(0)
        self.clock.now += self.takes
        self.reads += 1
        return True


def _fresh(clock: Clock, **parts: Part) -> Freshness:
    return Freshness(refresh_seconds=1.0, parts=parts, monotonic=clock)


def _world() -> tuple[Clock, Part, Part, Freshness]:
    """A clock at 0, the two parts, and their freshness (read at 0)."""
    clock = Clock()
    revocations, policies = Part(clock), Part(clock)
    return clock, revocations, policies, _fresh(clock, revocations=revocations, policies=policies)


async def test_a_replica_paused_past_the_bound_reads_everything_again_before_deciding() -> None:
    clock, revocations, policies, freshness = _world()
    forgotten: list[bool] = []
    freshness.forget = lambda: forgotten.append(True)
    clock.now = 30.0  # SIGSTOP, then SIGCONT: no refresh ran meanwhile
    await freshness.ensure()
    assert (revocations.reads, policies.reads, forgotten) == (1, 1, [True])
    assert freshness.resyncs == 1


async def test_state_read_within_the_bound_is_not_read_again() -> None:
    clock, revocations, policies, freshness = _world()
    clock.now = freshness.stale_after
    await freshness.ensure()
    assert (revocations.reads, policies.reads, freshness.resyncs) == (0, 0, 0)


async def test_one_part_read_on_schedule_does_not_make_the_other_current() -> None:
    clock, revocations, policies, freshness = _world()
    clock.now = 10.0
    await freshness.read("revocations")  # its schedule ran; the policies' did not
    await freshness.ensure()
    assert (revocations.reads, policies.reads, freshness.resyncs) == (2, 1, 1)


async def test_requests_waiting_on_stale_state_share_one_resync() -> None:
    clock, revocations, policies, freshness = _world()
    clock.now = 10.0
    await asyncio.gather(*(freshness.ensure() for _ in range(20)))
    assert (revocations.reads, policies.reads, freshness.resyncs) == (1, 1, 1)


async def test_a_resync_that_fails_refuses_and_the_next_request_tries_again() -> None:
    clock, revocations, _, freshness = _world()
    clock.now = 10.0
    revocations.failing = StoreUnavailable("the database is down")
    with pytest.raises(StoreUnavailable, match=r"cannot show .* current: the database is down"):
        await freshness.ensure()
    revocations.failing = RuntimeError("a driver fault")
    with pytest.raises(StoreUnavailable, match="current: RuntimeError"):
        await freshness.ensure()
    revocations.failing = None
    await freshness.ensure()
    assert (revocations.reads, freshness.resyncs) == (1, 1)


async def test_a_read_counts_from_when_it_began_not_when_it_ended() -> None:
    clock = Clock()
    slow, policies = Part(clock, takes=5.0), Part(clock)
    freshness = _fresh(clock, revocations=slow, policies=policies)
    clock.now = 1.0
    await freshness.read("revocations")  # began at 1, ended at 6
    await freshness.read("policies")  # at 6
    assert freshness.age == pytest.approx(5.0)  # what is known is as of 1, not 6

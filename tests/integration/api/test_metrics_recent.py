"""``Metrics.recent``: decisions per minute by effect over the last few minutes (the console's
overview), from a ring of per-minute counts that forgets what is older."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tether.api.metrics import RECENT_MINUTES, Metrics
from tether.api.services import Services
from tether.monitor.events import Event

#: A minute boundary, in Unix seconds.
T0 = 1_800_000_000.0 - 1_800_000_000.0 % 60


@pytest.fixture
def metrics(services: Services) -> Iterator[Metrics]:
    counted = Metrics(services)
    try:
        yield counted
    finally:
        counted.close()


def decide(metrics: Metrics, effect: str, at: float, times: int = 1) -> None:
    for _ in range(times):
        metrics.observe(Event(type="decision", time=at, data={"effect": effect}))


def test_recent_rates_are_decisions_per_minute_by_effect(metrics: Metrics) -> None:
    decide(metrics, "allow", T0 + 1, times=10)
    decide(metrics, "allow", T0 + 61, times=5)
    decide(metrics, "deny", T0 + 62)
    decide(metrics, "approval_required", T0 + 119)
    rates = metrics.recent(now=T0 + 119.5)
    assert rates == {
        "allow": 15 / RECENT_MINUTES,
        "approval_required": 1 / RECENT_MINUTES,
        "deny": 1 / RECENT_MINUTES,
    }


def test_recent_rates_name_every_effect_when_none_came(metrics: Metrics) -> None:
    assert metrics.recent(now=T0) == {"allow": 0.0, "approval_required": 0.0, "deny": 0.0}


def test_recent_rates_forget_minutes_older_than_the_window(metrics: Metrics) -> None:
    decide(metrics, "deny", T0, times=50)
    assert metrics.recent(now=T0 + 60 * RECENT_MINUTES - 1)["deny"] == 50 / RECENT_MINUTES
    assert metrics.recent(now=T0 + 60 * RECENT_MINUTES)["deny"] == 0.0
    decide(metrics, "allow", T0 + 60 * RECENT_MINUTES)  # reuses the oldest minute's slot
    assert metrics.recent(now=T0 + 60 * RECENT_MINUTES) == {
        "allow": 1 / RECENT_MINUTES,
        "approval_required": 0.0,
        "deny": 0.0,
    }
    # Long after, with no decision since: nothing left in the window.
    assert metrics.recent(now=T0 + 3600)["allow"] == 0.0


def test_a_decision_older_than_the_ring_does_not_overwrite_a_newer_minute(
    metrics: Metrics,
) -> None:
    late = T0 + 60 * RECENT_MINUTES
    decide(metrics, "allow", late, times=3)
    decide(metrics, "deny", T0)  # same slot, five minutes older: left out
    assert metrics.recent(now=late) == {
        "allow": 3 / RECENT_MINUTES,
        "approval_required": 0.0,
        "deny": 0.0,
    }


def test_recent_rates_count_unknown_effects_as_other_and_ignore_other_events(
    metrics: Metrics,
) -> None:
    decide(metrics, "maybe", T0)
    metrics.observe(Event(type="change", time=T0, data={"effect": "allow"}))
    metrics.observe(Event(type="decision", time=float("nan"), data={"effect": "allow"}))
    rates = metrics.recent(now=T0)
    assert rates["other"] == 1 / RECENT_MINUTES
    assert rates["allow"] == 0.0


def test_recent_rates_count_decisions_still_queued(metrics: Metrics, services: Services) -> None:
    now = services.clock.now().timestamp()
    services.events.publish(Event(type="decision", time=now, data={"effect": "deny"}))
    assert metrics.recent(now=now)["deny"] == 1 / RECENT_MINUTES

"""The alert's states and deduplication (pure transitions)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from tether.errors import InvalidTransition
from tether.monitor.models import (
    MAX_SUMMARY,
    Alert,
    AlertState,
    Finding,
    Severity,
    acknowledged,
    opened,
    repeated,
    resolved,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def found(severity: Severity = Severity.MEDIUM, summary: str = "seen") -> Finding:
    return Finding(kind="denied_burst", severity=severity, key="bot", summary=summary,
                   agent="bot", details={"n": 1})  # fmt: skip


def test_a_repeat_counts_and_keeps_the_higher_severity() -> None:
    alert = opened(found(Severity.HIGH), id="alr_1", owners=("team",), now=T0)
    again = repeated(alert, found(Severity.LOW, "again"), now=T0 + timedelta(seconds=5))
    assert (again.count, again.severity, again.summary) == (2, Severity.HIGH, "again")
    assert (again.first_seen, again.last_seen, again.version) == (T0, T0 + timedelta(seconds=5), 2)
    assert repeated(again, found(Severity.CRITICAL), now=T0).severity is Severity.CRITICAL


def test_a_repeat_never_moves_last_seen_back() -> None:
    alert = opened(found(), id="alr_1", owners=(), now=T0)
    assert repeated(alert, found(), now=T0 - timedelta(seconds=9)).last_seen == T0


def test_open_acknowledged_resolved_in_order() -> None:
    alert = opened(found(), id="alr_1", owners=(), now=T0)
    acked = acknowledged(alert, by="operator:sam", now=T0, note="on it")
    done = resolved(acked, by="operator:sam", now=T0)
    assert (acked.state, done.state, done.note, done.active) == (
        AlertState.ACKNOWLEDGED, AlertState.RESOLVED, "on it", False,
    )  # fmt: skip
    assert resolved(alert, by="operator:sam", now=T0).state is AlertState.RESOLVED


STEPS: dict[str, Callable[[Alert], Alert]] = {
    "acknowledge": lambda a: acknowledged(a, by="x", now=T0),
    "resolve": lambda a: resolved(a, by="x", now=T0),
    "repeat": lambda a: repeated(a, found(), now=T0),
}


@pytest.mark.parametrize("step", sorted(STEPS))
def test_a_resolved_alert_cannot_change_again(step: str) -> None:
    done = resolved(opened(found(), id="alr_1", owners=(), now=T0), by="x", now=T0)
    with pytest.raises(InvalidTransition):
        STEPS[step](done)


def test_an_acknowledged_alert_cannot_be_acknowledged_twice() -> None:
    acked = acknowledged(opened(found(), id="alr_1", owners=(), now=T0), by="x", now=T0)
    with pytest.raises(InvalidTransition, match="not open"):
        acknowledged(acked, by="y", now=T0)


def test_a_long_summary_is_cut() -> None:
    alert = opened(found(summary="x" * 5000), id="alr_1", owners=(), now=T0)
    assert len(alert.summary) == MAX_SUMMARY


def test_details_are_frozen() -> None:
    alert = opened(found(), id="alr_1", owners=(), now=T0)
    with pytest.raises(TypeError):
        alert.details["n"] = 2  # type: ignore[index]

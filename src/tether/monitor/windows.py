"""Detectors over a window: bursts of denials per agent, and spikes of the deny and error
rates over every decision.

Both keep bounded state (per active agent; per second of the window) and read time from the
events and the monitor's ticks, never from a clock of their own.

Example::

    >>> from tether.monitor.events import Event
    >>> burst = DeniedBurst(limit=2, window=60.0)
    >>> deny = Event(type="decision", time=1.0, data={"agent": "bot", "effect": "deny"})
    >>> burst.observe_now(deny), [f.kind for f in burst.observe_now(deny)]
    ([], ['denied_burst'])
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from tether.monitor.detectors import ERROR_REFUSALS, Thresholds, finding
from tether.monitor.events import Event
from tether.monitor.models import Finding

__all__ = ["DeniedBurst", "RateSpikes"]

#: How much of a finished window's deny share goes into the baseline.
_BASELINE_WEIGHT = 0.3


class DeniedBurst:
    """``limit`` denials of one agent within ``window`` seconds; said once per window (the
    monitor folds the next ones into the open alert)."""

    def __init__(self, *, limit: int, window: float) -> None:
        self._limit, self._window = limit, window
        self._denied: dict[str, deque[float]] = {}
        self._said: dict[str, float] = {}

    def observe_now(self, event: Event) -> list[Finding]:
        d = event.data
        agent = d.get("agent")
        if event.type != "decision" or d.get("effect") != "deny" or not agent:
            return []
        times = self._denied.setdefault(str(agent), deque())
        times.append(event.time)
        while times and times[0] <= event.time - self._window:
            times.popleft()
        last = self._said.get(str(agent))
        if len(times) < self._limit or (last is not None and event.time - last < self._window):
            return []
        self._said[str(agent)] = event.time
        summary = f"agent {agent}: {len(times)} denied requests within {self._window:g} s"
        return [finding("denied_burst", str(agent), summary, agent=str(agent),
                        details={"denied": len(times), "window": self._window})]  # fmt: skip

    async def observe(self, event: Event) -> list[Finding]:
        return self.observe_now(event)

    def tick(self, now: float) -> list[Finding]:
        """Forget agents quiet for a window (the memory stays bounded by active agents)."""
        for agent in [a for a, t in self._denied.items() if not t or t[-1] <= now - self._window]:
            del self._denied[agent]
        return []


@dataclass
class _Second:
    at: int
    decisions: int = 0
    denied: int = 0
    errors: int = 0


class RateSpikes:
    """The share of denials and of failed decisions over the last ``spike_window`` seconds.

    ``deny_rate_spike`` when denials are at least ``deny_rate`` of the decisions *and*
    ``deny_rate_factor`` times the baseline (the share of the windows before, smoothed), so a
    service that always denies much is not an alert every minute. ``error_rate_spike`` when
    decisions the checkpoint itself failed — an engine error, an unusable policy set, a record
    not written — are at least ``error_rate`` of them. Nothing is said on fewer than
    ``spike_min_decisions`` decisions; each is said once per window."""

    def __init__(self, thresholds: Thresholds) -> None:
        self._t = thresholds
        self._seconds: deque[_Second] = deque()
        self._baseline: float | None = None
        self._window_start: float | None = None
        self._said: dict[str, float] = {}

    async def observe(self, event: Event) -> list[Finding]:
        if event.type != "decision":
            return []
        now = int(event.time)
        if not self._seconds or self._seconds[-1].at != now:
            self._seconds.append(_Second(at=now))
        second = self._seconds[-1]
        second.decisions += 1
        second.denied += event.data.get("effect") == "deny"
        failed = event.data.get("audit_failed") or event.data.get("refusal") in ERROR_REFUSALS
        second.errors += bool(failed)
        return []

    def tick(self, now: float) -> list[Finding]:
        window = self._t.spike_window
        while self._seconds and self._seconds[0].at <= now - window:
            self._seconds.popleft()
        total = sum(s.decisions for s in self._seconds)
        denied = sum(s.denied for s in self._seconds)
        errors = sum(s.errors for s in self._seconds)
        found = []
        if total >= self._t.spike_min_decisions:
            found = self._deny_spike(now, denied / total, total) + self._error_spike(
                now, errors / total, total
            )
        self._roll_baseline(now, denied / total if total else None)
        return found

    def _deny_spike(self, now: float, share: float, total: int) -> list[Finding]:
        base = self._baseline
        if share < self._t.deny_rate or (
            base is not None and share < self._t.deny_rate_factor * base
        ):
            return []
        said = f"{share:.0%} of {total} decisions denied in {self._t.spike_window:g} s"
        if base is not None:
            said += f" (baseline {base:.0%})"
        return self._once(now, "deny_rate_spike", said, {"share": share, "decisions": total,
                                                         "baseline": base})  # fmt: skip

    def _error_spike(self, now: float, share: float, total: int) -> list[Finding]:
        if share < self._t.error_rate:
            return []
        said = f"{share:.0%} of {total} decisions failed in the checkpoint"
        return self._once(now, "error_rate_spike", said, {"share": share, "decisions": total})

    def _once(
        self, now: float, kind: str, summary: str, details: dict[str, object]
    ) -> list[Finding]:
        last = self._said.get(kind)
        if last is not None and now - last < self._t.spike_window:
            return []
        self._said[kind] = now
        return [finding(kind, "all", summary, details=details)]

    def _roll_baseline(self, now: float, share: float | None) -> None:
        """Fold the share into the baseline once per window, after the spike was judged (only
        windows with enough decisions count; the first such one sets it)."""
        total = sum(s.decisions for s in self._seconds)
        if share is None or total < self._t.spike_min_decisions:
            return
        if self._baseline is None or self._window_start is None:
            self._baseline, self._window_start = share, now
            return
        if now - self._window_start < self._t.spike_window:
            return
        self._window_start = now
        base = self._baseline
        self._baseline = (
            share if base is None else (1 - _BASELINE_WEIGHT) * base + _BASELINE_WEIGHT * share
        )

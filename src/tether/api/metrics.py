"""The server's Prometheus metrics, as ``GET /metrics`` renders them
(:mod:`tether.api.routes.metrics`).

Each app has a :class:`~prometheus_client.CollectorRegistry` of its own (never the process-wide
default one: a process may hold many apps, tests do). Two kinds of figures:

* **counted from the event stream** — decisions by effect and enforcement point, their
  duration, the decisions that could not be recorded. A subscriber of
  :attr:`Services.events <tether.api.services.Services.events>` reads the ``decision`` events
  off the decision path (:meth:`Metrics.run`, a task of the app's lifespan), and every scrape
  first takes what is still queued, so a scrape counts every decision published before it. A
  decision never waits for this: a full queue drops the event for this subscriber (counted in
  ``tether_monitor_events_dropped_total``);
* **the last few minutes** — decisions per minute by effect over the current minute and the
  four before it (:meth:`Metrics.recent`, the console's overview), from a ring of per-minute
  counts: a constant amount of work per decision and of memory however many come;
* **read at scrape time** — live leases, pending approvals and open alerts from the store
  (at most once every :data:`GAUGE_TTL` seconds, however many scrapes come), and from memory the
  audit backlog, the monitor's queues, the event stream's totals, and the admission gate's
  requests in flight, its limit and the requests it shed (:mod:`tether.api.admission`).

Label values are bounded: an effect is one of three, an enforcement point one of the first
:data:`MAX_ENFORCEMENT_POINTS` names seen (later ones count as ``other``), a severity one of
four. No agent, user, tool or resource name is ever a label.

Example::

    metrics = Metrics(services)          # subscribes to services.events at once
    task = asyncio.create_task(metrics.run())
    text = await metrics.render()        # bytes in the Prometheus text format
    rates = metrics.recent(now=time.time())  # {"allow": 12.4, "deny": 0.2, ...} per minute
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from tether.api.admission import AdmissionGate
from tether.api.services import Services
from tether.errors import Error
from tether.monitor.events import Event
from tether.monitor.models import AlertState, Severity

__all__ = ["DECISION_BUCKETS", "GAUGE_TTL", "MAX_ENFORCEMENT_POINTS", "RECENT_MINUTES", "Metrics"]

log = structlog.get_logger("tether.metrics")

#: Upper bounds (seconds) of the decision-duration buckets: 50 µs to 1 s.
DECISION_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
#: The store's gauges are read at most this often (seconds).
GAUGE_TTL = 2.0
#: Distinct enforcement points given a label value of their own; later ones are ``other``.
MAX_ENFORCEMENT_POINTS = 16
#: Minutes :meth:`Metrics.recent` averages over (the current one and those before it).
RECENT_MINUTES = 5
#: Events the metrics subscriber may hold before new ones are dropped for it.
FEED_CAPACITY = 10_000
OTHER = "other"
_EFFECTS = frozenset({"allow", "deny", "approval_required"})
_POINT = re.compile(r"[a-z][a-z0-9_-]{0,31}")
#: Alerts not resolved yet.
_UNRESOLVED = (AlertState.OPEN, AlertState.ACKNOWLEDGED)


@dataclass(slots=True)
class _Durations:
    """One enforcement point's histogram: a count per bucket (not cumulative), the sum."""

    buckets: list[int] = field(default_factory=lambda: [0] * (len(DECISION_BUCKETS) + 1))
    total: float = 0.0


@dataclass(slots=True)
class _Minute:
    """One slot of the ring of recent minutes: which minute (Unix seconds // 60) it counts,
    and its decisions by effect."""

    minute: int = -1
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class _StoreGauges:
    leases: int
    approvals: int
    alerts: dict[str, int]


class _Queue(Protocol):
    """A subscriber whose waiting events are counted (a ``Subscription``, the monitor)."""

    @property
    def depth(self) -> int: ...


class Metrics:
    """One app's registry and the figures behind it (see the module docstring)."""

    def __init__(
        self,
        services: Services,
        *,
        gauge_ttl: float = GAUGE_TTL,
        admission: AdmissionGate | None = None,
    ) -> None:
        self._services = services
        self._admission = admission
        self._gauge_ttl = gauge_ttl
        self.registry = CollectorRegistry()
        self._feed = services.events.subscribe(capacity=FEED_CAPACITY)
        self._queues: dict[str, _Queue] = {"metrics": self._feed, "monitor": services.monitor}
        self._decisions: dict[tuple[str, str], int] = {}
        self._durations: dict[str, _Durations] = {}
        self._audit_failures: dict[str, int] = {}
        self._points: set[str] = set()
        self._minutes = [_Minute() for _ in range(RECENT_MINUTES)]
        self._store: _StoreGauges | None = None
        self._store_errors = 0
        self._read_at = -math.inf
        self._reading = asyncio.Lock()
        self.registry.register(_Collector(self))

    def watch_queue(self, name: str, subscription: _Queue) -> None:
        """Report another subscriber's queue depth as ``tether_monitor_queue_depth{subscriber=
        name}`` (a detector's, the console's feed): ``name`` is one of a few fixed names."""
        self._queues[name] = subscription

    def close(self) -> None:
        """Stop receiving events."""
        self._feed.close()

    async def run(self) -> None:
        """Until cancelled: count each event as it comes."""
        while True:
            self.observe(await self._feed.next())
            self.catch_up()

    def catch_up(self) -> None:
        """Count every event still queued, without waiting."""
        for event in self._feed.drain():
            self.observe(event)

    def observe(self, event: Event) -> None:
        """Count one event (only decisions are counted; other events are left alone)."""
        if event.type != "decision":
            return
        data = event.data
        effect = data.get("effect")
        effect = effect if isinstance(effect, str) and effect in _EFFECTS else OTHER
        point = self._point(data.get("enforcement_point"))
        key = (effect, point)
        self._decisions[key] = self._decisions.get(key, 0) + 1
        self._count_minute(effect, event.time)
        if data.get("audit_failed") is True:
            self._audit_failures[point] = self._audit_failures.get(point, 0) + 1
        elapsed = data.get("elapsed")
        if isinstance(elapsed, float | int) and math.isfinite(elapsed) and elapsed >= 0:
            durations = self._durations.get(point)
            if durations is None:
                durations = self._durations[point] = _Durations()
            durations.buckets[bisect_left(DECISION_BUCKETS, elapsed)] += 1
            durations.total += elapsed

    def _count_minute(self, effect: str, at: float) -> None:
        """Count a decision in its minute's slot of the ring; a slot holding an older minute
        is reused, a decision older than the ring's minutes is left out."""
        if not math.isfinite(at):
            return
        minute = int(at // 60)
        slot = self._minutes[minute % RECENT_MINUTES]
        if slot.minute != minute:
            if slot.minute > minute:
                return
            slot.minute = minute
            slot.counts.clear()
        slot.counts[effect] = slot.counts.get(effect, 0) + 1

    def recent(self, *, now: float) -> dict[str, float]:
        """Decisions per minute by effect over the last :data:`RECENT_MINUTES` minutes as of
        ``now`` (Unix seconds; the current minute included, so a burst shows at once): every
        effect named, ``other`` only when some came. Queued events are counted first."""
        self.catch_up()
        current = int(now // 60)
        rates = dict.fromkeys(sorted(_EFFECTS), 0.0)
        for slot in self._minutes:
            if current - RECENT_MINUTES < slot.minute <= current:
                for effect, count in slot.counts.items():
                    rates[effect] = rates.get(effect, 0.0) + count / RECENT_MINUTES
        return rates

    def _point(self, value: object) -> str:
        if not isinstance(value, str) or not _POINT.fullmatch(value):
            return OTHER
        if value not in self._points:
            if len(self._points) >= MAX_ENFORCEMENT_POINTS:
                return OTHER
            self._points.add(value)
        return value

    async def render(self) -> bytes:
        """The text format: queued events counted, the store's gauges fresh enough."""
        self.catch_up()
        await self._refresh()
        return generate_latest(self.registry)

    async def _refresh(self) -> None:
        """Read the store's gauges if the last reading is older than the TTL; one reading at
        a time (scrapes meanwhile wait for it and use it). A failed reading leaves them out
        of the scrape (and is counted) until the next one."""
        if time.monotonic() - self._read_at < self._gauge_ttl:
            return
        async with self._reading:
            if time.monotonic() - self._read_at < self._gauge_ttl:
                return
            store, now = self._services.store, self._services.clock.now()
            try:
                self._store = _StoreGauges(
                    leases=await store.count_live_leases(),
                    approvals=await store.count_pending_approvals(now=now),
                    alerts=await store.count_alerts(states=_UNRESOLVED),
                )
            except Error as exc:
                self._store, self._store_errors = None, self._store_errors + 1
                log.warning("metrics_store_unavailable", code=exc.code, error=exc.message)
            except Exception as exc:  # logged with its traceback and counted; scrapes go on
                self._store, self._store_errors = None, self._store_errors + 1
                log.exception("metrics_store_unavailable", error=type(exc).__name__)
            self._read_at = time.monotonic()

    def collect(self) -> Iterable[Metric]:
        """Every family, as of now (the registry's collector)."""
        yield from self._decision_families()
        yield from self._store_families()
        yield from self._memory_families()
        yield from self._admission_families()

    def _decision_families(self) -> Iterable[Metric]:
        decisions = CounterMetricFamily(
            "tether_decisions", "Decisions made, by effect and enforcement point.",
            labels=("effect", "enforcement_point"),
        )  # fmt: skip
        for (effect, point), count in sorted(self._decisions.items()):
            decisions.add_metric((effect, point), count)
        yield decisions
        failures = CounterMetricFamily(
            "tether_decision_audit_failures",
            "Decisions denied because their audit record could not be made durable.",
            labels=("enforcement_point",),
        )
        for point, count in sorted(self._audit_failures.items()):
            failures.add_metric((point,), count)
        yield failures
        durations = HistogramMetricFamily(
            "tether_decision_duration_seconds",
            "Time the checkpoint took to decide (authentication to durable record).",
            labels=("enforcement_point",),
        )
        for point, seen in sorted(self._durations.items()):
            durations.add_metric((point,), _cumulative(seen.buckets), seen.total)
        yield durations

    def _store_families(self) -> Iterable[Metric]:
        yield CounterMetricFamily(
            "tether_metrics_store_errors",
            "Scrapes whose store gauges could not be read (the gauges are left out then).",
            value=self._store_errors,
        )
        store = self._store
        if store is None:
            return
        yield GaugeMetricFamily("tether_leases_active", "Credential leases not ended yet.",
                                value=store.leases)  # fmt: skip
        yield GaugeMetricFamily(
            "tether_approvals_pending", "Approval requests waiting for an answer.",
            value=store.approvals,
        )  # fmt: skip
        alerts = GaugeMetricFamily(
            "tether_alerts_open", "Alerts open or acknowledged (not resolved), by severity.",
            labels=("severity",),
        )  # fmt: skip
        for severity in Severity:
            alerts.add_metric((str(severity),), store.alerts.get(str(severity), 0))
        yield alerts

    def _memory_families(self) -> Iterable[Metric]:
        audit, events = self._services.audit, self._services.events
        waiting, oldest = audit.backlog
        lag = 0.0 if oldest is None else (self._services.clock.now() - oldest).total_seconds()
        yield GaugeMetricFamily(
            "tether_audit_lag_records", "Audit records accepted but not durable yet.",
            value=waiting,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "tether_audit_lag_seconds", "Age of the oldest audit record not durable yet.",
            value=max(0.0, lag),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "tether_audit_unsigned_records",
            "Durable audit records not covered by a signed checkpoint yet.",
            value=audit.size - audit.signed_size,
        )
        depth = GaugeMetricFamily("tether_monitor_queue_depth", "Events waiting for a "
                                  "monitoring subscriber.", labels=("subscriber",))  # fmt: skip
        for name, subscription in sorted(self._queues.items()):
            depth.add_metric((name,), subscription.depth)
        yield depth
        yield CounterMetricFamily(
            "tether_monitor_events_published", "Events published to the monitor.",
            value=events.published,
        )  # fmt: skip
        yield CounterMetricFamily(
            "tether_monitor_events_dropped",
            "Deliveries dropped because a subscriber's queue was full (over all subscribers).",
            value=events.dropped,
        )

    def _admission_families(self) -> Iterable[Metric]:
        gate = self._admission
        if gate is None:
            return
        yield GaugeMetricFamily(
            "tether_requests_in_flight", "Requests being worked on (health and streams aside).",
            value=gate.in_flight,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "tether_requests_in_flight_limit",
            "The most requests worked on at once (TETHER_MAX_IN_FLIGHT); more are shed.",
            value=gate.limit,
        )
        yield CounterMetricFamily(
            "tether_requests_shed",
            "Requests answered 503 overloaded at once, undecided (a denial).",
            value=gate.shed,
        )


class _Collector:
    """The registry's view of :class:`Metrics` (collected at each scrape)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics.collect()


def _cumulative(counts: list[int]) -> list[tuple[str, float]]:
    """Per-bucket counts as Prometheus buckets: cumulative, ``+Inf`` last."""
    bounds = [*DECISION_BUCKETS, math.inf]
    running, buckets = 0, []
    for bound, count in zip(bounds, counts, strict=True):
        running += count
        buckets.append(("+Inf" if math.isinf(bound) else repr(bound), float(running)))
    return buckets

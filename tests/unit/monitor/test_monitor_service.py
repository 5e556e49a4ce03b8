"""The monitor itself (:class:`tether.monitor.service.Monitor`) over the reference in-memory
store, a real event stream, a real audit log and a fixed clock: deduplication, the queue's
drops, sinks, observed use and the automatic response."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.audit import open_log
from tether._internal.clock import FixedClock
from tether.audit.log import AuditLog
from tether.audit.records import AuditRecord, Outcome
from tether.errors import StoreUnavailable
from tether.identity.access import Actor
from tether.identity.models import AgentState, Declarations, Role
from tether.identity.registry import Registry
from tether.monitor.detectors import DecisionRules, EventRules, OutOfDeclaration, finding
from tether.monitor.events import Event, EventStream
from tether.monitor.models import Alert, AlertState, Finding, Severity, Usage, resolved
from tether.monitor.service import UNDECLARED_KEPT, Monitor, Responses
from tether.store.interfaces import AlertMatch
from tether.store.memory import MemoryStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TRUST_DOMAIN = "acme.org"
SECURITY = Actor.operator(token_id="opt_sam", name="sam", role=Role.SECURITY_ADMIN)


class Outage(MemoryStore):
    """The reference store, whose next call of each method named in ``failing`` fails as a
    store that is down does (once: the call after succeeds)."""

    def __init__(self, *, clock: FixedClock) -> None:
        super().__init__(clock=clock)
        self.failing: set[str] = set()

    def _down(self, method: str) -> None:
        if method in self.failing:
            self.failing.discard(method)
            raise StoreUnavailable("the store is down")

    async def record_usage(self, usage: Sequence[Usage]) -> None:
        self._down("record_usage")
        await super().record_usage(usage)

    async def create_alert(self, alert: Alert) -> None:
        self._down("create_alert")
        await super().create_alert(alert)

    async def update_alert(self, alert: Alert, *, expected_version: int) -> None:
        self._down("update_alert")
        await super().update_alert(alert, expected_version=expected_version)


class Recording:
    """An alert sink that keeps what it was handed."""

    def __init__(self) -> None:
        self.delivered: list[tuple[str, str, int]] = []

    async def deliver(self, alert: Alert, change: str) -> None:
        self.delivered.append((alert.id, change, alert.count))


class Broken:
    """An alert sink that breaks its contract and raises."""

    async def deliver(self, alert: Alert, change: str) -> None:
        raise RuntimeError(f"the pager is down ({alert.id}, {change})")


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def store(clock: FixedClock) -> Outage:
    return Outage(clock=clock)


@pytest.fixture
async def audit(store: MemoryStore, clock: FixedClock) -> AsyncIterator[AuditLog]:
    log = await open_log(store, clock)
    yield log
    await log.close()


@pytest.fixture
def registry(store: MemoryStore, audit: AuditLog, clock: FixedClock) -> Registry:
    return Registry(store=store, audit=audit, clock=clock, trust_domain=TRUST_DOMAIN)


MonitorFactory = Callable[..., Monitor]


@pytest.fixture
def make_monitor(
    store: MemoryStore, audit: AuditLog, clock: FixedClock, registry: Registry
) -> MonitorFactory:
    async def quarantine(agent: str, reason: str) -> object:
        return await registry.set_state(agent, AgentState.QUARANTINED,
                                        actor=Actor.system("monitor"), reason=reason)  # fmt: skip

    def make(**options: Any) -> Monitor:
        values: dict[str, Any] = {
            "store": store, "audit": audit, "clock": clock, "events": EventStream(),
            "detectors": (EventRules(), DecisionRules()), "quarantine": quarantine,
            "tick_seconds": 3600.0, "usage_flush_seconds": 3600.0,
        } | options  # fmt: skip
        return Monitor(**values)

    return make


async def register(registry: Registry, name: str = "bot") -> None:
    await registry.register(actor=SECURITY, name=name, owners=["alice"], description="",
                            declarations=Declarations())  # fmt: skip


def burst(agent: str = "bot") -> Finding:
    return finding("denied_burst", agent, f"agent {agent}: 20 denied requests", agent=agent)


async def records(store: MemoryStore, tag: str) -> list[AuditRecord]:
    page = await store.list_audit(type_prefix=tag, limit=1000)
    return [record for _, record in page if record.type == tag]


async def alerts(store: MemoryStore, kind: str) -> list[Alert]:
    return await store.list_alerts(AlertMatch(kind=kind), limit=100)


def decision(at: float, effect: str = "allow", **data: object) -> Event:
    facts = {"effect": effect, "agent": "bot", "action": 'Tether::Action::"call_tool"',
             "resource": 'Tool::"search"'} | data  # fmt: skip
    return Event(type="decision", time=at, data=facts)


# -- the queue ---------------------------------------------------------------------------


@asynccontextmanager
async def running(monitor: Monitor) -> AsyncIterator[asyncio.Task[None]]:
    """``monitor.run()`` as the server runs it, once it has subscribed to its stream."""
    task = asyncio.create_task(monitor.run())
    await asyncio.sleep(0)  # it runs up to its first wait: subscribed from now on
    assert monitor._subscription is not None
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)  # however it ended


async def test_a_full_monitor_queue_raises_monitor_events_dropped(
    make_monitor: MonitorFactory, store: MemoryStore
) -> None:
    monitor = make_monitor(capacity=1)
    async with running(monitor):
        # Published at once, before the monitor reads: one is queued, four are dropped.
        for n in range(5):
            monitor.events.publish(Event(type="heartbeat", time=float(n), data={"n": n}))
        [raised] = await monitor.tick()
        assert (raised.kind, raised.key, raised.severity) == (
            "monitor_events_dropped", "queue", Severity.HIGH,
        )  # fmt: skip
        assert raised.details == {"dropped": 4, "dropped_total": 4}
        assert await monitor.tick() == []  # no new drops: nothing more to say
    [stored] = await alerts(store, "monitor_events_dropped")
    assert (stored.id, stored.count) == (raised.id, 1)
    [record] = await records(store, "alert.raised")
    assert record.details["kind"] == "monitor_events_dropped"


async def test_an_event_the_monitor_could_not_handle_does_not_stop_it(
    make_monitor: MonitorFactory, store: Outage
) -> None:
    monitor = make_monitor()
    store.failing.add("create_alert")  # the first alert cannot be stored
    async with running(monitor) as task:
        monitor.events.publish(Event(type="policy.refresh_failed", time=1.0, data={"error": "x"}))
        monitor.events.publish(Event(type="lease.irrevocable", time=2.0, data={"id": "lse_1"}))
        async with asyncio.timeout(5):
            while True:
                if await alerts(store, "lease_irrevocable") or task.done():
                    break
                await asyncio.sleep(0.01)
        assert not task.done(), "the monitor stopped"
    assert [a.key for a in await alerts(store, "lease_irrevocable")] == ["lse_1"]


# -- deduplication -----------------------------------------------------------------------


async def test_a_finding_seen_twice_is_one_alert_counted_twice_and_raised_once(
    make_monitor: MonitorFactory, store: MemoryStore, clock: FixedClock, registry: Registry
) -> None:
    await register(registry)
    monitor = make_monitor()
    first = await monitor.report(burst())
    clock.advance(30)
    second = await monitor.report(burst())
    assert second.id == first.id
    [stored] = await alerts(store, "denied_burst")
    assert (stored.count, stored.first_seen, stored.last_seen) == (2, T0, clock.now())
    assert stored.owners == ("alice",)
    [raised] = await records(store, "alert.raised")
    assert (raised.subject, raised.actor) == (f"alert:{first.id}", "system:monitor")
    assert raised.details["kind"] == "denied_burst"


async def test_a_finding_after_its_alert_was_resolved_opens_a_new_one(
    make_monitor: MonitorFactory, store: MemoryStore
) -> None:
    monitor = make_monitor()
    first = await monitor.report(burst())
    done = await monitor.resolve(first.id, actor=SECURITY, note="handled")
    assert done.state is AlertState.RESOLVED
    again = await monitor.report(burst())
    assert again.id != first.id
    assert (again.state, again.count) == (AlertState.OPEN, 1)
    states = {a.id: a.state for a in await alerts(store, "denied_burst")}
    assert states == {first.id: AlertState.RESOLVED, again.id: AlertState.OPEN}
    assert [r.subject for r in await records(store, "alert.raised")] == [
        f"alert:{first.id}", f"alert:{again.id}",
    ]  # fmt: skip
    [resolved] = await records(store, "alert.resolved")
    assert (resolved.actor, resolved.details["note"]) == ("operator:sam", "handled")


async def test_two_concurrent_reports_of_one_finding_make_one_active_alert(
    make_monitor: MonitorFactory, store: MemoryStore
) -> None:
    monitor = make_monitor()
    one, other = await asyncio.gather(monitor.report(burst()), monitor.report(burst()))
    [active] = await alerts(store, "denied_burst")
    assert active.state is AlertState.OPEN
    assert {one.id, other.id} == {active.id}
    assert active.count == 2


async def test_a_report_that_loses_the_race_to_open_leaves_no_record_of_an_alert_never_made(
    make_monitor: MonitorFactory, store: MemoryStore
) -> None:
    monitor = make_monitor()
    await asyncio.gather(monitor.report(burst()), monitor.report(burst()))
    [active] = await alerts(store, "denied_burst")
    raised = await records(store, "alert.raised")
    failed = {r.correlation_id for r in raised if r.outcome is Outcome.FAILURE}
    standing = [r.subject for r in raised if r.outcome is Outcome.SUCCESS and r.id not in failed]
    assert standing == [f"alert:{active.id}"]


# -- sinks -------------------------------------------------------------------------------


async def test_a_sink_that_raises_loses_no_alert(
    make_monitor: MonitorFactory, store: MemoryStore
) -> None:
    after = Recording()
    monitor = make_monitor(sinks=(Broken(), after))
    raised = await monitor.report(burst())
    assert [a.id for a in await alerts(store, "denied_burst")] == [raised.id]
    assert after.delivered == [(raised.id, "raised", 1)]  # the sink after it still hears
    await monitor.acknowledge(raised.id, actor=SECURITY)
    await monitor.resolve(raised.id, actor=SECURITY)
    assert [change for _, change, _ in after.delivered] == ["raised", "acknowledged", "resolved"]
    assert (await store.get_alert(raised.id)).state is AlertState.RESOLVED  # type: ignore[union-attr]


# -- observed use ------------------------------------------------------------------------


async def test_allowed_decisions_are_counted_as_use_and_flushed(
    make_monitor: MonitorFactory, store: MemoryStore
) -> None:
    monitor = make_monitor()
    base = T0.timestamp()
    for event in (
        decision(base + 1),
        decision(base + 5),
        decision(base + 6, effect="deny"),  # refused: no use
        decision(base + 7, agent=None),  # nobody's use
        decision(base + 8, resource='Tool::"refund"'),
        Event(type="lease.irrevocable", time=base + 9, data={"id": "lse_1", "agent": "bot"}),
    ):
        await monitor.handle(event)
    assert await store.list_usage() == []  # counted in memory until flushed
    await monitor.flush_usage()
    used = {(u.resource, u.count, u.last_used.timestamp()) for u in await store.list_usage()}
    assert used == {('Tool::"search"', 2, base + 5), ('Tool::"refund"', 1, base + 8)}
    await monitor.flush_usage()  # nothing new: nothing added
    assert sum(u.count for u in await store.list_usage()) == 3


async def test_use_not_written_is_kept_for_the_next_flush(
    make_monitor: MonitorFactory, store: Outage
) -> None:
    monitor = make_monitor()
    base = T0.timestamp()
    await monitor.handle(decision(base + 1))
    await monitor.handle(decision(base + 2))
    store.failing.add("record_usage")
    with pytest.raises(StoreUnavailable):
        await monitor.flush_usage()
    await monitor.handle(decision(base + 3))  # seen while the store was down
    await monitor.flush_usage()
    [use] = await store.list_usage()
    assert (use.agent, use.count, use.last_used.timestamp()) == ("bot", 3, base + 3)


# -- the automatic response --------------------------------------------------------------


async def test_quarantine_answers_only_the_configured_kinds_at_or_above_the_severity(
    make_monitor: MonitorFactory, store: MemoryStore, registry: Registry
) -> None:
    for name in ("bot", "probe", "ops-bot"):
        await register(registry, name)
    monitor = make_monitor(responses=Responses(quarantine_at=Severity.HIGH))
    await monitor.report(burst("bot"))  # denied_burst, high: its own behaviour
    await monitor.report(finding("out_of_declaration", "probe x", "undeclared", agent="probe"))
    await monitor.report(finding("audit_sink_failed", "r1", "not durable", agent="ops-bot"))
    states = {name: (await registry.get(name, actor=SECURITY)).state
              for name in ("bot", "probe", "ops-bot")}  # fmt: skip
    assert states == {
        "bot": AgentState.QUARANTINED,
        "probe": AgentState.ACTIVE,  # medium: below the bar
        "ops-bot": AgentState.ACTIVE,  # Tether's own trouble, not the agent's doing
    }
    [response] = await records(store, "alert.response")
    assert response.outcome is Outcome.SUCCESS
    assert (response.details["action"], response.details["agent"]) == ("quarantine", "bot")


async def test_no_quarantine_unless_configured(
    make_monitor: MonitorFactory, store: MemoryStore, registry: Registry
) -> None:
    await register(registry)
    monitor = make_monitor()  # quarantine_at unset: the default
    await monitor.report(burst())
    assert (await registry.get("bot", actor=SECURITY)).state is AgentState.ACTIVE
    assert await records(store, "alert.response") == []


async def test_a_quarantine_that_fails_is_audited_as_a_failure_and_the_alert_stays(
    make_monitor: MonitorFactory, store: MemoryStore
) -> None:
    monitor = make_monitor(responses=Responses(quarantine_at=Severity.MEDIUM))
    raised = await monitor.report(burst("ghost"))  # no such agent: the registry refuses
    assert [a.id for a in await alerts(store, "denied_burst")] == [raised.id]
    [response] = await records(store, "alert.response")
    assert response.outcome is Outcome.FAILURE
    assert response.subject == f"alert:{raised.id}"
    assert (response.details["agent"], response.details["error"]) == ("ghost", "agent_not_found")


# -- out of declaration ------------------------------------------------------------------


def undeclared(agent: str, resource: str) -> Finding:
    return finding("out_of_declaration", agent, f"{agent} used {resource}", agent=agent,
                   details={"resource": resource, "action": "call_tool"})  # fmt: skip


async def test_an_agent_sweeping_undeclared_resources_is_one_alert_not_a_storm(
    make_monitor: MonitorFactory, store: MemoryStore, registry: Registry
) -> None:
    await register(registry, "sweeper")
    before = (await registry.get("sweeper", actor=SECURITY)).risk_score
    reassessed: list[list[str]] = []

    async def reassess(agent: str, resources: Sequence[str]) -> object:
        reassessed.append(list(resources))
        return await registry.reassess(agent, undeclared=resources)

    monitor = make_monitor(reassess=reassess)
    sweep = [f'Table::"t{n}"' for n in range(UNDECLARED_KEPT + 40)]
    for resource in [*sweep, *sweep[:5]]:
        await monitor.report(undeclared("sweeper", resource))
    [alert] = await alerts(store, "out_of_declaration")
    assert alert.count == len(sweep) + 5
    assert len(await records(store, "alert.raised")) == 1
    # The alert holds the first resources seen; the risk is assessed again only while that
    # list grows, never once per call.
    assert list(alert.details["resources"]) == sweep[:UNDECLARED_KEPT]
    assert alert.details["resource"] == sweep[4]  # the latest use
    assert reassessed == [sweep[: n + 1] for n in range(UNDECLARED_KEPT)]
    assert len(await records(store, "agent.reassessed")) == UNDECLARED_KEPT
    after = (await registry.get("sweeper", actor=SECURITY)).risk_score
    assert after == min(100, before + 30)  # the undeclared-use factor, at its cap


async def test_undeclared_use_by_two_agents_is_two_alerts(
    make_monitor: MonitorFactory, store: MemoryStore, registry: Registry
) -> None:
    for name in ("bot-a", "bot-b"):
        await register(registry, name)
    monitor = make_monitor()
    for name in ("bot-a", "bot-b", "bot-a"):
        await monitor.report(undeclared(name, 'Tool::"transfer"'))
    found = {a.agent: a.count for a in await alerts(store, "out_of_declaration")}
    assert found == {"bot-a": 2, "bot-b": 1}


# -- repeats under load ------------------------------------------------------------------


def irrevocable(at: float) -> Event:
    return Event(type="lease.irrevocable", time=at, data={"id": "lse_1", "agent": "bot"})


async def repeat(monitor: Monitor, times: int) -> None:
    """``times`` more of the lease's finding, each counted and none written."""
    for n in range(times):
        assert await monitor.handle(irrevocable(2.0 + n)) == []


async def test_repeats_of_an_active_alert_are_written_once_a_tick_not_once_an_event(
    make_monitor: MonitorFactory, store: MemoryStore, clock: FixedClock
) -> None:
    monitor = make_monitor()
    [first] = await monitor.handle(irrevocable(1.0))
    for n in range(49):
        clock.advance(0.01)
        assert await monitor.handle(irrevocable(2.0 + n)) == []  # counted, not written
    last = clock.now()
    [stored] = await alerts(store, "lease_irrevocable")
    assert (stored.count, stored.version) == (1, first.version)  # no write per event
    clock.advance(0.5)
    await monitor.tick()
    [stored] = await alerts(store, "lease_irrevocable")
    assert (stored.id, stored.count, stored.version) == (first.id, 50, first.version + 1)
    assert stored.last_seen == last  # when it was last seen, not when it was written
    assert len(await records(store, "alert.raised")) == 1
    await monitor.tick()
    [stored] = await alerts(store, "lease_irrevocable")
    assert stored.version == first.version + 1  # nothing new: nothing written


async def test_repeats_are_written_when_the_monitor_stops(
    make_monitor: MonitorFactory, store: MemoryStore
) -> None:
    monitor = make_monitor()
    async with running(monitor):
        for n in range(5):
            monitor.events.publish(irrevocable(float(n)))
        # Another lease's alert, opened at once, says the five before it were handled.
        monitor.events.publish(Event(type="lease.irrevocable", time=9.0, data={"id": "lse_2"}))
        async with asyncio.timeout(5):
            while len(await alerts(store, "lease_irrevocable")) < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        [stored] = [a for a in await alerts(store, "lease_irrevocable") if a.key == "lse_1"]
        assert stored.count == 1
    [stored] = [a for a in await alerts(store, "lease_irrevocable") if a.key == "lse_1"]
    assert stored.count == 5


async def test_a_repeat_after_another_replica_resolved_the_alert_opens_a_new_one_at_the_tick(
    make_monitor: MonitorFactory, store: MemoryStore, clock: FixedClock
) -> None:
    monitor = make_monitor()
    [first] = await monitor.handle(irrevocable(1.0))
    # Resolved elsewhere: this monitor still believes the alert active.
    done = resolved(first, by="operator:sam", now=clock.now(), note=None)
    await store.update_alert(done, expected_version=first.version)
    clock.advance(1)
    await repeat(monitor, 3)
    await monitor.tick()
    states = {a.id: (a.state, a.count) for a in await alerts(store, "lease_irrevocable")}
    [again] = set(states) - {first.id}
    assert states == {first.id: (AlertState.RESOLVED, 1), again: (AlertState.OPEN, 3)}
    assert len(await records(store, "alert.raised")) == 2


async def test_repeats_seen_before_another_replica_resolved_the_alert_open_nothing(
    make_monitor: MonitorFactory, store: MemoryStore, clock: FixedClock
) -> None:
    monitor = make_monitor()
    [first] = await monitor.handle(irrevocable(1.0))
    await repeat(monitor, 3)
    clock.advance(1)  # then resolved elsewhere: the repeats were part of what was resolved
    done = resolved(first, by="operator:sam", now=clock.now(), note=None)
    await store.update_alert(done, expected_version=first.version)
    await monitor.tick()
    [only] = await alerts(store, "lease_irrevocable")
    assert (only.id, only.state) == (first.id, AlertState.RESOLVED)
    assert len(await records(store, "alert.raised")) == 1


async def test_repeats_pending_when_an_operator_resolves_here_are_counted_in_that_alert(
    make_monitor: MonitorFactory, store: MemoryStore, clock: FixedClock
) -> None:
    monitor = make_monitor()
    [first] = await monitor.handle(irrevocable(1.0))
    await repeat(monitor, 4)
    clock.advance(1)
    done = await monitor.resolve(first.id, actor=SECURITY, note="handled")
    assert (done.state, done.count) == (AlertState.RESOLVED, 5)
    await monitor.tick()  # nothing left to open a false alert with
    [only] = await alerts(store, "lease_irrevocable")
    assert (only.id, only.state, only.count) == (first.id, AlertState.RESOLVED, 5)
    assert len(await records(store, "alert.raised")) == 1


async def test_repeats_a_failing_store_refused_are_written_at_a_later_tick(
    make_monitor: MonitorFactory, store: Outage
) -> None:
    monitor = make_monitor()
    [first] = await monitor.handle(irrevocable(1.0))
    await repeat(monitor, 3)
    store.failing.add("update_alert")
    await monitor.tick()  # refused: kept
    assert await monitor.handle(irrevocable(9.0)) == []
    await monitor.tick()
    [stored] = await alerts(store, "lease_irrevocable")
    assert (stored.id, stored.count) == (first.id, 5)


async def test_a_repeat_resolved_here_opens_a_new_alert_at_once(
    make_monitor: MonitorFactory, store: MemoryStore
) -> None:
    monitor = make_monitor()
    [first] = await monitor.handle(irrevocable(1.0))
    await monitor.resolve(first.id, actor=SECURITY, note="handled")
    [again] = await monitor.handle(irrevocable(2.0))
    assert (again.state, again.count) == (AlertState.OPEN, 1)
    assert again.id != first.id


async def test_an_undeclared_resource_that_grows_the_alert_is_written_at_once_a_repeat_is_not(
    make_monitor: MonitorFactory, store: MemoryStore, registry: Registry
) -> None:
    await register(registry, "sweeper")

    async def declared(agent: str) -> Declarations | None:
        return Declarations()

    monitor = make_monitor(detectors=(OutOfDeclaration(declared),))
    use = [decision(float(n), agent="sweeper", resource=f'Table::"t{n % 3}"') for n in range(9)]
    written = [await monitor.handle(event) for event in use]
    # Each new resource grows what the alert holds (and the agent is assessed again): written
    # then; the same resources again are only counted.
    assert [len(w) for w in written] == [1, 1, 1, 0, 0, 0, 0, 0, 0]
    [alert] = await alerts(store, "out_of_declaration")
    assert (alert.count, list(alert.details["resources"])) == (
        3,
        ['Table::"t0"', 'Table::"t1"', 'Table::"t2"'],
    )
    await monitor.tick()
    [alert] = await alerts(store, "out_of_declaration")
    assert alert.count == 9
    assert alert.details["resource"] == 'Table::"t2"'  # the latest use


# -- what the store would not take -------------------------------------------------------


async def test_a_finding_the_store_refused_is_reported_at_the_next_tick(
    make_monitor: MonitorFactory, store: Outage
) -> None:
    async def probe_down() -> float | None:
        raise StoreUnavailable("the store is down")

    monitor = make_monitor(reaper_lag=probe_down)
    store.failing.add("create_alert")
    event = Event(type="lease.irrevocable", time=1.0, data={"id": "lse_1", "agent": "bot"})
    assert await monitor.handle(event) == []  # the store refused it: kept, not lost
    # The next tick reports it, even though the reaper's probe fails in the same round.
    [alert] = await monitor.tick()
    assert (alert.kind, alert.key) == ("lease_irrevocable", "lse_1")
    assert [a.id for a in await alerts(store, "lease_irrevocable")] == [alert.id]
    assert await monitor.tick() == []  # reported once

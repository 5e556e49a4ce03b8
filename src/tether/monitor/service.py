"""The monitor: events in, alerts out — deduplicated, stored, audited, delivered, answered.

:meth:`Monitor.run` reads its own bounded subscription of the event stream (a full queue drops
events *for the monitor* and never slows a decision; the drops are themselves an alert,
``monitor_events_dropped``), hands every event to the detectors, and once a second ticks the
windowed detectors and the probes (the lease reaper's lag). Each finding goes through
:meth:`Monitor.report`:

1. the active alert of the same ``(kind, key)`` is bumped, or a new one opened — at most one
   active per ``(kind, key)``, across replicas (the store refuses a second one);
2. a new alert is an ``alert.raised`` audit record **before** it is stored, then handed to
   every sink (the log, signed webhooks; the console reads the store), and, when configured
   (:class:`Responses`, off by default), answered: the agent concerned is quarantined (an
   ``alert.response`` record, whether it worked or not);
3. an out-of-declaration finding adds its resource to the agent's one alert (its
   ``resources``: the first ``UNDECLARED_KEPT`` seen) and, when that list grew, re-assesses
   the agent's risk with it — so an agent sweeping undeclared resources is one alert and a
   handful of assessments, never a storm of either.

Repeats are coalesced. A finding from an event, for an alert this monitor knows is active,
that would neither raise its severity nor grow what it holds, is counted in memory and
written with the tick (:meth:`Monitor.flush_repeats`): one store write per alert a second,
not one per event — an agent making a thousand undeclared reads a second would otherwise
double the database's writes and hold its write lock against the audit log's commits. The
count and ``last_seen`` in the store lag by at most a tick. Repeats pending when the alert
is resolved here are counted in it first; a repeat after another replica resolved it opens
the new alert at the tick, and repeats seen before that resolution are let go.

Allowed decisions are counted as :class:`~tether.monitor.models.Usage` and written to the store
every few seconds (the least-privilege recommendations of the posture report read them).

Example::

    monitor = Monitor(store=store, audit=audit, clock=clock, events=events,
                      detectors=default_detectors(...))
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(monitor.run())
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

import structlog

from tether._internal.clock import Clock
from tether._internal.ids import new_id
from tether.audit.records import AuditRecord, Outcome
from tether.audit.sink import AuditSink
from tether.errors import (
    AlertNotFound,
    Conflict,
    Error,
    Forbidden,
    InvalidInput,
    VersionConflict,
)
from tether.identity.access import Actor, Permission, allowed, require
from tether.monitor._repeats import Repeat, Repeats
from tether.monitor.detectors import Detector, finding
from tether.monitor.events import Event, EventStream, Subscription
from tether.monitor.models import (
    Alert,
    Finding,
    Severity,
    Usage,
    acknowledged,
    opened,
    repeated,
    resolved,
)
from tether.store.interfaces import AgentStore, AlertMatch, MonitorStore

__all__ = ["AlertSink", "Monitor", "Responses"]

log = structlog.get_logger("tether.monitor")

#: Tries at bumping an alert another replica is bumping too.
_BUMP_TRIES = 5
#: An out-of-declaration alert holds at most this many resources (the first seen; the risk
#: score counts three at most, the alert shows what the agent went for).
UNDECLARED_KEPT = 16
#: Events the monitor may hold before new ones are dropped for it.
QUEUE_CAPACITY = 10_000
#: Alert records kept while the audit log fails, and findings kept while the store fails.
MAX_PENDING = 10_000


class AlertSink(Protocol):
    """Somewhere alerts go: ``change`` is ``raised``, ``acknowledged`` or ``resolved``. A
    sink must not raise for a delivery it could not make (it logs and counts it)."""

    async def deliver(self, alert: Alert, change: str) -> None: ...


class _MonitorStore(MonitorStore, AgentStore, Protocol): ...


@dataclass(frozen=True, kw_only=True)
class Responses:
    """Automatic responses: quarantine the agent of an alert of one of ``kinds`` at or above
    ``quarantine_at`` (None: never — the default)."""

    quarantine_at: Severity | None = None
    #: Kinds that come from what the agent does (not from Tether's own troubles).
    kinds: frozenset[str] = frozenset(
        {"denied_burst", "out_of_declaration", "chain_too_deep", "revoked_credential_used"}
    )

    def quarantines(self, alert: Alert) -> bool:
        at = self.quarantine_at
        return (
            at is not None
            and alert.agent is not None
            and alert.kind in self.kinds
            and alert.severity.rank >= at.rank
        )


@dataclass(kw_only=True)
class Monitor:
    store: _MonitorStore
    audit: AuditSink
    clock: Clock
    events: EventStream
    detectors: Sequence[Detector]
    sinks: Sequence[AlertSink] = ()
    responses: Responses = field(default_factory=Responses)
    #: Quarantine an agent (the registry's, which also ends its leases and tokens).
    quarantine: Callable[[str, str], Awaitable[object]] | None = None
    #: Re-assess an agent with what it was seen using undeclared.
    reassess: Callable[[str, Sequence[str]], Awaitable[object]] | None = None
    #: Seconds a lease has been overdue for the reaper (None: nothing is due).
    reaper_lag: Callable[[], Awaitable[float | None]] | None = None
    reaper_lag_limit: float = 60.0
    tick_seconds: float = 1.0
    usage_flush_seconds: float = 5.0
    capacity: int = QUEUE_CAPACITY
    _usage: dict[tuple[str, str, str], Usage] = field(default_factory=dict, init=False)
    #: Alerts this monitor wrote last, by ``(kind, key)`` (at most ``MAX_PENDING``).
    _known: dict[tuple[str, str], Alert] = field(default_factory=dict, init=False)
    #: Repeats of known active alerts not written yet.
    _repeats: Repeats = field(default_factory=Repeats, init=False)
    _subscription: Subscription | None = field(default=None, init=False)
    _dropped_seen: int = field(default=0, init=False)
    #: Audit records of alerts that could not be written yet (the log was failing), and
    #: findings that could not be reported (the store was failing): tried again each tick.
    _unrecorded: list[AuditRecord] = field(default_factory=list, init=False)
    _unreported: list[Finding] = field(default_factory=list, init=False)

    async def run(self) -> None:
        """Until cancelled: read events, tick, write usage. Usage not yet written is written
        when cancelled."""
        self._subscription = feed = self.events.subscribe(capacity=self.capacity)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._read(feed))
                tasks.create_task(self._every(self.tick_seconds, self.tick))
                tasks.create_task(self._every(self.usage_flush_seconds, self.flush_usage))
        finally:
            feed.close()
            await asyncio.shield(self._flush_quietly())

    @property
    def depth(self) -> int:
        """Events waiting for the monitor (0 before it runs): a gauge."""
        return 0 if self._subscription is None else self._subscription.depth

    async def _read(self, feed: Subscription) -> None:
        while True:
            event = await feed.next()
            try:
                await self.handle(event)
            except Exception:  # one bad event never stops the monitor
                log.exception("monitor_event_failed", event_type=event.type)

    async def _every(self, seconds: float, work: Callable[[], Awaitable[object]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await work()
            except Exception:  # logged; the next round runs
                log.exception("monitor_round_failed", work=getattr(work, "__name__", "?"))

    async def handle(self, event: Event) -> list[Alert]:
        """Every alert ``event`` raised or bumped."""
        self._count_use(event)
        found: list[Finding] = []
        for detector in self.detectors:
            found += await detector.observe(event)
        return await self._report_all([f for f in found if not self._coalesced(f)])

    async def tick(self) -> list[Alert]:
        """The windowed detectors, the queue's drops and the probes, now; and what could not
        be recorded or reported before."""
        await self._record_pending()
        try:
            await self.flush_repeats()
        except Exception:  # kept for the next tick; the rest of this one runs
            log.exception("alert_repeats_flush_failed")
        now = self.clock.now()
        found, self._unreported = self._unreported, []
        for detector in self.detectors:
            found += detector.tick(now.timestamp())
        found += self._drops()
        found += await self._reaper()
        return await self._report_all(found)

    async def _report_all(self, found: Sequence[Finding]) -> list[Alert]:
        """Each finding reported; one the store could not take is kept for the next tick
        (at most :data:`MAX_PENDING`; beyond, the oldest is logged and let go)."""
        alerts = []
        for each in found:
            try:
                alerts.append(await self.report(each))
            except Error as exc:
                log.warning("alert_not_stored", kind=each.kind, key=each.key, code=exc.code)
                self._unreported = [*self._unreported, each][-MAX_PENDING:]
        return alerts

    async def _recorded(self, record: AuditRecord) -> bool:
        """Append ``record``; while the audit log fails, keep it to append later (the alert
        goes on: an audit outage is exactly when alerts matter)."""
        if not self._unrecorded:
            try:
                await self.audit.append(record)
            except (Error, TimeoutError, OSError) as exc:
                log.warning("alert_record_pending", record_type=record.type, error=repr(exc)[:200])
            else:
                return True
        if len(self._unrecorded) >= MAX_PENDING:
            log.error("alert_record_lost", record_type=record.type, subject=record.subject)
            return False
        self._unrecorded.append(record)
        return False

    async def _record_pending(self) -> None:
        """Append the records kept while the log failed, oldest first, until one fails."""
        while self._unrecorded:
            try:
                await self.audit.append(self._unrecorded[0])
            except (Error, TimeoutError, OSError):
                return
            self._unrecorded.pop(0)

    def _drops(self) -> list[Finding]:
        dropped = self.events.dropped
        if dropped <= self._dropped_seen:
            return []
        lost, self._dropped_seen = dropped - self._dropped_seen, dropped
        summary = f"{lost} events dropped: a monitor fell behind (queue full)"
        return [finding("monitor_events_dropped", "queue", summary,
                        details={"dropped": lost, "dropped_total": dropped})]  # fmt: skip

    async def _reaper(self) -> list[Finding]:
        """The reaper's lag, when it lags (a probe that fails says nothing: the store's
        trouble is reported by what depends on it)."""
        try:
            lag = await self.reaper_lag() if self.reaper_lag is not None else None
        except Error as exc:
            log.warning("reaper_probe_failed", code=exc.code)
            return []
        if lag is None or lag < self.reaper_lag_limit:
            return []
        summary = f"a lease is {lag:.0f} s past its expiry and still live: the reaper lags"
        return [finding("reaper_lag", "reaper", summary, details={"lag_seconds": round(lag, 1)})]

    async def report(
        self, found: Finding, *, times: int = 1, seen: datetime | None = None
    ) -> Alert:
        """The alert ``found`` opens or bumps (see the module docstring): seen ``times``, the
        last time at ``seen`` (now when not given)."""
        now = self.clock.now() if seen is None else seen
        for _ in range(_BUMP_TRIES):
            active = await self.store.active_alert(found.kind, found.key)
            held, grew = _held(found, active)
            try:
                alert = await (
                    self._bump(active, held, now, times) if active else self._open(held, now, times)
                )
            except Conflict:  # a VersionConflict too
                continue  # it moved, or another replica opened it first: bump that one
            self._know(alert)
            if grew:
                await self._reassess(alert)
            return alert
        raise VersionConflict(f"alert {found.kind}/{found.key} keeps moving")

    def _know(self, alert: Alert) -> None:
        if len(self._known) >= MAX_PENDING:
            self._known.clear()  # forgotten alerts are read again: nothing is lost
        self._known[(alert.kind, alert.key)] = alert

    def _coalesced(self, found: Finding) -> bool:
        """Whether ``found`` is a repeat of a known active alert that changes nothing but its
        count and time: then it is counted here, and written by :meth:`flush_repeats`."""
        key = (found.kind, found.key)
        known = self._known.get(key)
        if known is None or not known.active or found.severity.rank > known.severity.rank:
            return False
        held, grew = _held(found, known)
        if grew:
            return False
        self._repeats.count(held, seen=self.clock.now(), alert_id=known.id)
        return True

    async def flush_repeats(self) -> None:
        """Write the repeats counted since the last flush. Repeats counted for an alert that
        was resolved after them (on another replica) were seen before the resolution: they
        are let go, not made into a new alert. One the store refused, or that an error or a
        cancellation interrupted, is kept for the next flush with every one not yet tried."""
        taken = self._repeats.take()
        try:
            while taken:
                key = next(iter(taken))
                repeat = taken[key]
                if not await self._resolved_after(repeat):
                    await self.report(repeat.finding, times=repeat.times, seen=repeat.seen)
                del taken[key]
        except Error as exc:
            log.warning("alert_not_stored", kind=key[0], key=key[1], code=exc.code)
        finally:
            for key, repeat in taken.items():
                self._repeats.keep(key, repeat)

    async def _resolved_after(self, repeat: Repeat) -> bool:
        """Whether the alert ``repeat`` was counted for is no longer the active one because
        it was resolved after the repeats were last seen."""
        found = repeat.finding
        active = await self.store.active_alert(found.kind, found.key)
        if active is not None and active.id == repeat.alert_id:
            return False
        was = await self.store.get_alert(repeat.alert_id)
        done = was.resolved_at if was is not None else None
        if done is None or done < repeat.seen:
            return False
        log.info("alert_repeats_before_resolution", alert_id=repeat.alert_id, kind=found.kind)
        return True

    async def _bump(self, active: Alert, found: Finding, now: datetime, times: int) -> Alert:
        bumped = repeated(active, found, now=now, times=times)
        await self.store.update_alert(bumped, expected_version=active.version)
        return bumped

    async def _open(self, found: Finding, now: datetime, times: int = 1) -> Alert:
        owners = await self._owners(found.agent)
        alert = opened(found, id=new_id("alr"), owners=owners, now=now, count=times)
        record = self._record("alert.raised", Actor.system("monitor"), alert)
        written = await self._recorded(record)
        try:
            await self.store.create_alert(alert)
        except Error as exc:  # lost the race to another report (Conflict), or the store failed
            if written:
                await self._recorded(record.failure(exc.code, time=self.clock.now()))
            elif record in self._unrecorded:
                self._unrecorded.remove(record)  # never written, and it did not happen
            raise
        await self._deliver(alert, "raised")
        await self._respond(alert)
        return alert

    async def _owners(self, agent: str | None) -> tuple[str, ...]:
        if agent is None:
            return ()
        known = await self.store.get_agent(agent)
        return known.owners if known is not None else ()

    async def _deliver(self, alert: Alert, change: str) -> None:
        log.warning("alert", change=change, **_loggable(alert))
        for sink in self.sinks:
            try:
                await sink.deliver(alert, change)
            except Exception:  # a sink's fault never loses the alert: it is stored
                log.exception("alert_sink_failed", alert_id=alert.id, sink=type(sink).__name__)

    async def _respond(self, alert: Alert) -> None:
        if self.quarantine is None or not self.responses.quarantines(alert):
            return
        agent = alert.agent or ""
        facts = {"action": "quarantine", "agent": agent, "alert_id": alert.id}
        outcome, error = Outcome.SUCCESS, None
        try:
            await self.quarantine(agent, f"alert {alert.id}: {alert.summary}")
        except Error as exc:
            outcome, error = Outcome.FAILURE, exc.code
        record = AuditRecord.new(
            type="alert.response", actor=Actor.system("monitor").label, subject=f"alert:{alert.id}",
            time=self.clock.now(), outcome=outcome, details=facts | {"error": error},
        )  # fmt: skip
        await self._recorded(record)

    async def _reassess(self, alert: Alert) -> None:
        agent = alert.agent
        if self.reassess is not None and agent is not None:
            try:
                await self.reassess(agent, [str(r) for r in alert.details.get("resources", ())])
            except Error as exc:
                log.warning("reassess_failed", agent=agent, code=exc.code)

    # -- usage -------------------------------------------------------------------------

    def _count_use(self, event: Event) -> None:
        d = event.data
        if event.type != "decision" or d.get("effect") != "allow" or not d.get("agent"):
            return
        key = (str(d["agent"]), str(d.get("action")), str(d.get("resource")))
        at = datetime.fromtimestamp(event.time, tz=self.clock.now().tzinfo)
        was = self._usage.get(key)
        count = 1 if was is None else was.count + 1
        self._usage[key] = Usage(agent=key[0], action=key[1], resource=key[2], last_used=at,
                                 count=count)  # fmt: skip

    async def flush_usage(self) -> None:
        """Write the use counted since the last write (kept for the next try on failure)."""
        if not self._usage:
            return
        taken, self._usage = self._usage, {}
        try:
            await self.store.record_usage(list(taken.values()))
        except BaseException:
            for key, use in taken.items():  # put back, merged with what came meanwhile
                now = self._usage.get(key)
                self._usage[key] = use if now is None else _merged(use, now)
            raise

    async def _flush_quietly(self) -> None:
        try:
            await self.flush_usage()
        except Exception:
            log.exception("usage_flush_failed")
        try:
            await self.flush_repeats()
        except Exception:
            log.exception("alert_repeats_flush_failed")

    # -- operators ---------------------------------------------------------------------

    async def list(
        self, match: AlertMatch, *, actor: Actor, limit: int = 100, after: str | None = None
    ) -> list[Alert]:
        """Alerts ``actor`` may read: all for a role that reads alerts, else those of the
        agents they own. Agents read none (``Forbidden``)."""
        _operator(actor)
        found = await self.store.list_alerts(match, limit=limit, after=after)
        return [a for a in found if allowed(actor, Permission.ALERT_READ, owners=a.owners)]

    async def get(self, alert_id: str, *, actor: Actor) -> Alert:
        _operator(actor)
        alert = await self.store.get_alert(alert_id)
        if alert is None or not allowed(actor, Permission.ALERT_READ, owners=alert.owners):
            raise AlertNotFound(f"no alert {alert_id!r}", details={"alert_id": alert_id})
        return alert

    async def acknowledge(self, alert_id: str, *, actor: Actor, note: str | None = None) -> Alert:
        return await self._change(alert_id, actor, "acknowledged", note)

    async def resolve(self, alert_id: str, *, actor: Actor, note: str | None = None) -> Alert:
        return await self._change(alert_id, actor, "resolved", note)

    async def _change(self, alert_id: str, actor: Actor, change: str, note: str | None) -> Alert:
        alert = await self.get(alert_id, actor=actor)
        require(actor, Permission.ALERT_MANAGE, owners=alert.owners)
        waiting = self._repeats.pop((alert.kind, alert.key), alert.id)
        if waiting is not None:
            # Repeats counted for it, not written yet, were seen before this change: they go
            # in first (a resolution must not leave them to open a new alert at the tick).
            try:
                await self.report(waiting.finding, times=waiting.times, seen=waiting.seen)
            except Error:
                self._repeats.keep((alert.kind, alert.key), waiting)
                raise
            alert = await self.get(alert_id, actor=actor)
        step = acknowledged if change == "acknowledged" else resolved
        changed = step(alert, by=actor.label, now=self.clock.now(), note=_note(note))
        record = self._record(f"alert.{change}", actor, changed)
        await self.audit.append(record)
        try:
            await self.store.update_alert(changed, expected_version=alert.version)
        except Error as exc:
            await self.audit.append(record.failure(exc.code, time=self.clock.now()))
            raise
        self._know(changed)
        await self._deliver(changed, change)
        return changed

    def _record(self, tag: str, actor: Actor, alert: Alert) -> AuditRecord:
        return AuditRecord.new(type=tag, actor=actor.label, subject=f"alert:{alert.id}",
                               time=self.clock.now(), details=alert.facts())  # fmt: skip


def _operator(actor: Actor) -> None:
    """Alerts are for people who answer for agents: an agent's token reads none."""
    if actor.kind not in ("operator", "system"):
        raise Forbidden("alerts are read with an operator token",
                        details={"permission": str(Permission.ALERT_READ)})  # fmt: skip


def _merged(a: Usage, b: Usage) -> Usage:
    return Usage(agent=a.agent, action=a.action, resource=a.resource,
                 last_used=max(a.last_used, b.last_used), count=a.count + b.count)  # fmt: skip


#: The longest note an operator may leave on an alert.
MAX_NOTE = 1000


def _note(note: str | None) -> str | None:
    if note is None:
        return None
    if len(note) > MAX_NOTE:
        raise InvalidInput(f"a note is at most {MAX_NOTE} characters")
    return note


def _loggable(alert: Alert) -> dict[str, Any]:
    facts = alert.facts()
    return {k: facts[k] for k in ("alert_id", "kind", "severity", "summary", "agent", "count")}


def _held(found: Finding, active: Alert | None) -> tuple[Finding, bool]:
    """``found`` as its alert holds it: an out-of-declaration finding carries the resources
    its agent's active alert holds, with its own added while there is room; and whether
    that list grew (the agent's risk is then assessed again)."""
    if found.kind != "out_of_declaration":
        return found, False
    # A repeat written late (coalesced) carries what its alert held: kept if that alert is gone.
    holder = active.details if active is not None else found.details
    held = [str(r) for r in holder.get("resources", ())]
    resource = str(found.details.get("resource"))
    grew = resource not in held and len(held) < UNDECLARED_KEPT
    resources = [*held, resource] if grew else held
    return replace(found, details={**found.details, "resources": resources}), grew

"""The monitor as the server runs it: its detectors from the settings, its sinks (the log, and a
signed webhook when ``TETHER_ALERT_WEBHOOK_URL`` is set), its automatic response (quarantine
through the registry, off unless ``TETHER_ALERT_QUARANTINE_AT`` is set) and its probe of the
lease reaper.

Alert webhooks are signed as approval notices are (:func:`tether.api._notify.
signature_header`: ``Tether-Signature: t=<unix time>,v1=<hex HMAC-SHA256>``). They are sent
from a bounded queue by one worker, each tried up to :data:`TRIES` times, so a slow receiver
never holds up the monitor; a notice that cannot be queued or delivered is logged (the alert
itself is stored and audited regardless).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from tether._internal.canonical import canonical_json
from tether._internal.clock import Clock
from tether.api._notify import SIGNATURE_HEADER, NotifyFailed, post, signature_header
from tether.audit.sink import AuditSink
from tether.config import Settings
from tether.credentials.revocation import Revoker
from tether.identity.access import Actor
from tether.identity.directory import AgentDirectory
from tether.identity.models import AgentState, Declarations
from tether.identity.registry import Registry
from tether.monitor.detectors import DecisionRules, EventRules, OutOfDeclaration, Thresholds
from tether.monitor.events import EventStream
from tether.monitor.models import Alert, Severity
from tether.monitor.service import AlertSink, Monitor, Responses
from tether.monitor.windows import DeniedBurst, RateSpikes
from tether.store.interfaces import Store

__all__ = ["AlertWebhook", "monitor_service"]

log = structlog.get_logger("tether.monitor")

#: Deliveries of one alert notice before it is given up (logged).
TRIES = 3
#: Notices waiting for the webhook worker before new ones are dropped (logged).
QUEUE = 1000


@dataclass(kw_only=True)
class AlertWebhook:
    """POSTs ``{"type": "alert.<change>", "alert": {…}}`` to ``url``, signed with ``secret``."""

    url: str = field(repr=False)
    secret: str = field(repr=False)
    clock: Clock
    backoff: float = 1.0
    _queue: asyncio.Queue[bytes] = field(default_factory=lambda: asyncio.Queue(QUEUE), init=False)
    _worker: asyncio.Task[None] | None = field(default=None, init=False)

    async def deliver(self, alert: Alert, change: str) -> None:
        body = canonical_json({"type": f"alert.{change}", "alert": alert.facts()})
        if self._queue.full():
            log.warning("alert_webhook_dropped", alert_id=alert.id, reason="queue full")
            return
        self._queue.put_nowait(body)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._send_all())

    async def _send_all(self) -> None:
        while not self._queue.empty():
            await self._send(self._queue.get_nowait())

    async def _send(self, body: bytes) -> None:
        for attempt in range(1, TRIES + 1):
            signed = signature_header(self.secret, body, timestamp=self.clock.timestamp())
            headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signed}
            try:
                await post(self.url, content=body, headers=headers)
            except NotifyFailed as exc:
                log.warning("alert_webhook_failed", attempt=attempt, error=exc.message)
                await asyncio.sleep(self.backoff * attempt)
            else:
                return

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()


def monitor_service(
    settings: Settings,
    *,
    clock: Clock,
    store: Store,
    audit: AuditSink,
    events: EventStream,
    registry: Registry,
    directory: AgentDirectory,
    revoker: Revoker,
) -> Monitor:
    thresholds = _thresholds(settings)

    async def declarations(name: str) -> Declarations | None:
        agent = await directory.get(name)
        return None if agent is None else agent.declarations

    async def quarantine(agent: str, reason: str) -> object:
        return await registry.set_state(agent, AgentState.QUARANTINED,
                                        actor=Actor.system("monitor"), reason=reason)  # fmt: skip

    async def reassess(agent: str, undeclared: Sequence[str]) -> object:
        return await registry.reassess(agent, undeclared=undeclared)

    async def reaper_lag() -> float | None:
        due = await revoker.next_expiry()
        return None if due is None else (clock.now() - due).total_seconds()

    at = settings.alert_quarantine_at
    return Monitor(
        store=store, audit=audit, clock=clock, events=events,
        detectors=(EventRules(), DecisionRules(), OutOfDeclaration(declarations),
                   DeniedBurst(limit=thresholds.burst_limit, window=thresholds.burst_window),
                   RateSpikes(thresholds)),
        sinks=_sinks(settings, clock),
        responses=Responses(quarantine_at=Severity(at) if at else None),
        quarantine=quarantine, reassess=reassess, reaper_lag=reaper_lag,
        reaper_lag_limit=thresholds.reaper_lag,
    )  # fmt: skip


def _thresholds(settings: Settings) -> Thresholds:
    return Thresholds(
        burst_limit=settings.monitor_burst_limit,
        burst_window=settings.monitor_burst_window_seconds,
        spike_window=settings.monitor_spike_window_seconds,
        spike_min_decisions=settings.monitor_spike_min_decisions,
        deny_rate=settings.monitor_deny_rate,
        error_rate=settings.monitor_error_rate,
        reaper_lag=settings.monitor_reaper_lag_seconds,
    )


def _sinks(settings: Settings, clock: Clock) -> tuple[AlertSink, ...]:
    url, secret = settings.alert_webhook_url, settings.alert_webhook_secret
    if url and secret:
        return (AlertWebhook(url=url, secret=secret, clock=clock),)
    return ()

"""``MemoryStore``'s monitor store (alerts and observed use): the reference for the SQL store's.

A mixin over the store's one ``asyncio.Lock``, which makes each call atomic. Values come back
as the SQL store returns them: datetimes in UTC (a naive one is a ``ValueError`` before
anything is written), severity and state as enums, owners as a tuple and ``details`` as they
read after a JSON round trip, read-only. Alerts are kept by id with an index of the active one
of each ``(kind, key)``: the SQL tables' partial unique index, which refuses a second. Use is
kept by ``(agent, action, resource)``, the SQL table's primary key. The two gauges read the
leases of :class:`~tether.store._memory_credentials.MemoryCredentials` and the requests of
:class:`~tether.store._memory_approvals.MemoryApprovals`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from types import MappingProxyType

from tether.credentials.models import Lease
from tether.delegation.models import Approval, ApprovalState
from tether.errors import AlertNotFound, Conflict, VersionConflict
from tether.monitor.models import Alert, AlertState, Severity, Usage
from tether.store._memory_credentials import _json_copy
from tether.store._memory_values import as_utc, in_utc
from tether.store._monitor_interfaces import AlertMatch

__all__ = ["MemoryMonitor"]

#: The most alerts one page lists, as in the SQL store.
_MAX_PAGE = 500

_UsageKey = tuple[str, str, str]


def _stored_alert(alert: Alert) -> Alert:
    """``alert`` as the SQL store reads it back."""
    return replace(
        in_utc(alert),
        severity=Severity(alert.severity),
        state=AlertState(alert.state),
        owners=tuple(alert.owners),
        details=MappingProxyType(_json_copy(alert.details)),
    )


def _matches(match: AlertMatch, alert: Alert, since: datetime | None) -> bool:
    return (
        (not match.states or alert.state in match.states)
        and (match.kind is None or alert.kind == match.kind)
        and (match.agent is None or alert.agent == match.agent)
        and (since is None or alert.last_seen >= since)
    )


def _newest_first(alert: Alert) -> tuple[datetime, str]:
    return alert.first_seen, alert.id


def _taken(alert: Alert) -> Conflict:
    return Conflict(
        f"alert {alert.id!r}: its id is taken, or an alert of kind {alert.kind!r} and key "
        f"{alert.key!r} is active"
    )


def _added(held: Usage | None, row: Usage) -> Usage:
    """``row`` (times in UTC) recorded over ``held``: the counts added, the later time kept."""
    if held is None:
        return row
    return replace(row, count=held.count + row.count, last_used=max(held.last_used, row.last_used))


def _summed(usage: Sequence[Usage]) -> dict[_UsageKey, Usage]:
    """``usage`` with the rows of one key folded into one, times in UTC: ``ValueError`` for a
    naive one, before anything is written."""
    folded: dict[_UsageKey, Usage] = {}
    for row in usage:
        key = (row.agent, row.action, row.resource)
        folded[key] = _added(folded.get(key), replace(row, last_used=as_utc(row.last_used)))
    return folded


class MemoryMonitor:
    """Alerts and use in dictionaries, under the store's ``_lock``.

    Cooperative: its ``__init__`` calls the next one's, so the store lists it before
    :class:`~tether.store._memory_credentials.MemoryCredentials` and all are set up.
    """

    _lock: asyncio.Lock
    _leases: dict[str, Lease]
    _approvals: dict[str, Approval]

    def __init__(self) -> None:
        super().__init__()
        self._alerts: dict[str, Alert] = {}
        self._active_alerts: dict[tuple[str, str], str] = {}
        self._usage: dict[_UsageKey, Usage] = {}

    def _check_active_free(self, alert: Alert) -> None:
        """``Conflict`` if ``alert`` is active and another alert is active for its
        ``(kind, key)``; call with the lock held."""
        holder = self._active_alerts.get((alert.kind, alert.key))
        if alert.active and holder is not None and holder != alert.id:
            raise _taken(alert)

    def _put_alert(self, alert: Alert) -> None:
        """Store a checked alert; call with the lock held."""
        old = self._alerts.get(alert.id)
        if old is not None and old.active:
            del self._active_alerts[old.kind, old.key]
        self._alerts[alert.id] = alert
        if alert.active:
            self._active_alerts[alert.kind, alert.key] = alert.id

    async def create_alert(self, alert: Alert) -> None:
        stored = _stored_alert(alert)
        async with self._lock:
            if stored.id in self._alerts:
                raise _taken(stored)
            self._check_active_free(stored)
            self._put_alert(stored)

    async def get_alert(self, alert_id: str) -> Alert | None:
        async with self._lock:
            return self._alerts.get(alert_id)

    async def active_alert(self, kind: str, key: str) -> Alert | None:
        async with self._lock:
            alert_id = self._active_alerts.get((kind, key))
            return None if alert_id is None else self._alerts[alert_id]

    async def update_alert(self, alert: Alert, *, expected_version: int) -> None:
        stored = _stored_alert(alert)
        async with self._lock:
            current = self._alerts.get(stored.id)
            if current is None:
                raise AlertNotFound(
                    f"no alert with id {stored.id!r}", details={"alert_id": stored.id}
                )
            if current.version != expected_version:
                raise VersionConflict(
                    f"alert {stored.id!r} changed since version {expected_version}"
                )
            self._check_active_free(stored)
            self._put_alert(stored)

    async def list_alerts(
        self, match: AlertMatch, *, limit: int = 100, after: str | None = None
    ) -> list[Alert]:
        since = None if match.since is None else as_utc(match.since)
        async with self._lock:
            last = None if after is None else self._alerts.get(after)
            if after is not None and last is None:
                return []
            found = [
                alert
                for alert in self._alerts.values()
                if _matches(match, alert, since)
                and (last is None or _newest_first(alert) < _newest_first(last))
            ]
        found.sort(key=_newest_first, reverse=True)
        return found[: max(0, min(limit, _MAX_PAGE))]

    async def count_alerts(self, *, states: Sequence[AlertState]) -> dict[str, int]:
        wanted = {AlertState(state) for state in states}
        counts: dict[str, int] = {}
        async with self._lock:
            for alert in self._alerts.values():
                if alert.state in wanted:
                    counts[str(alert.severity)] = counts.get(str(alert.severity), 0) + 1
        return counts

    async def record_usage(self, usage: Sequence[Usage]) -> None:
        folded = _summed(usage)
        async with self._lock:
            for key, row in folded.items():
                self._usage[key] = _added(self._usage.get(key), row)

    async def list_usage(self, *, agent: str | None = None) -> list[Usage]:
        async with self._lock:
            return [
                self._usage[key] for key in sorted(self._usage) if agent is None or key[0] == agent
            ]

    async def count_live_leases(self) -> int:
        async with self._lock:
            return sum(1 for lease in self._leases.values() if lease.live)

    async def count_pending_approvals(self, *, now: datetime) -> int:
        moment = as_utc(now)
        async with self._lock:
            return sum(
                1
                for approval in self._approvals.values()
                if approval.state is ApprovalState.PENDING and not approval.expired(moment)
            )

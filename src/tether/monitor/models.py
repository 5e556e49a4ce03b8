"""The monitor's values: what a detector finds, the alert it raises, and observed use.

A detector turns events into :class:`Finding` values. The monitor keeps at most one *active*
(open or acknowledged) :class:`Alert` per ``(kind, key)``: a finding that matches one bumps its
count and last-seen time (deduplication) instead of opening another; a finding after the alert
was resolved opens a new one. The states::

    open ──acknowledge──▶ acknowledged ──resolve──▶ resolved
      └────────────────────resolve────────────────────┘

The transitions are pure functions (:func:`opened`, :func:`repeated`, :func:`acknowledged`,
:func:`resolved`) over an injected time; the monitor persists and audits what they return.

:class:`Usage` is what an agent was seen to do (allowed decisions), one row per agent, action
and resource: the input of the least-privilege recommendations of :mod:`tether.monitor.posture`.

Example::

    >>> from datetime import UTC, datetime
    >>> now = datetime(2026, 1, 1, tzinfo=UTC)
    >>> f = Finding(kind="denied_burst", severity=Severity.HIGH, key="crm-bot",
    ...             summary="25 denied requests in 60 s", agent="crm-bot")
    >>> alert = opened(f, id="alr_1", owners=("team:crm",), now=now)
    >>> alert.state, alert.count, repeated(alert, f, now=now).count
    (<AlertState.OPEN: 'open'>, 1, 2)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from tether.errors import InvalidTransition

__all__ = [
    "Alert",
    "AlertState",
    "Finding",
    "Severity",
    "Usage",
    "acknowledged",
    "opened",
    "repeated",
    "resolved",
]

#: Longest summary kept (a detector's words may quote caller-controlled text).
MAX_SUMMARY = 300


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANKS[self]


_RANKS = {Severity.LOW: 0, Severity.MEDIUM: 1, Severity.HIGH: 2, Severity.CRITICAL: 3}


class AlertState(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


def _frozen(details: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(details))


@dataclass(frozen=True, kw_only=True)
class Finding:
    """What a detector saw: the ``kind`` of problem (a stable tag such as ``impersonation``),
    the ``key`` that tells one instance of it from another (the agent, the login, the
    tool…), how bad it is, and the agent concerned when there is one."""

    kind: str
    severity: Severity
    key: str
    summary: str
    agent: str | None = None
    details: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, kw_only=True)
class Alert:
    id: str
    kind: str
    key: str
    severity: Severity
    state: AlertState
    summary: str
    agent: str | None
    #: Who answers for it: the agent's owners (none when no agent is concerned).
    owners: tuple[str, ...]
    details: Mapping[str, Any]
    first_seen: datetime
    last_seen: datetime
    #: Findings folded into this alert (1 when opened).
    count: int = 1
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    resolved_by: str | None = None
    resolved_at: datetime | None = None
    note: str | None = None
    version: int = 1

    @property
    def active(self) -> bool:
        return self.state is not AlertState.RESOLVED

    def facts(self) -> dict[str, Any]:
        """What an audit record, a webhook and the API say of the alert."""
        return {
            "alert_id": self.id,
            "kind": self.kind,
            "key": self.key,
            "severity": str(self.severity),
            "state": str(self.state),
            "summary": self.summary,
            "agent": self.agent,
            "owners": list(self.owners),
            "count": self.count,
            "first_seen": self.first_seen.isoformat(),
            "last_seen": self.last_seen.isoformat(),
            "acknowledged_by": self.acknowledged_by,
            "resolved_by": self.resolved_by,
            "note": self.note,
            "details": dict(self.details),
        }


def opened(
    finding: Finding, *, id: str, owners: tuple[str, ...], now: datetime, count: int = 1
) -> Alert:
    return Alert(
        id=id,
        kind=finding.kind,
        key=finding.key,
        severity=finding.severity,
        state=AlertState.OPEN,
        summary=finding.summary[:MAX_SUMMARY],
        agent=finding.agent,
        owners=owners,
        details=_frozen(finding.details),
        first_seen=now,
        last_seen=now,
        count=count,
    )


def repeated(alert: Alert, finding: Finding, *, now: datetime, times: int = 1) -> Alert:
    """The active ``alert`` seen again (``times`` more): counted, its latest words and details
    kept, its severity the higher of the two."""
    if not alert.active:
        raise InvalidTransition(f"alert {alert.id} is resolved: a new one is opened")
    severity = max(alert.severity, finding.severity, key=lambda s: s.rank)
    return replace(
        alert,
        severity=severity,
        summary=finding.summary[:MAX_SUMMARY],
        details=_frozen(finding.details),
        last_seen=max(now, alert.last_seen),
        count=alert.count + times,
        version=alert.version + 1,
    )


def acknowledged(alert: Alert, *, by: str, now: datetime, note: str | None = None) -> Alert:
    """Someone is on it: only an open alert can be acknowledged."""
    if alert.state is not AlertState.OPEN:
        raise InvalidTransition(f"alert {alert.id} is {alert.state}, not open")
    return replace(
        alert,
        state=AlertState.ACKNOWLEDGED,
        acknowledged_by=by,
        acknowledged_at=now,
        note=note if note is not None else alert.note,
        version=alert.version + 1,
    )


def resolved(alert: Alert, *, by: str, now: datetime, note: str | None = None) -> Alert:
    """Dealt with: an open or acknowledged alert ends; the next finding opens a new one."""
    if not alert.active:
        raise InvalidTransition(f"alert {alert.id} is already resolved")
    return replace(
        alert,
        state=AlertState.RESOLVED,
        resolved_by=by,
        resolved_at=now,
        note=note if note is not None else alert.note,
        version=alert.version + 1,
    )


@dataclass(frozen=True, kw_only=True)
class Usage:
    """An agent was allowed ``action`` on ``resource`` (a Cedar uid, ``Type::"id"``)
    ``count`` times, last at ``last_used``."""

    agent: str
    action: str
    resource: str
    last_used: datetime
    count: int = 1

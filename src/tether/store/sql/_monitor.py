"""``SqlStore``'s monitor store (:class:`~tether.store.interfaces.MonitorStore`): the rows of
alerts and observed use, their queries and units of work, and the mixin over the store's unit
runner.

At most one active alert per ``(kind, key)`` is the database's rule, not the caller's: a
partial unique index over the alerts not resolved, so two replicas that open the same alert at
once cannot both succeed; the loser's ``IntegrityError`` is ``Conflict``, as a taken id is. An
update is one compare-and-set statement on the version, writing the version it is given; a
read follows only to explain a refusal. Use is recorded by ``INSERT … ON CONFLICT DO UPDATE``
(counts added, the later time kept), every row in one transaction, in key order so that two
replicas recording the same keys lock them in the same order. The two gauges are one
``count(*)`` each, over the leases and the approval requests. Writes send no change note.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from types import MappingProxyType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from tether.credentials.models import LIVE_STATES
from tether.delegation.models import ApprovalState
from tether.errors import AlertNotFound, Conflict, VersionConflict
from tether.monitor.models import Alert, AlertState, Severity, Usage
from tether.store._monitor_interfaces import AlertMatch
from tether.store.sql._runner import Runner, rows, unique_violation
from tether.store.sql.tables import (
    UtcDateTime,
    alerts,
    approvals,
    as_utc,
    leases,
    monitor_usage,
    utc_or_none,
)

__all__ = [
    "MAX_PAGE",
    "MonitorMethods",
    "alert_from_row",
    "alert_values",
    "alerts_query",
    "create_alert_unit",
    "record_usage_unit",
    "update_alert_unit",
    "usage_from_row",
]

#: The most alerts one page lists.
MAX_PAGE = 500


# -- rows ------------------------------------------------------------------------------------


def alert_values(alert: Alert) -> dict[str, Any]:
    """The row of ``alert`` (owners a JSON list, details a JSON object); ``ValueError`` for a
    naive datetime, before anything is sent."""
    return {
        "id": alert.id,
        "kind": alert.kind,
        "key": alert.key,
        "severity": str(Severity(alert.severity)),
        "state": str(AlertState(alert.state)),
        "summary": alert.summary,
        "agent": alert.agent,
        "owners": list(alert.owners),
        "details": dict(alert.details),
        "first_seen": as_utc(alert.first_seen),
        "last_seen": as_utc(alert.last_seen),
        "count": alert.count,
        "acknowledged_by": alert.acknowledged_by,
        "acknowledged_at": utc_or_none(alert.acknowledged_at),
        "resolved_by": alert.resolved_by,
        "resolved_at": utc_or_none(alert.resolved_at),
        "note": alert.note,
        "version": alert.version,
    }


def alert_from_row(row: Mapping[Any, Any]) -> Alert:
    """The alert of a row read back (its details a read-only mapping)."""
    return Alert(
        id=row["id"],
        kind=row["kind"],
        key=row["key"],
        severity=Severity(row["severity"]),
        state=AlertState(row["state"]),
        summary=row["summary"],
        agent=row["agent"],
        owners=tuple(row["owners"]),
        details=MappingProxyType(row["details"]),
        first_seen=row["first_seen"],
        last_seen=row["last_seen"],
        count=row["count"],
        acknowledged_by=row["acknowledged_by"],
        acknowledged_at=row["acknowledged_at"],
        resolved_by=row["resolved_by"],
        resolved_at=row["resolved_at"],
        note=row["note"],
        version=row["version"],
    )


def usage_from_row(row: Mapping[Any, Any]) -> Usage:
    return Usage(
        agent=row["agent"],
        action=row["action"],
        resource=row["resource"],
        last_used=row["last_used"],
        count=row["count"],
    )


# -- queries ---------------------------------------------------------------------------------

_ALERT_BY_ID = sa.select(alerts).where(alerts.c.id == sa.bindparam("id"))
_ALERT_ID = sa.select(alerts.c.id).where(alerts.c.id == sa.bindparam("id"))
#: Parameters ``kind`` and ``key``.
_ACTIVE_ALERT = sa.select(alerts).where(
    alerts.c.kind == sa.bindparam("kind"),
    alerts.c["key"] == sa.bindparam("key"),
    alerts.c.state != str(AlertState.RESOLVED),
)
#: Parameters: every column of ``alerts``, then ``old_id`` and ``old_version``.
_SAVE_ALERT = alerts.update().where(
    alerts.c.id == sa.bindparam("old_id"), alerts.c.version == sa.bindparam("old_version")
)
_USAGE = sa.select(monitor_usage).order_by(
    monitor_usage.c.agent, monitor_usage.c.action, monitor_usage.c.resource
)
_USAGE_OF_AGENT = _USAGE.where(monitor_usage.c.agent == sa.bindparam("agent"))
_LIVE_LEASES = (
    sa.select(sa.func.count().label("n"))
    .select_from(leases)
    .where(leases.c.state.in_(sorted(str(state) for state in LIVE_STATES)))
)
#: Parameter ``now``.
_PENDING_APPROVALS = (
    sa.select(sa.func.count().label("n"))
    .select_from(approvals)
    .where(
        approvals.c.state == str(ApprovalState.PENDING),
        approvals.c.expires_at > sa.bindparam("now", type_=UtcDateTime()),
    )
)


def alerts_query(match: AlertMatch, *, limit: int, after: str | None) -> sa.Select[Any]:
    """Alerts matching ``match``, newest first, after the alert ``after`` (none if it is
    unknown), at most ``limit`` (and :data:`MAX_PAGE`); ``ValueError`` for a naive
    ``since``."""
    query = (
        sa.select(alerts)
        .order_by(alerts.c.first_seen.desc(), alerts.c.id.desc())
        .limit(max(0, min(limit, MAX_PAGE)))
    )
    if match.states:
        query = query.where(alerts.c.state.in_([str(AlertState(s)) for s in match.states]))
    if match.kind is not None:
        query = query.where(alerts.c.kind == match.kind)
    if match.agent is not None:
        query = query.where(alerts.c.agent == match.agent)
    if match.since is not None:
        query = query.where(alerts.c.last_seen >= as_utc(match.since))
    if after is not None:
        prior = alerts.alias("prior")
        last = sa.select(prior.c.first_seen).where(prior.c.id == after).scalar_subquery()
        query = query.where(
            sa.or_(
                alerts.c.first_seen < last,
                sa.and_(alerts.c.first_seen == last, alerts.c.id < after),
            )
        )
    return query


def _count_alerts_query(states: Sequence[AlertState]) -> sa.Select[Any]:
    return (
        sa.select(alerts.c.severity, sa.func.count().label("n"))
        .where(alerts.c.state.in_(sorted({str(AlertState(s)) for s in states})))
        .group_by(alerts.c.severity)
    )


@functools.cache
def _record_usage(*, postgres: bool) -> sa.Insert:
    """Parameters: every column of ``monitor_usage``; adds to the row of the key, if any."""
    keys = ["agent", "action", "resource"]
    stored = monitor_usage.c
    if postgres:
        pg = postgresql.insert(monitor_usage)
        return pg.on_conflict_do_update(
            index_elements=keys,
            set_={
                "count": stored["count"] + pg.excluded["count"],
                "last_used": sa.func.greatest(stored.last_used, pg.excluded.last_used),
            },
        )
    lite = sqlite.insert(monitor_usage)
    return lite.on_conflict_do_update(
        index_elements=keys,
        set_={
            "count": stored["count"] + lite.excluded["count"],
            # SQLite's max() of two values; times are stored in one fixed UTC format.
            "last_used": sa.func.max(stored.last_used, lite.excluded.last_used),
        },
    )


# -- units -----------------------------------------------------------------------------------


def _taken(alert: Alert) -> Conflict:
    return Conflict(
        f"alert {alert.id!r}: its id is taken, or an alert of kind {alert.kind!r} and key "
        f"{alert.key!r} is active"
    )


def create_alert_unit(alert: Alert) -> Callable[[Connection], None]:
    """``ValueError`` at once for a naive datetime; the unit raises ``Conflict`` for a taken
    id or an active alert of the same ``(kind, key)`` (the partial unique index)."""
    values = alert_values(alert)

    def unit(conn: Connection) -> None:
        try:
            conn.execute(alerts.insert(), values)
        except IntegrityError as exc:
            unique_violation(exc)
            raise _taken(alert) from None

    return unit


def update_alert_unit(alert: Alert, *, expected_version: int) -> Callable[[Connection], None]:
    """One update, writing ``alert`` (its version included) as given; the read after it only
    explains a refusal. ``Conflict`` if it makes the alert active beside another."""
    row = {**alert_values(alert), "old_id": alert.id, "old_version": expected_version}

    def unit(conn: Connection) -> None:
        try:
            if conn.execute(_SAVE_ALERT, [row]).rowcount == 1:
                return
        except IntegrityError as exc:
            unique_violation(exc)
            raise _taken(alert) from None
        if conn.execute(_ALERT_ID, {"id": alert.id}).first() is None:
            raise AlertNotFound(f"no alert with id {alert.id!r}", details={"alert_id": alert.id})
        raise VersionConflict(f"alert {alert.id!r} changed since version {expected_version}")

    return unit


def _summed(usage: Sequence[Usage]) -> list[dict[str, Any]]:
    """One row per key, in key order: the counts added, the later time kept; ``ValueError``
    for a naive time, before anything is sent."""
    folded: dict[tuple[str, str, str], dict[str, Any]] = {}
    for use in usage:
        key = (use.agent, use.action, use.resource)
        last_used = as_utc(use.last_used)
        held = folded.get(key)
        if held is None:
            folded[key] = {
                "agent": use.agent,
                "action": use.action,
                "resource": use.resource,
                "last_used": last_used,
                "count": use.count,
            }
        else:
            held["count"] += use.count
            held["last_used"] = max(held["last_used"], last_used)
    return [folded[key] for key in sorted(folded)]


def record_usage_unit(usage: Sequence[Usage]) -> Callable[[Connection], None]:
    """``ValueError`` at once for a naive time; the unit upserts each key once."""
    values = _summed(usage)

    def unit(conn: Connection) -> None:
        if values:
            conn.execute(_record_usage(postgres=conn.dialect.name == "postgresql"), values)

    return unit


def _count(row: Mapping[Any, Any]) -> int:
    return int(row["n"])


# -- methods ---------------------------------------------------------------------------------


class MonitorMethods:
    """The monitor part of ``SqlStore``."""

    async def create_alert(self: Runner, alert: Alert) -> None:
        await self._run(create_alert_unit(alert), write=True, one_statement=True)

    async def get_alert(self: Runner, alert_id: str) -> Alert | None:
        found = await self._run(
            rows(_ALERT_BY_ID, alert_from_row, id=alert_id), write=False, one_statement=True
        )
        return found[0] if found else None

    async def active_alert(self: Runner, kind: str, key: str) -> Alert | None:
        found = await self._run(
            rows(_ACTIVE_ALERT, alert_from_row, kind=kind, key=key),
            write=False,
            one_statement=True,
        )
        return found[0] if found else None

    async def update_alert(self: Runner, alert: Alert, *, expected_version: int) -> None:
        unit = update_alert_unit(alert, expected_version=expected_version)
        await self._run(unit, write=True, one_statement=True)

    async def list_alerts(
        self: Runner, match: AlertMatch, *, limit: int = 100, after: str | None = None
    ) -> list[Alert]:
        query = alerts_query(match, limit=limit, after=after)
        return await self._run(rows(query, alert_from_row), write=False, one_statement=True)

    async def count_alerts(self: Runner, *, states: Sequence[AlertState]) -> dict[str, int]:
        if not states:
            return {}
        query = rows(_count_alerts_query(states), lambda row: (row["severity"], _count(row)))
        return dict(await self._run(query, write=False, one_statement=True))

    async def record_usage(self: Runner, usage: Sequence[Usage]) -> None:
        unit = record_usage_unit(usage)
        if usage:
            await self._run(unit, write=True)

    async def list_usage(self: Runner, *, agent: str | None = None) -> list[Usage]:
        query = (
            rows(_USAGE, usage_from_row)
            if agent is None
            else rows(_USAGE_OF_AGENT, usage_from_row, agent=agent)
        )
        return await self._run(query, write=False, one_statement=True)

    async def count_live_leases(self: Runner) -> int:
        found = await self._run(rows(_LIVE_LEASES, _count), write=False, one_statement=True)
        return found[0]

    async def count_pending_approvals(self: Runner, *, now: datetime) -> int:
        query = rows(_PENDING_APPROVALS, _count, now=as_utc(now))
        found = await self._run(query, write=False, one_statement=True)
        return found[0]

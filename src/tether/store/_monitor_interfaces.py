"""The store's interface for the monitor (:mod:`tether.monitor.models`): alerts and the use
agents were seen to make of what they may do.

Kept apart from :mod:`tether.store.interfaces`, which re-exports it and makes it part of
:class:`~tether.store.interfaces.Store`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from tether.monitor.models import Alert, AlertState, Usage

__all__ = ["AlertMatch", "MonitorStore"]


@dataclass(frozen=True, kw_only=True)
class AlertMatch:
    """Which alerts to list: every field set must match (``states`` empty: any state)."""

    states: tuple[AlertState, ...] = ()
    kind: str | None = None
    agent: str | None = None
    #: Only alerts last seen at or after this time.
    since: datetime | None = None


class MonitorStore(Protocol):
    """Alerts (at most one active per ``(kind, key)``) and observed use.

    Writes of an existing alert are compare-and-set on ``version`` (the caller sets the new
    version, as in :meth:`~tether.store.interfaces.ApprovalStore.update_approval`)."""

    async def create_alert(self, alert: Alert) -> None:
        """``Conflict`` if an active alert of the same ``(kind, key)`` exists (another
        replica opened it first: read it with :meth:`active_alert` and bump that one), or the
        id is taken. Nothing written then."""
        ...

    async def get_alert(self, alert_id: str) -> Alert | None: ...

    async def active_alert(self, kind: str, key: str) -> Alert | None:
        """The open or acknowledged alert of ``(kind, key)``, if any."""
        ...

    async def update_alert(self, alert: Alert, *, expected_version: int) -> None:
        """Replace the alert whose version is ``expected_version``: ``AlertNotFound`` (a
        ``NotFound``) if there is none with that id, ``VersionConflict`` if it moved,
        ``Conflict`` if it would make the alert active beside another active one of its
        ``(kind, key)``. Nothing written on error."""
        ...

    async def list_alerts(
        self, match: AlertMatch, *, limit: int = 100, after: str | None = None
    ) -> list[Alert]:
        """Alerts matching ``match``, newest first (by ``first_seen``, then id descending);
        ``after``: the last id of the previous page (an unknown id: an empty page). At most
        ``limit`` (and 500) alerts."""
        ...

    async def count_alerts(self, *, states: Sequence[AlertState]) -> dict[str, int]:
        """How many alerts are in any of ``states``, by severity (``{"high": 2, …}``;
        severities with none are left out; no states: ``{}``)."""
        ...

    async def record_usage(self, usage: Sequence[Usage]) -> None:
        """Add each row's count to the stored ``(agent, action, resource)`` row (created when
        missing) and keep the later ``last_used``; all rows in one transaction. Rows of the
        same key in one call add up as if recorded one after the other; a naive ``last_used``
        is a ``ValueError`` and nothing is written."""
        ...

    async def list_usage(self, *, agent: str | None = None) -> list[Usage]:
        """Stored use (of ``agent`` only, when given), ordered by agent, action, resource."""
        ...

    async def count_live_leases(self) -> int:
        """Leases whose credential the engine may still hold (``Lease.live``): a gauge."""
        ...

    async def count_pending_approvals(self, *, now: datetime) -> int:
        """Approval requests still waiting for an answer at ``now`` (pending, not expired):
        a gauge."""
        ...

"""The console's alerts: what the monitor found, and acknowledging and resolving it.

``/console/alerts`` lists them newest first (open and acknowledged unless another state is
asked for); ``/console/alerts/{id}`` shows one, its details and its history, with the
Acknowledge and Resolve forms (an optional note each, as ``POST /v1/alerts/{id}/...`` takes).
Every read and change is the monitor's own call as the viewer, as in
:mod:`tether.api.routes.alerts`: it decides who reads which alert (a developer, those of their
own agents; an end user, none) and who may change it, and audits each change. The forms are
plain POST forms with the session's CSRF token, answered with a redirect back to the alert.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from tether.api.console._render import page
from tether.api.console._session import CheckedForm, Viewer, ViewerDep
from tether.api.deps import ServicesDep
from tether.errors import InvalidInput
from tether.identity.access import Permission, allowed
from tether.monitor.models import Alert, AlertState
from tether.store.interfaces import AlertMatch

__all__ = ["router"]

router = APIRouter(tags=["console"], include_in_schema=False)

#: Alerts per page of the list.
PAGE = 100
#: The list's state filter: its choices, in the order shown, and the states each covers.
STATES: dict[str, tuple[AlertState, ...]] = {
    "active": (AlertState.OPEN, AlertState.ACKNOWLEDGED),
    "open": (AlertState.OPEN,),
    "acknowledged": (AlertState.ACKNOWLEDGED,),
    "resolved": (AlertState.RESOLVED,),
    "all": (),
}
STATE_LABELS = {
    "active": "Open or acknowledged",
    "open": "Open",
    "acknowledged": "Acknowledged",
    "resolved": "Resolved",
    "all": "All",
}
_MAX_ID = 64


@dataclass(frozen=True, kw_only=True)
class Step:
    """One line of an alert's history."""

    at: datetime
    what: str
    by: str | None


def _query(request: Request, name: str, default: str | None = None) -> str | None:
    value = request.query_params.get(name, default)
    if value is not None and len(value) > _MAX_ID:
        raise InvalidInput(f"{name} is at most {_MAX_ID} characters")
    return value


@router.get("/console/alerts")
async def alerts(request: Request, services: ServicesDep, viewer: ViewerDep) -> HTMLResponse:
    state = _query(request, "state", "active") or "active"
    if state not in STATES:
        raise InvalidInput(f"no such alert filter {state!r}: one of {', '.join(STATES)}")
    after = _query(request, "after")
    found = await services.monitor.list(
        AlertMatch(states=STATES[state]), actor=viewer.acting(), limit=PAGE, after=after
    )
    older = None
    if len(found) == PAGE:
        older = "/console/alerts?" + urlencode({"state": state, "after": found[-1].id})
    return page(
        request, "console/alerts.html", viewer=viewer, active="alerts", alerts=found,
        state=state, states=STATE_LABELS, older=older, paged=after is not None,
        agents_linked=viewer.may(Permission.AGENT_READ),
    )  # fmt: skip


def history(alert: Alert) -> list[Step]:
    """What happened to ``alert``, oldest first, from what it records of itself (the audit
    log holds the same as ``alert.*`` records)."""
    steps = [Step(at=alert.first_seen, what="Raised by the monitor", by=None)]
    if alert.count > 1:
        again = alert.count - 1
        what = f"Seen again ({again} more time{'s' if again > 1 else ''}), latest"
        steps.append(Step(at=alert.last_seen, what=what, by=None))
    if alert.acknowledged_at is not None:
        steps.append(Step(at=alert.acknowledged_at, what="Acknowledged", by=alert.acknowledged_by))
    if alert.resolved_at is not None:
        steps.append(Step(at=alert.resolved_at, what="Resolved", by=alert.resolved_by))
    return sorted(steps, key=lambda s: s.at)


def _may_change(viewer: Viewer, alert: Alert) -> bool:
    """Whether to offer the forms (the monitor checks again when one is sent)."""
    operator = viewer.operator
    return (
        alert.active
        and operator is not None
        and allowed(operator, Permission.ALERT_MANAGE, owners=alert.owners)
    )


@router.get("/console/alerts/{alert_id}")
async def alert(
    alert_id: str, request: Request, services: ServicesDep, viewer: ViewerDep
) -> HTMLResponse:
    found = await services.monitor.get(alert_id, actor=viewer.acting())
    return page(
        request, "console/alert.html", viewer=viewer, active="alerts", alert=found,
        history=history(found), may_change=_may_change(viewer, found),
        details=json.dumps(dict(found.details), indent=2, sort_keys=True, default=str),
        agents_linked=viewer.may(Permission.AGENT_READ),
    )  # fmt: skip


def _note(form: CheckedForm) -> str | None:
    note = form.get("note")
    if not isinstance(note, str) or not note.strip():
        return None
    return note.strip()


def _back(alert_id: str) -> Response:
    return RedirectResponse(f"/console/alerts/{quote(alert_id, safe='')}", status_code=303)


@router.post("/console/alerts/{alert_id}/acknowledge")
async def acknowledge(
    alert_id: str, services: ServicesDep, viewer: ViewerDep, form: CheckedForm
) -> Response:
    """Someone is on it (an open alert only)."""
    await services.monitor.acknowledge(alert_id, actor=viewer.acting(), note=_note(form))
    return _back(alert_id)


@router.post("/console/alerts/{alert_id}/resolve")
async def resolve(
    alert_id: str, services: ServicesDep, viewer: ViewerDep, form: CheckedForm
) -> Response:
    """Dealt with (an open or acknowledged alert); the next finding opens a new one."""
    await services.monitor.resolve(alert_id, actor=viewer.acting(), note=_note(form))
    return _back(alert_id)

"""The console's front page (posture at a glance) and the signed-out page.

What the overview shows follows who looks, and every figure is read through the same domain
call as the API, as the viewer, so a figure someone may not see is never computed for them:

* everyone: the approval requests waiting for them and their grants in force (their own);
* a role that reads agents: the fleet by risk tier and by state;
* any role: the open and acknowledged alerts the monitor lets them read (a developer: those
  of their own agents), and decisions per minute by effect over the last minutes (counted by
  :meth:`~tether.api.metrics.Metrics.recent`, no name in them);
* a role that reads approvals: every pending request;
* a role that reads the posture: the standing privileges (leases past their role's max TTL,
  grants longer than the grant maximum, logins Tether did not create). The report scans the
  managed systems and evaluates the policy for every agent, so it is not in the page: htmx
  loads it afterwards from ``/console/overview/posture`` (a fragment), which without htmx is
  a page of its own behind a plain link.

An end user with no role sees only their own figures: nothing about the fleet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from tether.api._posture import posture
from tether.api.console._listing import read_all
from tether.api.console._render import page
from tether.api.console._session import Viewer, ViewerDep
from tether.api.deps import ServicesDep
from tether.api.metrics import RECENT_MINUTES, Metrics
from tether.api.services import Services
from tether.delegation.models import ApprovalMatch, ApprovalState, GrantMatch
from tether.identity.access import Permission
from tether.identity.models import AgentState, RiskTier
from tether.monitor.models import Alert, AlertState, Severity
from tether.store.interfaces import AlertMatch

__all__ = ["router"]

router = APIRouter(tags=["console"], include_in_schema=False)

#: Items asked for per call (the services' largest page).
PAGE = 500
#: At most this many of any one kind are counted for the overview (then shown as "N+").
MAX_COUNTED = 5_000
#: Newest open alerts listed under the counts.
NEWEST_ALERTS = 5
#: Rows of each standing-privilege table.
STANDING_ROWS = 20
#: The posture window (days) for the standing privileges.
POSTURE_DAYS = 30
_SEVERITIES = sorted(Severity, key=lambda s: s.rank, reverse=True)


@dataclass(frozen=True, kw_only=True)
class Counted:
    """How many there are; ``capped`` when counting stopped at :data:`MAX_COUNTED`."""

    total: int
    capped: bool = False


@dataclass(frozen=True, kw_only=True)
class Fleet:
    agents: Counted
    by_tier: dict[str, int]
    by_state: dict[str, int]


@dataclass(frozen=True, kw_only=True)
class OpenAlerts:
    alerts: Counted
    by_severity: dict[str, int]
    newest: list[Alert]


async def _fleet(services: Services, viewer: Viewer) -> Fleet:
    actor = viewer.acting()

    async def fetch(after: str | None) -> list[Any]:
        return await services.registry.list(actor=actor, limit=PAGE, after=after)

    agents, capped = await read_all(fetch, lambda a: str(a.name), page=PAGE, bound=MAX_COUNTED)
    by_tier = {str(t): 0 for t in reversed(RiskTier)}
    by_state = {str(s): 0 for s in AgentState}
    for agent in agents:
        by_tier[str(agent.risk_tier)] += 1
        by_state[str(agent.state)] += 1
    return Fleet(agents=Counted(total=len(agents), capped=capped), by_tier=by_tier,
                 by_state=by_state)  # fmt: skip


async def _open_alerts(services: Services, viewer: Viewer) -> OpenAlerts:
    actor = viewer.acting()
    match = AlertMatch(states=(AlertState.OPEN, AlertState.ACKNOWLEDGED))

    async def fetch(after: str | None) -> list[Alert]:
        return await services.monitor.list(match, actor=actor, limit=PAGE, after=after)

    alerts, capped = await read_all(fetch, lambda a: a.id, page=PAGE, bound=MAX_COUNTED)
    by_severity = {str(s): 0 for s in _SEVERITIES}
    for alert in alerts:
        by_severity[str(alert.severity)] += 1
    return OpenAlerts(alerts=Counted(total=len(alerts), capped=capped), by_severity=by_severity,
                      newest=alerts[:NEWEST_ALERTS])  # fmt: skip


async def _pending(services: Services, viewer: Viewer, *, everyone: bool) -> Counted:
    """Approval requests still waiting for an answer and not expired: the viewer's own, or
    (``everyone``, for a role that reads them all) every person's."""
    now = services.clock.now()
    actor = viewer.acting() if everyone else viewer.person
    match = ApprovalMatch(user=None if everyone else viewer.user, state=ApprovalState.PENDING)

    async def fetch(after: str | None) -> list[Any]:
        return await services.delegation.approvals.list(match, actor=actor, limit=PAGE, after=after)

    found, capped = await read_all(fetch, lambda a: str(a.id), page=PAGE, bound=MAX_COUNTED)
    return Counted(total=sum(1 for a in found if not a.expired(now)), capped=capped)


async def _my_grants(services: Services, viewer: Viewer) -> Counted:
    async def fetch(after: str | None) -> list[Any]:
        return await services.delegation.grants.list(
            GrantMatch(user=viewer.user), actor=viewer.person, in_force=True, limit=PAGE,
            after=after,
        )  # fmt: skip

    found, capped = await read_all(fetch, lambda g: str(g.id), page=PAGE, bound=MAX_COUNTED)
    return Counted(total=len(found), capped=capped)


def _rates(request: Request, services: Services) -> dict[str, float] | None:
    metrics: Metrics | None = getattr(request.app.state, "metrics", None)
    if metrics is None:
        return None
    return metrics.recent(now=services.clock.now().timestamp())


@router.get("/console")
async def overview(request: Request, services: ServicesDep, viewer: ViewerDep) -> HTMLResponse:
    has_role = viewer.operator is not None
    return page(
        request,
        "console/overview.html",
        viewer=viewer,
        active="overview",
        my_pending=await _pending(services, viewer, everyone=False),
        my_grants=await _my_grants(services, viewer),
        fleet=await _fleet(services, viewer) if viewer.may(Permission.AGENT_READ) else None,
        open_alerts=await _open_alerts(services, viewer) if has_role else None,
        all_pending=(
            await _pending(services, viewer, everyone=True)
            if viewer.may(Permission.APPROVAL_READ)
            else None
        ),
        rates=_rates(request, services) if has_role else None,
        minutes=RECENT_MINUTES,
        show_posture=viewer.may(Permission.POSTURE_READ),
        show_decisions=viewer.may(Permission.AUDIT_READ),
    )


@router.get("/console/overview/posture")
async def standing(request: Request, services: ServicesDep, viewer: ViewerDep) -> HTMLResponse:
    """The standing privileges of the posture report: a fragment for htmx, else a page."""
    report = await posture(services, actor=viewer.acting(), days=POSTURE_DAYS)
    fragment = request.headers.get("hx-request") == "true"
    return page(
        request,
        "console/overview_posture.html" if fragment else "console/overview_posture_page.html",
        viewer=viewer,
        active="overview",
        report=report,
        rows=STANDING_ROWS,
        show_leases=viewer.may(Permission.LEASE_READ),
    )


@router.get("/console/signed-out")
async def signed_out(request: Request) -> HTMLResponse:
    return page(request, "console/signed_out.html", viewer=None)

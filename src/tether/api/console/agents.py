"""The console's agents pages: the registry as people see it.

``/console/agents`` lists every agent the viewer may read (filtered by state, paged by name as
``GET /v1/agents`` pages). ``/console/agents/-/register`` is a developer's self-service
registration (``-`` is never an agent's name, so it shadows no agent's page). ``/console/agents/
{name}`` shows one agent: its identity, state, risk and the factors behind it, declarations,
instances and keys, leases, grants, and its recent decisions and history from the audit log,
with the lifecycle actions the viewer may take.

Every read and every action is the API's own domain call, made as the viewer (their role, and
an owner's rights on their own agents), so the permission checks and audit records are the
API's: a section the viewer's role may not read is left out because the domain refused it, and
a hidden action forged anyway is refused by the registry.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Awaitable, Mapping
from typing import Annotated, Any, TypeVar
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.datastructures import FormData

from tether.api.console._render import page
from tether.api.console._session import CheckedForm, Viewer, ViewerDep
from tether.api.console.decisions import last_sequence
from tether.api.deps import ServicesDep
from tether.api.errors import status_for
from tether.api.schemas import AgentIn
from tether.api.services import Services
from tether.audit.records import AuditRecord
from tether.credentials.models import LIVE_STATES, LeaseMatch
from tether.delegation.models import GrantMatch
from tether.errors import Conflict, Forbidden, InvalidInput
from tether.identity.access import Actor, Permission, allowed
from tether.identity.models import Agent, AgentState, Autonomy, Connectivity, DataClass

__all__ = ["router"]

router = APIRouter(tags=["console"], include_in_schema=False)
T = TypeVar("T")

#: Agents on one page of the list.
PAGE_SIZE = 50
#: Rows of each table on an agent's page (leases, grants, decisions, history).
SHOWN = 20
#: How far back an agent's page looks in the audit log: its latest records, this many. The
#: audit query pages forward by sequence and has no filter by agent, so the page reads that
#: window (a thousand at a time) and keeps what concerns the agent.
AUDIT_WINDOW = 5000
_AUDIT_PAGE = 1000

#: A state-changing action -> the state it moves the agent to (``approve`` is its own call).
_TARGETS = {
    "suspend": AgentState.SUSPENDED,
    "resume": AgentState.ACTIVE,
    "quarantine": AgentState.QUARANTINED,
    "retire": AgentState.RETIRED,
}
#: When an action is offered: the states it applies to and the permission it needs (an
#: owner's rights count). The registry decides; this only spares people buttons that fail.
_OFFERED: dict[str, tuple[frozenset[AgentState], Permission]] = {
    "approve": (frozenset({AgentState.PENDING_REVIEW}), Permission.AGENT_APPROVE),
    "suspend": (frozenset({AgentState.ACTIVE}), Permission.AGENT_SUSPEND),
    "resume": (frozenset({AgentState.SUSPENDED}), Permission.AGENT_RESUME),
    "quarantine": (
        frozenset({AgentState.ACTIVE, AgentState.SUSPENDED, AgentState.PENDING_REVIEW}),
        Permission.AGENT_QUARANTINE,
    ),
    "retire": (frozenset(set(AgentState) - {AgentState.RETIRED}), Permission.AGENT_RETIRE),
}
_LIST = re.compile(r"[\s,]+")


# -- the list ---------------------------------------------------------------------------


@router.get("/console/agents")
async def agents(
    request: Request,
    viewer: ViewerDep,
    services: ServicesDep,
    state: Annotated[str, Query(max_length=32)] = "",
    after: Annotated[str | None, Query(max_length=63)] = None,
) -> HTMLResponse:
    chosen = _state(state)
    found = await services.registry.list(
        actor=viewer.acting(), state=chosen, limit=PAGE_SIZE, after=after or None
    )
    next_page = None
    if len(found) == PAGE_SIZE:
        next_page = "?" + urlencode({"state": state, "after": found[-1].name})
    return page(
        request, "console/agents.html", viewer=viewer, active="agents", agents=found,
        state=chosen.value if chosen else "", states=[s.value for s in AgentState],
        next_page=next_page, may_register=viewer.may(Permission.AGENT_REGISTER),
    )  # fmt: skip


def _state(value: str) -> AgentState | None:
    if not value:
        return None
    try:
        return AgentState(value)
    except ValueError:
        states = ", ".join(s.value for s in AgentState)
        raise InvalidInput(f"no agent state {value!r}: use one of {states}") from None


# -- registering ------------------------------------------------------------------------


@router.get("/console/agents/-/register")
async def register_form(request: Request, viewer: ViewerDep) -> HTMLResponse:
    values = _register_values(FormData(), posted=False) | {"owners": viewer.user}
    return _register_page(request, viewer, values=values)


@router.post("/console/agents")
async def register(
    request: Request, viewer: ViewerDep, services: ServicesDep, form: CheckedForm
) -> Response:
    """Register as ``POST /v1/agents`` does; a mistake in the form shows the form again with
    what was typed and what is wrong. The registry decides the state (critical risk waits for
    security's review), shown on the agent's page that follows."""
    values = _register_values(form)
    try:
        body = AgentIn.model_validate(_agent_body(values))
    except ValidationError as exc:
        return _register_page(request, viewer, values=values, error=_problem(exc), status=422)
    try:
        agent = await services.registry.register(
            actor=viewer.acting(),
            name=body.name,
            owners=body.owners,
            description=body.description,
            declarations=body.declarations.to_domain(),
        )
    except (InvalidInput, Conflict) as exc:
        return _register_page(
            request, viewer, values=values, error=exc.message, status=status_for(exc)
        )
    return RedirectResponse(_agent_path(agent.name), status_code=303)


def _register_page(
    request: Request,
    viewer: Viewer,
    *,
    values: Mapping[str, Any],
    error: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    return page(
        request, "console/agent_register.html", viewer=viewer, active="agents", status=status,
        values=values, error=error, may_register=viewer.may(Permission.AGENT_REGISTER),
        data_classes=[d.value for d in DataClass], autonomies=[a.value for a in Autonomy],
        connectivities=[c.value for c in Connectivity],
    )  # fmt: skip


def _register_values(form: FormData, *, posted: bool = True) -> dict[str, Any]:
    """What the form said, as typed (to show again); the API's defaults for a new form (an
    unticked box is absent from a posted form, so no data class ticked stays none)."""

    def text(key: str, default: str = "") -> str:
        return str(form.get(key) or default).strip()

    return {
        "name": text("name"),
        "description": text("description"),
        "owners": text("owners"),
        "tools": text("tools"),
        "resources": text("resources"),
        "data_classes": [str(v) for v in form.getlist("data_classes")]
        if posted
        else [DataClass.PUBLIC.value],
        "external_connections": text("external_connections", Connectivity.NONE.value),
        "autonomy": text("autonomy", Autonomy.SUPERVISED.value),
        "may_call_agents": "may_call_agents" in form,
        "notification_endpoint": text("notification_endpoint"),
    }


def _agent_body(values: Mapping[str, Any]) -> dict[str, Any]:
    """The ``POST /v1/agents`` body the form stands for: lists are comma-separated."""
    return {
        "name": values["name"],
        "owners": _split(values["owners"]),
        "description": values["description"],
        "declarations": {
            "tools": _split(values["tools"]),
            "resources": _split(values["resources"]),
            "data_classes": values["data_classes"],
            "external_connections": values["external_connections"],
            "autonomy": values["autonomy"],
            "may_call_agents": values["may_call_agents"],
            "notification_endpoint": values["notification_endpoint"] or None,
        },
    }


def _split(text: str) -> list[str]:
    return [part for part in _LIST.split(text) if part]


def _problem(exc: ValidationError) -> str:
    """The first thing wrong with the form, in words a person can act on."""
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"] if not isinstance(p, int))
    return f"{field.replace('declarations.', '').replace('_', ' ')}: {first['msg']}"


# -- one agent --------------------------------------------------------------------------


@router.get("/console/agents/{name}")
async def agent_page(
    request: Request, name: str, viewer: ViewerDep, services: ServicesDep
) -> HTMLResponse:
    actor = viewer.acting()
    agent = await services.registry.get(name, actor=actor)
    assessments = await services.registry.assessments(name, actor=actor)
    offered = _offered(viewer.operator, agent)
    return page(
        request, "console/agent.html", viewer=viewer, active="agents", agent=agent,
        assessment=assessments[-1] if assessments else None,
        instances=await services.registry.instances(name, actor=actor),
        keys=await services.registry.keys(name, actor=actor, include_removed=True),
        **await _holdings(services, agent, actor), **await _records(services, agent, actor),
        actions=[a for a in offered if a != "retire"], may_retire="retire" in offered,
    )  # fmt: skip


def _offered(operator: Actor | None, agent: Agent) -> list[str]:
    """The lifecycle actions to show: those the viewer's role (or ownership) allows from the
    agent's state. Lifting a quarantine is security's alone, as the registry has it."""
    if operator is None:
        return []
    shown = [
        action
        for action, (states, permission) in _OFFERED.items()
        if agent.state in states and allowed(operator, permission, owners=agent.owners)
    ]
    if agent.state is AgentState.QUARANTINED and allowed(operator, Permission.AGENT_QUARANTINE):
        shown.insert(0, "resume")
    return shown


async def _visible(read: Awaitable[T]) -> T | None:
    """What ``read`` gives, or None when the domain refuses it to the viewer's role (the page
    then says so instead of showing the section)."""
    try:
        return await read
    except Forbidden:
        return None


async def _holdings(services: Services, agent: Agent, actor: Actor) -> dict[str, Any]:
    """The leases the agent holds now (as ``GET /v1/leases?agent=``; ended ones are in its
    history) and its grants (``GET /v1/grants?agent=``), each None when the viewer may not see
    them."""
    leases = await _visible(
        services.leases.list(
            LeaseMatch(agent=agent.name), actor=actor, states=LIVE_STATES, limit=SHOWN
        )
    )
    grants = await _visible(
        services.delegation.grants.list(GrantMatch(agent=agent.name), actor=actor, limit=SHOWN)
    )
    return {"leases": leases, "grants": grants}


async def _records(services: Services, agent: Agent, actor: Actor) -> dict[str, Any]:
    """The agent's latest decisions and the latest other records about it (newest first),
    each None when the viewer may not read the audit log (as ``GET /v1/audit`` requires)."""
    if not allowed(actor, Permission.AUDIT_READ):
        return {"decisions": None, "history": None}
    store = services.store
    after = max(0, await last_sequence(store) - AUDIT_WINDOW)
    decisions: deque[AuditRecord] = deque(maxlen=SHOWN)
    history: deque[AuditRecord] = deque(maxlen=SHOWN)
    for _ in range(AUDIT_WINDOW // _AUDIT_PAGE + 2):  # the window, and what came since
        rows = await store.list_audit(after_sequence=after, limit=_AUDIT_PAGE)
        for sequence, record in rows:
            after = sequence
            if record.type == "decision":
                if record.details.get("agent") == agent.name:
                    decisions.append(record)
            elif _concerns(record, agent):
                history.append(record)
        if len(rows) < _AUDIT_PAGE:
            break
    return {"decisions": list(reversed(decisions)), "history": list(reversed(history))}


def _concerns(record: AuditRecord, agent: Agent) -> bool:
    """Whether a record is about the agent: it (or one of its instances) is the subject, or
    the details name it (leases, grants, alerts)."""
    subject = record.subject or ""
    return (
        subject == agent.spiffe_id
        or subject.startswith(agent.spiffe_id + "/")
        or record.details.get("agent") == agent.name
    )


# -- lifecycle actions ------------------------------------------------------------------


@router.post("/console/agents/{name}/state")
async def change_state(
    name: str, viewer: ViewerDep, services: ServicesDep, form: CheckedForm
) -> Response:
    """Approve, suspend, resume, quarantine or retire, as ``POST /v1/agents/{name}/{action}``:
    quarantine (like every stop) revokes the agent's tokens and ends its leases. Retiring is
    final, so it takes a reason."""
    action = str(form.get("action") or "")
    reason = str(form.get("reason") or "").strip() or None
    if action == "approve":
        await services.registry.approve(name, actor=viewer.acting(), reason=reason)
    else:
        target = _TARGETS.get(action)
        if target is None:
            raise InvalidInput(f"no action {action!r}: use approve or one of {', '.join(_TARGETS)}")
        if target is AgentState.RETIRED and reason is None:
            raise InvalidInput("retiring an agent is final: say why in the reason")
        await services.registry.set_state(name, target, actor=viewer.acting(), reason=reason)
    return RedirectResponse(_agent_path(name), status_code=303)


def _agent_path(name: str) -> str:
    return f"/console/agents/{quote(name, safe='')}"

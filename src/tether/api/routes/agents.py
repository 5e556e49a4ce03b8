"""``/v1/agents``: the agent registry over HTTP (operators, by role)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from tether.api.deps import OperatorDep, ServicesDep
from tether.api.schemas import (
    AgentIn,
    AgentUpdate,
    KeyIn,
    StateChange,
    agent_json,
    assessment_json,
    instance_json,
    key_json,
)
from tether.errors import NotFound
from tether.identity.models import AgentState

router = APIRouter(prefix="/v1/agents", tags=["agents"])
Json = dict[str, Any]

_ACTIONS = {
    "suspend": AgentState.SUSPENDED,
    "resume": AgentState.ACTIVE,
    "quarantine": AgentState.QUARANTINED,
    "retire": AgentState.RETIRED,
}


@router.post("", status_code=201, summary="Register an agent (its risk is assessed)")
async def register(body: AgentIn, actor: OperatorDep, services: ServicesDep) -> Json:
    agent = await services.registry.register(
        actor=actor,
        name=body.name,
        owners=body.owners,
        description=body.description,
        declarations=body.declarations.to_domain(),
    )
    return agent_json(agent)


@router.get("", summary="List agents, by name, paged with `after`")
async def list_agents(
    actor: OperatorDep,
    services: ServicesDep,
    state: AgentState | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    after: str | None = None,
) -> Json:
    agents = await services.registry.list(actor=actor, state=state, limit=limit, after=after)
    return {"agents": [agent_json(a) for a in agents]}


@router.get("/{name}", summary="Show an agent")
async def show(name: str, actor: OperatorDep, services: ServicesDep) -> Json:
    return agent_json(await services.registry.get(name, actor=actor))


@router.patch("/{name}", summary="Change owners, description or declarations (re-assessed)")
async def update(name: str, body: AgentUpdate, actor: OperatorDep, services: ServicesDep) -> Json:
    agent = await services.registry.update(
        name,
        actor=actor,
        owners=body.owners,
        description=body.description,
        declarations=body.declarations.to_domain() if body.declarations else None,
    )
    return agent_json(agent)


@router.post("/{name}/approve", summary="Approve an agent waiting for security review")
async def approve(
    name: str, actor: OperatorDep, services: ServicesDep, body: StateChange | None = None
) -> Json:
    reason = body.reason if body else None
    return agent_json(await services.registry.approve(name, actor=actor, reason=reason))


@router.get("/{name}/assessments", summary="Risk assessment history, oldest first")
async def assessments(name: str, actor: OperatorDep, services: ServicesDep) -> Json:
    items = await services.registry.assessments(name, actor=actor)
    return {"assessments": [assessment_json(a) for a in items]}


@router.get("/{name}/instances", summary="Running copies seen so far")
async def instances(name: str, actor: OperatorDep, services: ServicesDep) -> Json:
    items = await services.registry.instances(name, actor=actor)
    return {"instances": [instance_json(i) for i in items]}


@router.get("/{name}/keys", summary="The agent's public keys")
async def list_keys(
    name: str, actor: OperatorDep, services: ServicesDep, include_removed: bool = False
) -> Json:
    keys = await services.registry.keys(name, actor=actor, include_removed=include_removed)
    return {"keys": [key_json(k) for k in keys]}


@router.post("/{name}/keys", status_code=201, summary="Register a public key (JWK)")
async def add_key(name: str, body: KeyIn, actor: OperatorDep, services: ServicesDep) -> Json:
    return key_json(await services.registry.add_key(name, body.jwk, actor=actor))


@router.delete("/{name}/keys/{kid}", summary="Remove a key: assertions signed by it fail")
async def remove_key(name: str, kid: str, actor: OperatorDep, services: ServicesDep) -> Json:
    return key_json(await services.registry.remove_key(name, kid, actor=actor))


# Registered last: a path template this broad must not shadow /{name}/keys.
@router.post("/{name}/{action}", summary="suspend | resume | quarantine | retire")
async def change_state(
    name: str,
    action: str,
    actor: OperatorDep,
    services: ServicesDep,
    body: StateChange | None = None,
) -> Json:
    target = _ACTIONS.get(action)
    if target is None:
        raise NotFound(f"no action {action!r}: use one of {', '.join(_ACTIONS)}")
    agent = await services.registry.set_state(
        name, target, actor=actor, reason=body.reason if body else None
    )
    return agent_json(agent)

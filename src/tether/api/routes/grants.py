"""``/v1/grants``: users' consent grants.

A user creates, lists and revokes their own grants with their own access token; security
admins list and revoke anyone's (auditors list). Revoking a grant refuses every delegated token
under it at the checkpoint from the next decision, and ends the leases issued under it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from tether.api.delegation_schemas import BulkGrantRevokeIn, GrantIn, grant_json
from tether.api.deps import ServicesDep, caller
from tether.delegation.models import GrantMatch

router = APIRouter(prefix="/v1/grants", tags=["grants"])
Json = dict[str, Any]


@router.post("", status_code=201, summary="Consent: grant an agent scopes for a purpose")
async def create(body: GrantIn, request: Request, services: ServicesDep) -> Json:
    actor = await caller(request, services, users=True)
    grant = await services.delegation.grants.create(
        actor=actor,
        agent=body.agent,
        scopes=body.scopes,
        purpose=body.purpose,
        purpose_code=body.purpose_code,
        session=body.session,
        ttl_seconds=body.ttl_seconds,
    )
    return grant_json(grant)


@router.get("", summary="List grants (a user sees only their own)")
async def list_grants(  # one query parameter each, keyword-only
    request: Request,
    services: ServicesDep,
    *,
    user: Annotated[str | None, Query(max_length=128)] = None,
    agent: Annotated[str | None, Query(max_length=63)] = None,
    session: Annotated[str | None, Query(max_length=128)] = None,
    in_force: bool = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> Json:
    actor = await caller(request, services, users=True)
    grants = await services.delegation.grants.list(
        GrantMatch(user=user, agent=agent, session=session),
        actor=actor,
        in_force=in_force,
        limit=limit,
        after=after,
    )
    return {"grants": [grant_json(g) for g in grants]}


@router.post("/revoke", summary="Revoke every active grant of a user, an agent or a session")
async def revoke_all(body: BulkGrantRevokeIn, request: Request, services: ServicesDep) -> Json:
    actor = await caller(request, services, users=True)
    match = GrantMatch(user=body.user, agent=body.agent, session=body.session)
    revoked = await services.delegation.grants.revoke_all(match, actor=actor, reason=body.reason)
    return {"revoked": [grant_json(g) for g in revoked], "count": len(revoked)}


@router.get("/{grant_id}", summary="Show a grant")
async def show(grant_id: str, request: Request, services: ServicesDep) -> Json:
    actor = await caller(request, services, users=True)
    return grant_json(await services.delegation.grants.get(grant_id, actor=actor))


@router.delete("/{grant_id}", summary="Revoke a grant")
async def revoke(
    grant_id: str,
    request: Request,
    services: ServicesDep,
    reason: Annotated[str | None, Query(max_length=500)] = None,
) -> Json:
    actor = await caller(request, services, users=True)
    return grant_json(await services.delegation.grants.revoke(grant_id, actor=actor, reason=reason))

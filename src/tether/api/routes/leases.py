"""``/v1/leases``: just-in-time credentials (agents take them; operators see and end them).

An agent asks for a lease with its JWT-SVID as the bearer token (the decision is the
checkpoint's ``use_credential``); the answer holds the credential's secret, once, and is never
cached. Renewing and revoking take the agent's own token or an operator token.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from tether.api.credential_schemas import (
    BulkRevokeIn,
    LeaseIn,
    RenewIn,
    RevokeIn,
    issued_json,
    lease_json,
)
from tether.api.deps import ServicesDep, bearer_token, caller, client_certificate
from tether.api.services import Services
from tether.credentials.models import LeaseMatch, LeaseState
from tether.errors import Forbidden
from tether.identity.access import Actor
from tether.identity.operators import TOKEN_PREFIX

router = APIRouter(prefix="/v1/leases", tags=["leases"])
Json = dict[str, Any]
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


async def _caller(request: Request, services: Services) -> Actor:
    """An operator (by an operator token) or the agent instance presenting its JWT-SVID."""
    return await caller(request, services)


@router.post("", status_code=201, summary="Issue a lease to the calling agent instance")
async def issue(body: LeaseIn, request: Request, response: Response, services: ServicesDep) -> Json:
    token = bearer_token(request)
    if token.startswith(TOKEN_PREFIX):
        raise Forbidden("a lease is issued to an agent: present its JWT-SVID as the bearer token")
    cert = client_certificate(request, services)
    issued = await services.leases.issue(
        token=token,
        engine=body.engine,
        role=body.role,
        ttl=body.ttl,
        certificate_thumbprint=cert.thumbprint if cert else None,
        correlation_id=request.headers.get("x-correlation-id"),
    )
    response.headers.update(_NO_STORE)
    return issued_json(issued)


@router.get("", summary="List leases (an agent sees its own)")
async def list_leases(  # one query parameter each, keyword-only
    *,
    request: Request,
    services: ServicesDep,
    agent: str | None = None,
    instance: str | None = None,
    grant_id: str | None = None,
    user: str | None = None,
    engine: str | None = None,
    state: Annotated[list[LeaseState] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    after: str | None = None,
) -> Json:
    actor = await _caller(request, services)
    match = LeaseMatch(agent=agent, instance=instance, grant_id=grant_id, user=user, engine=engine)
    leases = await services.leases.list(
        match, actor=actor, states=state or None, limit=limit, after=after
    )
    return {"leases": [lease_json(lease) for lease in leases]}


@router.post("/revoke", summary="Revoke every lease of an agent, instance, grant or user")
async def revoke_all(body: BulkRevokeIn, request: Request, services: ServicesDep) -> Json:
    actor = await _caller(request, services)
    match = LeaseMatch(
        agent=body.agent, instance=body.instance, grant_id=body.grant_id, user=body.user
    )
    ended = await services.leases.revoke_all(match, actor=actor, reason=body.reason)
    return {"revoked": len(ended), "leases": [lease_json(lease) for lease in ended]}


@router.get("/{lease_id}", summary="Show a lease")
async def show(lease_id: str, request: Request, services: ServicesDep) -> Json:
    actor = await _caller(request, services)
    return lease_json(await services.leases.get(lease_id, actor=actor))


@router.post("/{lease_id}/renew", summary="Renew a lease (up to its max TTL)")
async def renew(
    lease_id: str, request: Request, services: ServicesDep, body: RenewIn | None = None
) -> Json:
    actor = await _caller(request, services)
    ttl = body.ttl if body else None
    token = bearer_token(request)
    cert = client_certificate(request, services)
    renewed = await services.leases.renew(
        lease_id,
        actor=actor,
        ttl=ttl,
        token=None if actor.kind == "operator" else token,
        certificate_thumbprint=cert.thumbprint if cert else None,
    )
    return lease_json(renewed)


@router.post("/{lease_id}/revoke", summary="Revoke a lease now")
async def revoke(
    lease_id: str, request: Request, services: ServicesDep, body: RevokeIn | None = None
) -> Json:
    actor = await _caller(request, services)
    reason = body.reason if body else None
    return lease_json(await services.leases.revoke(lease_id, actor=actor, reason=reason))

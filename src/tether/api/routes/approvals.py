"""Approvals (OpenID CIBA): ``POST /oauth2/bc-authorize`` for agents, ``/v1/approvals`` for the
people asked.

An agent instance asks its user to approve exact calls: it authenticates with
``private_key_jwt`` (or its X.509-SVID), names the user (``login_hint``, or
``login_hint_token``: the delegated token it holds for them), and describes each operation as an
RFC 9396 ``authorization_details`` item carrying the call's digest. It then polls
``POST /oauth2/token`` with ``grant_type=urn:openid:params:grant-type:ciba`` and its
``auth_req_id`` (:mod:`tether.api.routes.oauth`).

The person asked lists their requests (the approvals inbox), and approves all, some
(``{"items": [0, 2]}``) or none of the items, with their own sign-in (``tether login``);
security admins and auditors list everyone's, and answer no one's.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from tether.api.delegation_schemas import ApprovalAnswerIn, approval_json
from tether.api.deps import ServicesDep, caller
from tether.api.routes.oauth import NO_STORE, authenticate_client, read_form
from tether.delegation.models import ApprovalMatch, ApprovalState

router = APIRouter(tags=["approvals"])
Json = dict[str, Any]


@router.post(
    "/oauth2/bc-authorize",
    summary="Backchannel authentication (CIBA): ask a user to approve exact calls",
)
async def bc_authorize(request: Request, services: ServicesDep) -> JSONResponse:
    params, _ = await read_form(request)
    client = await authenticate_client(request, services, params)
    started = await services.delegation.approvals.start(params, client=client)
    return JSONResponse(
        {
            "auth_req_id": started.auth_req_id,
            "expires_in": started.expires_in,
            "interval": started.interval,
        },
        headers=NO_STORE,
    )


@router.get("/v1/approvals", summary="The approvals inbox (a user sees only their own)")
async def list_approvals(  # one query parameter each, keyword-only
    request: Request,
    services: ServicesDep,
    *,
    state: ApprovalState | None = None,
    user: Annotated[str | None, Query(max_length=128)] = None,
    agent: Annotated[str | None, Query(max_length=63)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> Json:
    actor = await caller(request, services, users=True)
    found = await services.delegation.approvals.list(
        ApprovalMatch(user=user, agent=agent, state=state), actor=actor, limit=limit, after=after
    )
    now = services.clock.now()
    return {"approvals": [approval_json(a, now=now) for a in found]}


@router.get("/v1/approvals/{approval_id}", summary="Show an approval request")
async def show(approval_id: str, request: Request, services: ServicesDep) -> Json:
    actor = await caller(request, services, users=True)
    approval = await services.delegation.approvals.get(approval_id, actor=actor)
    return approval_json(approval, now=services.clock.now())


@router.post(
    "/v1/approvals/{approval_id}/approve",
    summary="Approve an approval request: all its items, or those listed",
)
async def approve(
    approval_id: str, body: ApprovalAnswerIn, request: Request, services: ServicesDep
) -> Json:
    actor = await caller(request, services, users=True)
    approvals = services.delegation.approvals
    items = body.items
    if items is None:
        items = list(range(len((await approvals.get(approval_id, actor=actor)).details)))
    answered = await approvals.answer(approval_id, actor=actor, approve=items)
    return approval_json(answered, now=services.clock.now())


@router.post("/v1/approvals/{approval_id}/deny", summary="Refuse an approval request")
async def deny(approval_id: str, request: Request, services: ServicesDep) -> Json:
    actor = await caller(request, services, users=True)
    answered = await services.delegation.approvals.answer(approval_id, actor=actor, approve=None)
    return approval_json(answered, now=services.clock.now())

"""``/v1/posture``: the standing state of the fleet, and which found secrets are managed ones.

``GET /v1/posture?days=30`` is the report of :mod:`tether.monitor.posture` (root, security
admins and auditors: it reads agents, people, engines, leases, grants and alerts).
``POST /v1/posture/secrets`` takes SHA-256 digests of secrets a scanner found outside Tether
and answers which are the digest of a secret an engine holds (security admins only); neither
the request nor the answer holds a secret.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from tether.api import _posture
from tether.api.deps import OperatorDep, ServicesDep
from tether.api.posture_schemas import PostureOut, SecretDigestsIn, SecretMatchesOut

router = APIRouter(prefix="/v1/posture", tags=["posture"])
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@router.get("", summary="The posture: inventory, standing privileges, unused permissions")
async def show(
    actor: OperatorDep,
    services: ServicesDep,
    response: Response,
    days: Annotated[int, Query(ge=1, le=365, description="The window of observed use")] = 30,
) -> PostureOut:
    report = await _posture.posture(services, actor=actor, days=days)
    response.headers.update(_NO_STORE)
    return PostureOut.model_validate(report.to_json())


@router.post("/secrets", summary="Which digests of secrets found elsewhere are managed secrets")
async def match(
    body: SecretDigestsIn, actor: OperatorDep, services: ServicesDep, response: Response
) -> SecretMatchesOut:
    found = await _posture.match_secrets(services, actor=actor, digests=body.digests)
    response.headers.update(_NO_STORE)
    return SecretMatchesOut.model_validate(
        {
            "checked": len(set(body.digests)),
            "matches": [
                {"digest": m.digest, "engine": m.engine, "kind": m.kind, "name": m.name}
                for m in found
            ],
        }
    )

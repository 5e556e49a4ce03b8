"""``/v1/svid``: X.509-SVIDs for agent instances, and revocation of JWT-SVIDs.

* ``POST /v1/svid/x509``: an agent instance turns a CSR into an X.509-SVID for mTLS.
* ``POST /v1/svid/revocations``: an operator revokes one token (``{"jti": …}``), or every
  token of an agent (``{"agent": name}``) or of one instance (``{"agent": name, "instance":
  id}``) issued before the revocation or up to 30 s after it, with an optional ``reason``; 201
  with the entry. Decisions refuse those tokens at once on this replica and, on the others, at
  a change note or within ``hot_state_refresh_seconds``.
* ``GET /v1/svid/revocations``: the entries in force (each until its tokens have expired).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from tether.api.deps import AgentDep, OperatorDep, ServicesDep
from tether.api.schemas import CsrIn, RevocationIn, revocation_json
from tether.crypto.ca import certificate_not_after

router = APIRouter(prefix="/v1/svid", tags=["svid"])


@router.post("/x509", summary="Sign a CSR into an X.509-SVID naming the calling instance")
async def x509_svid(body: CsrIn, caller: AgentDep, services: ServicesDep) -> dict[str, Any]:
    pem = await services.svids.issue_x509_svid(caller, body.csr.encode())
    return {
        "spiffe_id": caller.spiffe_id,
        "certificate": pem.decode(),
        "bundle": services.keyring.ca.bundle_pem().decode(),
        "expires_at": certificate_not_after(pem).isoformat(),
    }


@router.post(
    "/revocations", status_code=201, summary="Revoke a JWT-SVID, or an agent's or instance's"
)
async def revoke(
    body: RevocationIn, request: Request, actor: OperatorDep, services: ServicesDep
) -> dict[str, Any]:
    entry = await services.svids.revoke(
        actor=actor,
        jti=body.jti,
        agent=body.agent,
        instance=body.instance,
        reason=body.reason,
        correlation_id=request.headers.get("x-request-id"),
    )
    return revocation_json(entry)


@router.get("/revocations", summary="The token revocations in force, oldest first")
async def list_revocations(actor: OperatorDep, services: ServicesDep) -> dict[str, Any]:
    entries = await services.svids.revocations(actor=actor)
    return {"revocations": [revocation_json(r) for r in entries]}

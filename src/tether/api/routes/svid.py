"""``POST /v1/svid/x509``: an agent instance turns a CSR into an X.509-SVID for mTLS."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from tether.api.deps import AgentDep, ServicesDep
from tether.api.schemas import CsrIn
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

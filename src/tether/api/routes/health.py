"""``/healthz`` (the process answers) and ``/readyz`` (the store answers, the active policy
set can be compiled here, and the audit log verifies)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from tether.api.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz", summary="Readiness: the store, the key ring and the active policy set are usable"
)
async def readyz(services: ServicesDep) -> JSONResponse:
    try:
        await services.store.list_stored_keys()
    except Exception:  # noqa: BLE001 - any failure means not ready
        return JSONResponse({"status": "unavailable", "store": "unreachable"}, status_code=503)
    refused = services.policies.refused_version
    if refused is not None:  # every decision here would be a deny
        answer = {"status": "unavailable", "policies": f"v{refused} cannot be compiled here"}
        return JSONResponse(answer, status_code=503)
    invalid = services.audit.invalid
    if invalid is not None:  # nothing can be recorded, so every decision is a deny
        answer = {
            "status": "unavailable",
            "audit": f"the log does not verify at entry {invalid.index}",
        }
        return JSONResponse(answer, status_code=503)
    return JSONResponse({"status": "ready", "signing_kid": services.keyring.signer.kid})

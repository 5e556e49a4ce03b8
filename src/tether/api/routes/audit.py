"""``GET /v1/audit``: read the audit records (auditors and security admins)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from tether.api.deps import OperatorDep, ServicesDep
from tether.identity.access import Permission, require

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("", summary="Audit records in order; page with `after` (a sequence number)")
async def list_records(
    actor: OperatorDep,
    services: ServicesDep,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    type_prefix: str | None = None,
) -> dict[str, Any]:
    require(actor, Permission.AUDIT_READ)
    rows = await services.store.list_audit(
        after_sequence=after, limit=limit, type_prefix=type_prefix
    )
    return {"records": [{"sequence": seq} | rec.to_dict() for seq, rec in rows]}

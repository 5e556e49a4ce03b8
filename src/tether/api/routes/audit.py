"""``/v1/audit``: the audit log for auditors and security admins.

Read records (``GET /v1/audit``), follow one correlation id (``/trace/{id}``), verify every
replica's log (``/verify``), prove one record (``/records/{id}/proof``: a bundle a third party
checks offline with the verifier key of ``/key``), export a log as JSON lines or OCSF
events (``/export``), and learn the HMAC a record holds for a sensitive value (``/hash``). All
need ``audit.read``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from tether.api.deps import OperatorDep, ServicesDep
from tether.audit import reader
from tether.identity.access import Permission, require

#: The largest sequence number the store can hold (a signed 64-bit integer).
MAX_INDEX = 2**63 - 1

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("", summary="Audit records in order; page with `after` (a sequence number)")
async def list_records(  # noqa: PLR0917 - FastAPI passes query parameters by name
    actor: OperatorDep,
    services: ServicesDep,
    after: Annotated[int, Query(ge=0, le=MAX_INDEX)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    type_prefix: str | None = None,
    correlation_id: str | None = None,
) -> dict[str, Any]:
    require(actor, Permission.AUDIT_READ)
    rows = await services.store.list_audit(
        after_sequence=after, limit=limit, type_prefix=type_prefix, correlation_id=correlation_id
    )
    return {"records": [{"sequence": seq} | rec.to_dict() for seq, rec in rows]}


@router.get("/key", summary="The verifier key of the audit checkpoints (C2SP signed-note)")
async def verifier_key(actor: OperatorDep, services: ServicesDep) -> dict[str, Any]:
    require(actor, Permission.AUDIT_READ)
    audit = services.audit
    return {"verifier_key": audit.verifier_key, "key_name": audit.key_name, "log": audit.origin}


class HashRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: str = Field(max_length=64 * 1024)


@router.post("/hash", summary="The HMAC a record would hold for a sensitive value")
async def hash_value(
    body: HashRequest, actor: OperatorDep, services: ServicesDep
) -> dict[str, Any]:
    """What a decision record holds in place of ``value`` under a sensitive key (a password,
    an API key, a token): search for it to find the records that carried the value."""
    require(actor, Permission.AUDIT_READ)
    return {"hash": services.redactor.hash(body.value)}


@router.get("/logs", summary="Every replica's log: its size and latest signed checkpoint")
async def logs(actor: OperatorDep, services: ServicesDep) -> dict[str, Any]:
    require(actor, Permission.AUDIT_READ)
    store, found = services.store, []
    for log in await store.audit_logs():
        end = await store.audit_log_end(log)
        latest = await store.latest_audit_checkpoint(log)
        found.append(
            {
                "log": log,
                "size": 0 if end is None else end.index + 1,
                "signed_size": None if latest is None else latest.size,
                "signed_at": None if latest is None else latest.signed_at.isoformat(),
                "checkpoint": None if latest is None else latest.note.decode(),
            }
        )
    return {"logs": found, "this_replica": services.audit.origin}


@router.get("/verify", summary="Verify every replica's log; name the first bad index")
async def verify(actor: OperatorDep, services: ServicesDep) -> dict[str, Any]:
    require(actor, Permission.AUDIT_READ)
    audit, store = services.audit, services.store
    reports = await reader.verify_all(
        store,
        open_checkpoint=audit.open_checkpoint,
        witnessed=await audit.witnessed(await store.audit_logs()),
    )
    return {"ok": all(r.ok for r in reports), "logs": [r.to_dict() for r in reports]}


@router.get("/records/{record_id}/proof", summary="The proof bundle of one record")
async def prove(record_id: str, actor: OperatorDep, services: ServicesDep) -> dict[str, Any]:
    require(actor, Permission.AUDIT_READ)
    return await reader.prove(services.store, record_id, verifier_key=services.audit.verifier_key)


@router.get("/trace/{correlation_id}", summary="Every record of one correlation id, as a path")
async def trace(correlation_id: str, actor: OperatorDep, services: ServicesDep) -> dict[str, Any]:
    require(actor, Permission.AUDIT_READ)
    return await reader.trace(services.store, correlation_id)


@router.get(
    "/export",
    summary="A log's entries as JSON lines (exact bytes) or OCSF events",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {"schema": {"type": "string"}}}}},
)
async def export(
    actor: OperatorDep,
    services: ServicesDep,
    format: Literal["jsonl", "ocsf"] = "jsonl",
    log: str | None = None,
    start: Annotated[int, Query(ge=0)] = 0,
) -> StreamingResponse:
    require(actor, Permission.AUDIT_READ)
    lines = reader.export_lines(
        services.store, log or services.audit.origin, format=format, start=start
    )
    return StreamingResponse(lines, media_type="application/x-ndjson")

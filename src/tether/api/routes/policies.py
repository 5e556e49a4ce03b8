"""``/v1/policies``: the operators' Cedar policy set — check, apply, list, show, diff, roll back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import PlainTextResponse

from tether.api.deps import OperatorDep, ServicesDep
from tether.api.schemas import PolicyIn, PolicyText, ReplayIn, policy_json
from tether.api.services import Services
from tether.audit.records import AuditRecord
from tether.errors import PolicySetNotFound
from tether.identity.access import Permission, require
from tether.policy._cedar import schema_text

router = APIRouter(prefix="/v1/policies", tags=["policies"])
#: The largest version the store can hold (a signed 64-bit integer): a larger one names none,
#: and must be refused as input rather than overflow the database driver.
_MAX = 2**63 - 1
Version = Annotated[int, Path(ge=1, le=_MAX)]

#: A replay reads at most this many decision records.
MAX_REPLAYED = 100_000


@router.post("/check", summary="Check a policy set against the schema without applying it")
async def check(body: PolicyText, actor: OperatorDep, services: ServicesDep) -> dict[str, Any]:
    errors = services.policies.check(body.text, actor=actor)
    return {"valid": not errors, "errors": errors}


@router.post("", status_code=201, summary="Apply a policy set: the next version, in force at once")
async def apply(body: PolicyIn, actor: OperatorDep, services: ServicesDep) -> dict[str, Any]:
    stored = await services.policies.apply(body.text, actor=actor, comment=body.comment)
    return policy_json(stored, active=stored.version)


@router.get("", summary="Policy set versions, newest first; page with `before`")
async def list_versions(
    actor: OperatorDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[int | None, Query(ge=1, le=_MAX)] = None,
) -> dict[str, Any]:
    versions = await services.policies.list(actor=actor, limit=limit, before=before)
    active = services.policies.current.version
    return {
        "active": active,
        "versions": [policy_json(v, active=active, text=False) for v in versions],
    }


@router.get(
    "/schema",
    summary="The Cedar schema policies are checked against",
    response_class=PlainTextResponse,
)
async def schema(actor: OperatorDep) -> PlainTextResponse:
    require(actor, Permission.POLICY_READ)
    return PlainTextResponse(schema_text())


@router.get("/diff", summary="Unified diff between two versions (default: to the active one)")
async def diff(
    actor: OperatorDep,
    services: ServicesDep,
    old: Annotated[int, Query(alias="from", ge=1, le=_MAX)],
    new: Annotated[int | None, Query(alias="to", ge=1, le=_MAX)] = None,
) -> dict[str, Any]:
    return {"diff": await services.policies.diff(old, new, actor=actor)}


@router.get("/active", summary="The version in force, with its text")
async def active(actor: OperatorDep, services: ServicesDep) -> dict[str, Any]:
    found = await services.policies.show(None, actor=actor)
    if found is None:
        raise PolicySetNotFound("no policy set has been applied: only the shipped defaults apply")
    return policy_json(found, active=services.policies.current.version)


@router.get("/{version}", summary="One version, with its text")
async def show(version: Version, actor: OperatorDep, services: ServicesDep) -> dict[str, Any]:
    found = await services.policies.show(version, actor=actor)
    assert found is not None  # show(version) raises PolicySetNotFound instead
    return policy_json(found, active=services.policies.current.version)


@router.post("/{version}/activate", summary="Put an earlier version back in force (roll back)")
async def activate(version: Version, actor: OperatorDep, services: ServicesDep) -> dict[str, Any]:
    found = await services.policies.rollback(version, actor=actor)
    return policy_json(found, active=found.version)


@router.post("/replay", summary="What if: recorded decisions that a proposed set would flip")
async def replay(body: ReplayIn, actor: OperatorDep, services: ServicesDep) -> dict[str, Any]:
    since = services.clock.now() - timedelta(seconds=body.since_seconds)
    report = await services.policies.replay(
        body.text, actor=actor, decisions=decisions_since(services, since)
    )
    return {
        "since": since.isoformat(),
        "evaluated": report.evaluated,
        "skipped": report.skipped,
        "truncated": report.truncated,
        "flips": [asdict(f) for f in report.flips],
    }


async def decisions_since(services: Services, since: datetime) -> AsyncIterator[AuditRecord]:
    """The recorded decisions since ``since`` (at most MAX_REPLAYED), oldest first: what a
    replay re-decides, for the API and the console alike."""
    after, seen = 0, 0
    while seen < MAX_REPLAYED:
        page = await services.store.list_audit(
            after_sequence=after, limit=1000, type_prefix="decision"
        )
        if not page:
            return
        for sequence, record in page:
            after = sequence
            if record.time >= since:
                seen += 1
                yield record

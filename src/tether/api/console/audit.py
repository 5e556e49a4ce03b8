"""The console's audit trace: every record of one correlation id, and their proof.

``/console/audit?correlation_id=…`` draws what ``GET /v1/audit/trace/{id}`` answers (the same
call, :func:`tether.audit.reader.trace`): the records of one request in time order, each
decision as its path — the user, the agents acting for them (a delegated token's ``act``
chain), the agent and its instance, the action and the resource — with its effect, the
approver of an approved call and the determining policies. A decision id (``?decision_id=``,
what the decisions page and an enforcement point's answer show) leads to its correlation.

``/console/audit/bundle`` hands out the proof bundle of ``GET /v1/audit/records/{id}/proof``
(:func:`tether.audit.reader.prove`) as a file: a third party checks it offline with the log's
verifier key (``tether audit verify-bundle``). Asked for a correlation id, it proves the
correlation's decision (its last one; its last record when it has none); asked for a record
id, that record. Every page here needs ``audit.read``, as ``/v1/audit`` does.

Example::

    >>> proved_record([{"record_id": "rec_1", "type": "decision"},
    ...                {"record_id": "rec_2", "type": "approval.redeemed"}])
    'rec_1'
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from tether.api.console._render import HEADERS, page
from tether.api.console._session import ViewerDep
from tether.api.console.decisions import HORIZON, audit_reader, latest_decisions
from tether.api.deps import ServicesDep
from tether.audit import reader
from tether.errors import DecisionNotFound, InvalidInput

__all__ = ["proved_record", "router"]

router = APIRouter(tags=["console"], include_in_schema=False)

#: What an id typed into the form may look like (correlation ids are at most 128 of these).
_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: How a hop of a decision's path is named on the page.
_HOP_NAMES = {
    "user": "User",
    "app": "Through the app",
    "acting agent": "Delegated to",
    "agent": "Agent",
    "instance": "Instance",
    "action": "Action",
    "resource": "Resource",
}


def _checked(value: str, what: str) -> str:
    value = value.strip()
    if value and not _ID.fullmatch(value):
        raise InvalidInput(f"a {what} is 1 to 128 letters, digits and ._:-")
    return value


def proved_record(steps: Sequence[Mapping[str, Any]]) -> str:
    """The record a correlation's proof bundle proves: its last decision, else its last
    record."""
    decisions = [s for s in steps if s.get("type") == "decision"]
    return str((decisions or list(steps))[-1]["record_id"])


def _step(step: Mapping[str, Any]) -> dict[str, Any]:
    """A step of the trace as the page draws it: the reader's step, its hops named."""
    hops = [
        {"name": _HOP_NAMES.get(str(hop.get("kind")), str(hop.get("kind")).capitalize()),
         "id": str(hop.get("id")), "risk_tier": hop.get("risk_tier")}
        for hop in step.get("path", [])
    ]  # fmt: skip
    proof = "/console/audit/bundle?" + urlencode({"record_id": step["record_id"]})
    return dict(step) | {"hops": hops, "proof": proof}


async def _correlation_of(services: ServicesDep, decision_id: str) -> str:
    """The correlation id of a recent decision (the log is searched back ``HORIZON``
    records: a decision id is not indexed)."""
    found = await latest_decisions(
        services.store, keep=lambda r: r.details.get("decision_id") == decision_id, want=1
    )
    if not found:
        raise DecisionNotFound(
            f"no decision {decision_id!r} among the last {HORIZON} audit records: "
            "look it up by its correlation id"
        )
    if not found[0].correlation_id:
        raise DecisionNotFound(f"decision {decision_id!r} has no correlation id to trace")
    return found[0].correlation_id


@router.get("/console/audit")
async def audit(
    request: Request,
    services: ServicesDep,
    viewer: ViewerDep,
    correlation_id: Annotated[str, Query(max_length=256)] = "",
    decision_id: Annotated[str, Query(max_length=256)] = "",
) -> Response:
    audit_reader(viewer)
    correlation_id = _checked(correlation_id, "correlation id")
    decision_id = _checked(decision_id, "decision id")
    if decision_id:  # typed in the form (never filled in by the page): it wins
        found = await _correlation_of(services, decision_id)
        target = "/console/audit?" + urlencode({"correlation_id": found})
        return RedirectResponse(target, status_code=303)
    values: dict[str, Any] = {
        "correlation_id": correlation_id,
        "missing": "",
        "steps": [],
        "bundle": "",
        "verifier_key": services.audit.verifier_key,
    }
    status = 200
    if correlation_id:
        try:
            trace = await reader.trace(services.store, correlation_id)
        except reader.AuditRecordNotFound as exc:
            values["missing"], status = exc.message, 404
        else:
            values["steps"] = [_step(s) for s in trace["steps"]]
            values["bundle"] = "/console/audit/bundle?" + urlencode(
                {"correlation_id": correlation_id}
            )
    return page(request, "console/audit.html", viewer=viewer, active="audit", status=status,
                **values)  # fmt: skip


@router.get("/console/audit/bundle")
async def bundle(
    services: ServicesDep,
    viewer: ViewerDep,
    correlation_id: Annotated[str, Query(max_length=256)] = "",
    record_id: Annotated[str, Query(max_length=256)] = "",
) -> Response:
    """The proof bundle of a record, or of a correlation's decision, as a file to keep."""
    audit_reader(viewer)
    record_id = _checked(record_id, "record id")
    correlation_id = _checked(correlation_id, "correlation id")
    if not record_id:
        if not correlation_id:
            raise InvalidInput("name a correlation id or a record id to prove")
        record_id = proved_record((await reader.trace(services.store, correlation_id))["steps"])
    proof = await reader.prove(services.store, record_id, verifier_key=services.audit.verifier_key)
    text = json.dumps(proof, indent=2, sort_keys=True) + "\n"
    disposition = f'attachment; filename="tether-proof-{record_id}.json"'
    return Response(text, media_type="application/json",
                    headers=HEADERS | {"Content-Disposition": disposition})  # fmt: skip

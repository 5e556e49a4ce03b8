"""My access: the signed-in person's own grants, and their approvals inbox.

For everyone, with or without a console role, acting as themselves (``viewer.person``): the
same domain calls as ``/v1/grants`` and ``/v1/approvals`` made with the person's own sign-in,
so a person sees and answers only what is theirs, and every revocation and answer is the same
audit record the API writes.

* ``/console/me`` — what each agent may do for me and why (a consent grant: scopes, purpose,
  session, expiry) and a Revoke button for each grant in force.
* ``/console/me/approvals`` — the CIBA requests made to me, newest first, each showing the
  operations exactly as the agent will run them (every ``authorization_details`` item), to
  approve all, some (a checkbox per item) or none. The pending list refreshes itself through
  htmx every few seconds (the fragment is served to ``HX-Request``s); what the person is in
  the middle of (ticked boxes, focus) is kept, as each request is preserved by its id.

The stores list requests and grants by id, not by time, so a listing reads at most
``MAX_SCAN`` of them and sorts by time here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.datastructures import FormData

from tether.api.console._listing import read_all
from tether.api.console._render import page
from tether.api.console._session import CheckedForm, Viewer, ViewerDep
from tether.api.delegation_schemas import approval_json
from tether.api.deps import ServicesDep
from tether.api.services import Services
from tether.delegation.models import (
    Approval,
    ApprovalMatch,
    ApprovalState,
    Grant,
    GrantMatch,
    GrantState,
)
from tether.errors import InvalidInput

__all__ = ["router"]

router = APIRouter(tags=["console"], include_in_schema=False)

#: Requests or grants one page reads at most (pages of ``_PAGE``, the stores' largest).
MAX_SCAN = 2000
_PAGE = 500
#: Answered requests shown below the pending ones.
RECENT = 20
#: A value longer than this, or structured, is shown preformatted (it scrolls, the page
#: does not).
_INLINE = 40
#: Items one answer may name (as ``/v1/approvals/{id}/approve``).
_MAX_ITEMS = 64
#: The fixed notes a redirect may ask for (``?done=``): never text from the request.
_DONE = {
    "approved": "Your approval was recorded: the agent may now make the approved calls.",
    "refused": "You refused the request: the agent is told so.",
    "revoked": "The grant is revoked: the agent can no longer act for you under it.",
}
_PENDING_TARGET = "pending"


# -- what the templates show ----------------------------------------------------------


@dataclass(frozen=True)
class Shown:
    """One named value of an operation, as text (JSON for anything but a string)."""

    name: str
    text: str
    block: bool


@dataclass(frozen=True)
class Item:
    """One ``authorization_details`` item: the agent's description of the operation, and the
    exact call it approves (what the checkpoint will let through)."""

    index: int
    type: str
    fields: tuple[Shown, ...]
    action: str
    resource: str
    arguments: tuple[Shown, ...]
    approved: bool


@dataclass(frozen=True)
class Asked:
    """An approval request as its person sees it."""

    id: str
    agent: str
    message: str | None
    items: tuple[Item, ...]
    state: str
    asked: datetime
    expires: datetime
    decided: datetime | None


@dataclass(frozen=True)
class GrantRow:
    """A grant with what the person needs to read at a glance: whether it is in force."""

    grant: Grant
    state: str
    in_force: bool


def _shown(name: str, value: object) -> Shown:
    text = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)
    return Shown(name, text, isinstance(value, dict | list) or len(text) > _INLINE)


def _item(index: int, detail: Mapping[str, Any], approved: Iterable[int]) -> Item:
    call = detail.get("call")
    call = call if isinstance(call, Mapping) else {}
    resource = call.get("resource")
    resource = resource if isinstance(resource, Mapping) else {}
    described = {k: v for k, v in detail.items() if k not in ("type", "call", "call_digest")}
    return Item(
        index=index,
        type=str(detail.get("type", "")),
        fields=tuple(_shown(k, v) for k, v in described.items()),
        action=str(call.get("action", "")),
        resource=f'{resource.get("type", "")} "{resource.get("id", "")}"',
        arguments=_arguments(call.get("arguments")),
        approved=index in approved,
    )


def _arguments(value: object) -> tuple[Shown, ...]:
    if isinstance(value, Mapping):
        return tuple(_shown(str(k), v) for k, v in value.items())
    return () if value is None else (_shown("arguments", value),)


def _asked(approval: Approval, now: datetime) -> Asked:
    return Asked(
        id=approval.id,
        agent=approval.agent,
        message=approval.binding_message,
        items=tuple(_item(i, d, approval.approved) for i, d in enumerate(approval.details)),
        state=str(approval_json(approval, now=now)["state"]),
        asked=approval.created_at,
        expires=approval.expires_at,
        decided=approval.decided_at,
    )


def when(moment: datetime | None) -> str:
    """A moment as a person reads it (UTC, to the second)."""
    return "" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# -- reading ----------------------------------------------------------------------------


async def _approvals(
    services: Services, viewer: Viewer, state: ApprovalState | None
) -> list[Approval]:
    match = ApprovalMatch(state=state)
    approvals = services.delegation.approvals

    async def read(after: str | None) -> list[Approval]:
        return await approvals.list(match, actor=viewer.person, limit=_PAGE, after=after)

    found, _capped = await read_all(read, lambda a: a.id, page=_PAGE, bound=MAX_SCAN)
    return found


def _pending(found: list[Approval], now: datetime) -> list[Approval]:
    """Waiting for an answer, newest first (an expired request is refused: not waiting)."""
    waiting = [a for a in found if a.state is ApprovalState.PENDING and not a.expired(now)]
    return sorted(waiting, key=lambda a: a.created_at, reverse=True)


def _answered(found: list[Approval], now: datetime) -> list[Approval]:
    """The others, latest answer (or expiry) first, the most recent ``RECENT``."""
    done = [a for a in found if a.state is not ApprovalState.PENDING or a.expired(now)]
    done.sort(key=lambda a: a.decided_at or a.expires_at, reverse=True)
    return done[:RECENT]


async def _grants(services: Services, viewer: Viewer) -> list[GrantRow]:
    grants = services.delegation.grants

    async def read(after: str | None) -> list[Grant]:
        return await grants.list(GrantMatch(), actor=viewer.person, limit=_PAGE, after=after)

    now = services.clock.now()
    found, _capped = await read_all(read, lambda g: g.id, page=_PAGE, bound=MAX_SCAN)
    rows = [GrantRow(g, _grant_state(g, now), g.in_force(now)) for g in found]
    rows.sort(key=lambda r: r.grant.created_at, reverse=True)
    rows.sort(key=lambda r: not r.in_force)  # in force first (a stable sort keeps the time)
    return rows


def _grant_state(grant: Grant, now: datetime) -> str:
    if grant.state is GrantState.ACTIVE and not grant.in_force(now):
        return "expired"
    return str(grant.state)


def _done(request: Request) -> str | None:
    return _DONE.get(request.query_params.get("done", ""))


# -- pages -----------------------------------------------------------------------------


@router.get("/console/me")
async def my_grants(request: Request, services: ServicesDep, viewer: ViewerDep) -> HTMLResponse:
    """The person's grants: which agent may do what for them, why, until when."""
    rows = await _grants(services, viewer)
    now = services.clock.now()
    waiting = len(_pending(await _approvals(services, viewer, ApprovalState.PENDING), now))
    return page(
        request, "console/me.html", viewer=viewer, active="me", here="grants", rows=rows,
        waiting=waiting, done=_done(request), when=when,
    )  # fmt: skip


@router.post("/console/me/grants/{grant_id}/revoke")
async def revoke_grant(
    grant_id: str, services: ServicesDep, viewer: ViewerDep, _form: CheckedForm
) -> RedirectResponse:
    """Revoke one of the person's grants (``DELETE /v1/grants/{id}`` with their sign-in)."""
    await services.delegation.grants.revoke(
        grant_id, actor=viewer.person, reason="revoked by the user in the console"
    )
    return RedirectResponse("/console/me?done=revoked", status_code=303)


@router.get("/console/me/approvals")
async def inbox(request: Request, services: ServicesDep, viewer: ViewerDep) -> HTMLResponse:
    """The approvals inbox; to htmx's poll, only the pending list."""
    now = services.clock.now()
    if request.headers.get("hx-request") and request.headers.get("hx-target") == _PENDING_TARGET:
        found = await _approvals(services, viewer, ApprovalState.PENDING)
        pending = [_asked(a, now) for a in _pending(found, now)]
        return page(
            request, "console/approvals_pending.html", viewer=viewer, pending=pending, when=when
        )
    found = await _approvals(services, viewer, None)
    pending = [_asked(a, now) for a in _pending(found, now)]
    return page(
        request, "console/approvals.html", viewer=viewer, active="me", here="approvals",
        pending=pending, answered=[_asked(a, now) for a in _answered(found, now)],
        waiting=len(pending), done=_done(request), when=when,
    )  # fmt: skip


@router.post("/console/me/approvals/{approval_id}/answer")
async def answer(
    approval_id: str, services: ServicesDep, viewer: ViewerDep, form: CheckedForm
) -> RedirectResponse:
    """The person's answer: all the items, those ticked, or none (refused) — as
    ``/v1/approvals/{id}/approve`` and ``/deny`` with their sign-in."""
    approvals = services.delegation.approvals
    choice = form.get("answer")
    approve: Iterable[int] | None
    if choice == "refuse":
        approve = None
    elif choice == "all":
        approve = range(len((await approvals.get(approval_id, actor=viewer.person)).details))
    elif choice == "selected":
        approve = _ticked(form)
    else:
        raise InvalidInput("answer with all, selected or refuse", details={"field": "answer"})
    answered = await approvals.answer(approval_id, actor=viewer.person, approve=approve)
    done = "approved" if answered.state is ApprovalState.APPROVED else "refused"
    return RedirectResponse(f"/console/me/approvals?done={done}", status_code=303)


def _ticked(form: FormData) -> list[int]:
    """The items ticked: at least one (approving none is refusing: say so with Refuse)."""
    values = form.getlist("item")
    if not values:
        raise InvalidInput(
            "tick the items to approve, or refuse the request", details={"field": "item"}
        )
    if len(values) > _MAX_ITEMS or not all(_number(v) for v in values):
        raise InvalidInput("items are numbers of the request's items", details={"field": "item"})
    return [int(str(v)) for v in values]


def _number(value: object) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= 3 and value.isascii() and value.isdigit()

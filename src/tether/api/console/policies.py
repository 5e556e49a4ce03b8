"""The console's policies page: the set in force, its versions, and a proposed set checked,
compared, replayed against recorded decisions and applied — each by :class:`PolicySets`, the
calls ``/v1/policies`` makes, so the permission checks and audit records are the API's.

Validate, Diff and Replay post the form by htmx and the answer (a fragment) fills the result
region; without script the same buttons post the form and the whole page comes back with the
result and the text as it was typed. Apply (and putting an earlier version back) is a plain
form answered by a redirect; a set that does not check is refused by :meth:`PolicySets.apply`
and the page comes back with the problems, the text kept.

Cedar's messages name a policy by its position (``policy0``) or its ``@id``, never by line, so
:func:`statements` splits the text (outside strings and comments) to say on which line the
policy a problem is in begins; a parse error is placed by checking each statement alone.

Example: ``GET /console/policies``; ``POST /console/policies/validate`` with ``text`` and the
session's ``csrf``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from tether.api.console._render import page
from tether.api.console._session import CheckedForm, Viewer, ViewerDep
from tether.api.deps import ServicesDep
from tether.api.errors import status_for
from tether.api.routes.policies import decisions_since
from tether.api.services import Services
from tether.errors import InvalidInput, InvalidPolicySet
from tether.identity.access import Permission
from tether.policy.engine import RESERVED_PREFIX
from tether.policy.models import PolicySetVersion
from tether.policy.service import ReplayReport

__all__ = ["Problem", "Statement", "router", "statements"]

router = APIRouter(tags=["console"], include_in_schema=False)

#: The longest policy text the console reads (the API's bound too).
MAX_TEXT = 1024 * 1024
#: Statements checked one by one to place a parse error.
MAX_LOCATED = 500
#: Flips a replay lists on the page (the count covers them all).
MAX_SHOWN_FLIPS = 200
#: How far back a replay may look, as offered on the page: seconds → label.
REPLAY_SPANS = {3600: "hour", 86_400: "day", 7 * 86_400: "7 days", 30 * 86_400: "30 days"}
DEFAULT_SPAN = 7 * 86_400
VERSIONS_SHOWN = 50

_ID = re.compile(r'@id\s*\(\s*"((?:[^"\\]|\\.)*)"\s*\)')
_POSITION = re.compile(r"\bpolicy(\d+)\b")
_NAMED = re.compile(r"\bpolicy (?:id )?'([^']*)'")


# -- reading Cedar text ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Statement:
    """One policy of a text as written: where it begins, its ``@id``, its words."""

    index: int
    line: int
    column: int
    raw: str
    id: str | None
    #: The statement without comments, whitespace collapsed: what "changed" compares.
    words: str


def _string_end(text: str, at: int) -> int:
    """The index after the string literal opening at ``at`` (or the text's end)."""
    i = at + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
        elif text[i] == '"':
            return i + 1
        else:
            i += 1
    return len(text)


def _statement(text: str, start: int, end: int, kept: list[str], index: int) -> Statement:
    words = " ".join("".join(kept).split())
    found = _ID.search(words)
    return Statement(
        index=index,
        line=text.count("\n", 0, start) + 1,
        column=start - text.rfind("\n", 0, start),
        raw=text[start:end],
        id=found.group(1) if found else None,
        words=words,
    )


def statements(text: str) -> list[Statement]:
    """The policies of ``text`` in order (Cedar numbers them ``policy0``, ``policy1``, … the
    same way): each ends at a ``;`` that is not in a string or a comment."""
    found: list[Statement] = []
    start: int | None = None
    kept: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("//", i):
            newline = text.find("\n", i)
            i = len(text) if newline < 0 else newline
            continue
        if start is None and text[i].isspace():
            i += 1
            continue
        start = i if start is None else start
        if text[i] == '"':
            end = _string_end(text, i)
            kept.append(text[i:end])
            i = end
            continue
        kept.append(text[i])
        i += 1
        if text[i - 1] == ";":
            found.append(_statement(text, start, i, kept, len(found)))
            start, kept = None, []
    if start is not None:
        found.append(_statement(text, start, len(text), kept, len(found)))
    return found


@dataclass(frozen=True, kw_only=True)
class Problem:
    """A reason a set does not check, and the line and column its policy begins at."""

    message: str
    line: int | None = None
    column: int | None = None


def _where(message: str, found: list[Statement]) -> Statement | None:
    if (position := _POSITION.search(message)) is not None:
        index = int(position.group(1))
        return found[index] if index < len(found) else None
    if (named := _NAMED.search(message)) is not None:
        same = [s for s in found if s.id == named.group(1)]
        return same[-1] if same else None  # "used twice": the second one
    return None


def _parse_error_at(found: list[Statement], check: Callable[[str], list[str]]) -> Statement | None:
    """The first statement that does not parse on its own."""
    for statement in found[:MAX_LOCATED]:
        if any(p.startswith("parse error") for p in check(statement.raw)):
            return statement
    return None


def located(errors: list[str], text: str, check: Callable[[str], list[str]]) -> list[Problem]:
    """``errors`` of :meth:`PolicySets.check` on ``text``, each placed where it can be."""
    found = statements(text)
    problems = []
    for message in errors:
        if message.startswith("parse error"):
            at = _parse_error_at(found, check)
        else:
            at = _where(message, found)
        if at is None:
            problems.append(Problem(message=message))
        else:
            problems.append(Problem(message=message, line=at.line, column=at.column))
    return problems


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """A proposed set against the active one: policies by ``@id``, then the text."""

    base: str
    added: list[str]
    removed: list[str]
    changed: list[str]
    unchanged: int
    text: str


def compare(active: PolicySetVersion | None, text: str) -> Comparison:
    before = {s.id: s.words for s in statements(active.text if active else "") if s.id}
    after = {s.id: s.words for s in statements(text) if s.id}
    base = f"v{active.version} (active)" if active else "the shipped policies only"
    lines = difflib.unified_diff(
        (active.text if active else "").splitlines(keepends=True),
        text.splitlines(keepends=True),
        fromfile=f"v{active.version}" if active else "(none)",
        tofile="proposed",
    )
    return Comparison(
        base=base,
        added=[i for i in after if i not in before],
        removed=[i for i in before if i not in after],
        changed=[i for i in after if i in before and before[i] != after[i]],
        unchanged=sum(1 for i in after if before.get(i) == after[i]),
        text="".join(line if line.endswith("\n") else line + "\n" for line in lines),
    )


# -- the page -------------------------------------------------------------------------------


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _proposed(form: FormData) -> str:
    text = _field(form, "text").replace("\r\n", "\n")
    if len(text.encode()) > MAX_TEXT:
        raise InvalidInput(f"a policy set is at most {MAX_TEXT} bytes")
    return text


def _span(form: FormData) -> int:
    raw = _field(form, "since") or str(DEFAULT_SPAN)
    if not raw.isdigit() or int(raw) not in REPLAY_SPANS:
        raise InvalidInput("replay over the last hour, day, 7 days or 30 days")
    return int(raw)


async def _full(
    request: Request,
    viewer: Viewer,
    services: Services,
    *,
    text: str | None = None,
    since: int = DEFAULT_SPAN,
    before: int | None = None,
    status: int = 200,
    **shown: Any,
) -> HTMLResponse:
    """The whole page: what is in force, the versions (older than ``before``), the form (with
    ``text``, else the active text), and whatever ``shown`` adds (a result, a comparison, the
    version just applied, the comment typed)."""
    actor = viewer.acting()
    versions = await services.policies.list(actor=actor, limit=VERSIONS_SHOWN, before=before)
    active = await services.policies.show(None, actor=actor)
    values: dict[str, Any] = {"result": None, "compared": None, "applied": None, "comment": ""}
    values |= shown
    return page(
        request, "console/policies.html", viewer=viewer, active="policies", status=status,
        in_force=active, versions=versions, policy_ids=services.policies.current.policy_ids,
        older=versions[-1].version if len(versions) == VERSIONS_SHOWN else None,
        shipped=RESERVED_PREFIX, text=(active.text if active else "") if text is None else text,
        since=since, spans=REPLAY_SPANS, may_apply=viewer.may(Permission.POLICY_APPLY),
        may_replay=viewer.may(Permission.AUDIT_READ), **values,
    )  # fmt: skip


async def _answer(
    request: Request,
    viewer: Viewer,
    services: Services,
    *,
    text: str,
    since: int,
    result: dict[str, Any],
) -> HTMLResponse:
    """A result: the fragment for htmx, else the whole page with it."""
    if request.headers.get("hx-request"):
        return page(request, "console/policy_result.html", viewer=viewer, result=result)
    return await _full(request, viewer, services, text=text, since=since, result=result)


@router.get("/console/policies")
async def policies_page(  # one query parameter each, keyword-only
    *,
    request: Request,
    viewer: ViewerDep,
    services: ServicesDep,
    compare_from: Annotated[int | None, Query(alias="compare", ge=1)] = None,
    before: Annotated[int | None, Query(ge=1)] = None,
    applied: Annotated[int | None, Query(ge=1)] = None,
) -> HTMLResponse:
    compared = None
    if compare_from is not None:
        diff = await services.policies.diff(compare_from, None, actor=viewer.acting())
        compared = {"old": compare_from, "text": diff}
    return await _full(request, viewer, services, compared=compared, before=before, applied=applied)


def _validation(viewer: Viewer, services: Services, text: str) -> dict[str, Any]:
    actor = viewer.acting()

    def check(part: str) -> list[str]:
        return services.policies.check(part, actor=actor)

    errors = check(text)
    return {"kind": "validate", "problems": located(errors, text, check)}


@router.post("/console/policies/validate")
async def validate(
    request: Request, viewer: ViewerDep, services: ServicesDep, form: CheckedForm
) -> HTMLResponse:
    """Check a proposed set against the schema: its problems, placed, or "valid"."""
    text = _proposed(form)
    result = _validation(viewer, services, text)
    return await _answer(request, viewer, services, text=text, since=_span(form), result=result)


@router.post("/console/policies/diff")
async def diff(
    request: Request, viewer: ViewerDep, services: ServicesDep, form: CheckedForm
) -> HTMLResponse:
    """What the proposed set adds, removes and changes against the active one."""
    text = _proposed(form)
    active = await services.policies.show(None, actor=viewer.acting())
    result = {"kind": "diff", "comparison": compare(active, text)}
    return await _answer(request, viewer, services, text=text, since=_span(form), result=result)


@router.post("/console/policies/replay")
async def replay(
    request: Request, viewer: ViewerDep, services: ServicesDep, form: CheckedForm
) -> HTMLResponse:
    """What if the proposed set had been in force: the recorded decisions it would flip (the
    same replay as ``POST /v1/policies/replay``; nothing is applied)."""
    text, span = _proposed(form), _span(form)
    since = services.clock.now() - timedelta(seconds=span)
    try:
        report: ReplayReport = await services.policies.replay(
            text, actor=viewer.acting(), decisions=decisions_since(services, since)
        )
    except InvalidPolicySet:
        result = _validation(viewer, services, text) | {"replay_refused": True}
    else:
        result = {
            "kind": "replay", "report": report, "since": since, "span": REPLAY_SPANS[span],
            "flips": report.flips[:MAX_SHOWN_FLIPS],
        }  # fmt: skip
    return await _answer(request, viewer, services, text=text, since=span, result=result)


@router.post("/console/policies/apply")
async def apply(
    request: Request, viewer: ViewerDep, services: ServicesDep, form: CheckedForm
) -> Response:
    """Apply the proposed set: the next version, in force at once. A set that does not check
    is refused (nothing stored) and shown again with its problems."""
    text = _proposed(form)
    comment = _field(form, "comment").strip() or None
    try:
        stored = await services.policies.apply(text, actor=viewer.acting(), comment=comment)
    except InvalidPolicySet as exc:
        result = _validation(viewer, services, text) | {"apply_refused": True}
        return await _full(
            request, viewer, services, text=text, result=result, comment=comment or "",
            status=status_for(exc),
        )  # fmt: skip
    return RedirectResponse(f"/console/policies?applied={stored.version}", status_code=303)


@router.post("/console/policies/{version}/activate")
async def activate(
    version: int, viewer: ViewerDep, services: ServicesDep, _form: CheckedForm
) -> Response:
    """Put an earlier version back in force (checked against today's schema first)."""
    found = await services.policies.rollback(version, actor=viewer.acting())
    return RedirectResponse(f"/console/policies?applied={found.version}", status_code=303)

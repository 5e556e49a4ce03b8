"""The console's credentials page: the engines just-in-time credentials come from, the leases
in force, and the revocation of one lease or of every lease of an agent.

Everything is read and changed through :class:`~tether.credentials.engines.Engines` and
:class:`~tether.credentials.leases.Leases`, the calls ``/v1/engines`` and ``/v1/leases`` make,
so the permission checks and the ``lease.revoked`` records are the API's. An engine is shown by
its kind, its settings (never a secret: the admin secret is sealed apart and only said to be
set) and its role templates; a vault engine's values never reach the page. Revoking is a plain
form answered by a redirect back to the same listing.

Example: ``GET /console/credentials?agent=faq-bot``; ``POST
/console/credentials/leases/<id>/revoke`` with the session's ``csrf``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from tether.api.console._render import page
from tether.api.console._session import CheckedForm, Viewer, ViewerDep
from tether.api.deps import ServicesDep
from tether.api.services import Services
from tether.credentials.models import LIVE_STATES, EngineConfig, Lease, LeaseMatch, LeaseState
from tether.errors import Forbidden, InvalidInput
from tether.identity.access import Permission

__all__ = ["router"]

router = APIRouter(tags=["console"], include_in_schema=False)

PATH = "/console/credentials"
#: Leases on one page (the next page starts after the last one's id).
PAGE = 100
#: Live leases counted per engine for its summary.
COUNTED = 500
#: The listing's state choices: a label, and the states it covers (None: every state).
STATES: dict[str, tuple[str, frozenset[LeaseState] | None]] = {
    "live": ("Live", frozenset(LIVE_STATES)),
    **{s.value: (s.value.capitalize(), frozenset({s})) for s in LeaseState},
    "all": ("All", None),
}
#: States a revocation can still end (the domain returns any other lease as it is).
ENDABLE = frozenset({LeaseState.ISSUING, LeaseState.ACTIVE})
#: States in which ending the credential has failed and is being retried.
FAILING = frozenset({LeaseState.REVOKING, LeaseState.IRREVOCABLE})
#: A setting named like this is not shown even if an engine kind ever accepted one (settings
#: never hold a secret by design; this is the page's second fence).
_SECRET_NAMED = re.compile(r"secret|password|passwd|token|private|credential", re.IGNORECASE)
_FILTER_MAX = 256


def _summary(settings: Mapping[str, object]) -> list[tuple[str, str]]:
    """An engine's settings as (name, value) text, any secret-like name withheld."""
    shown = []
    for name, value in sorted(settings.items()):
        if _SECRET_NAMED.search(name):
            shown.append((name, "(withheld)"))
        elif isinstance(value, list | tuple):
            shown.append((name, ", ".join(str(v) for v in value)))
        else:
            shown.append((name, str(value)))
    return shown


def _engine_row(engine: EngineConfig, leases: list[Lease] | None) -> dict[str, Any]:
    return {
        "name": engine.name,
        "kind": engine.kind,
        "settings": _summary(engine.settings),
        "secret_set": engine.sealed_secret is not None,
        "roles": list(engine.roles.values()),
        "version": engine.version,
        "updated_at": engine.updated_at,
        "live": None if leases is None else len(leases),
        "failing": None if leases is None else sum(1 for x in leases if x.state in FAILING),
        "counted_all": leases is None or len(leases) < COUNTED,
    }


async def _engines(viewer: Viewer, services: Services) -> list[dict[str, Any]] | None:
    """The engines with their live lease counts, or None for a viewer who may not read them."""
    if not viewer.may(Permission.ENGINE_READ):
        return None
    actor = viewer.acting()
    rows = []
    for engine in await services.engines.list(actor=actor):
        leases = None
        if viewer.may(Permission.LEASE_READ):
            leases = await services.leases.list(
                LeaseMatch(engine=engine.name), actor=actor, states=LIVE_STATES, limit=COUNTED
            )
        rows.append(_engine_row(engine, leases))
    return rows


def _filter(value: str | None) -> str | None:
    value = (value or "").strip()
    if len(value) > _FILTER_MAX:
        raise InvalidInput(f"a filter is at most {_FILTER_MAX} characters")
    return value or None


def _listing(agent: str | None, engine: str | None, state: str) -> str:
    """This page's address with a listing's filters (only these: never a caller's URL)."""
    query = {k: v for k, v in (("agent", agent), ("engine", engine)) if v}
    if state != "live":
        query["state"] = state
    return f"{PATH}?{urlencode(query)}" if query else PATH


@router.get(PATH)
async def credentials_page(  # one query parameter each, keyword-only
    *,
    request: Request,
    viewer: ViewerDep,
    services: ServicesDep,
    agent: Annotated[str | None, Query()] = None,
    engine: Annotated[str | None, Query()] = None,
    state: Annotated[str, Query()] = "live",
    after: Annotated[str | None, Query(max_length=64)] = None,
    revoked: Annotated[int | None, Query(ge=0)] = None,
) -> HTMLResponse:
    """Engines (for ``engine.read``) and leases (for ``lease.read``), filtered by agent,
    engine and state."""
    may_leases = viewer.may(Permission.LEASE_READ)
    if not may_leases and not viewer.may(Permission.ENGINE_READ):
        raise Forbidden("the credentials page needs the lease.read or engine.read permission")
    if state not in STATES:
        raise InvalidInput(f"state is one of {', '.join(STATES)}")
    agent, engine = _filter(agent), _filter(engine)
    leases: list[Lease] | None = None
    if may_leases:
        leases = await services.leases.list(
            LeaseMatch(agent=agent, engine=engine), actor=viewer.acting(),
            states=STATES[state][1], limit=PAGE, after=after or None,
        )  # fmt: skip
    return page(
        request, "console/credentials.html", viewer=viewer, active="credentials",
        engines=await _engines(viewer, services), leases=leases, agent=agent or "",
        engine=engine or "", state=state, states=STATES, endable=ENDABLE, failing=FAILING,
        next_after=leases[-1].id if leases and len(leases) == PAGE else None,
        here=_listing(agent, engine, state), revoked=revoked,
        may_revoke=viewer.may(Permission.LEASE_REVOKE),
    )  # fmt: skip


def _back(form: FormData, ended: int) -> RedirectResponse:
    """303 to the listing the form was sent from, saying how many leases ended."""

    def field(name: str) -> str | None:
        value = form.get(name)
        return _filter(value) if isinstance(value, str) else None

    state = field("state") or "live"
    target = _listing(field("agent"), field("engine"), state if state in STATES else "live")
    joiner = "&" if "?" in target else "?"
    return RedirectResponse(f"{target}{joiner}revoked={ended}", status_code=303)


@router.post(PATH + "/leases/{lease_id}/revoke")
async def revoke(
    lease_id: str, viewer: ViewerDep, services: ServicesDep, form: CheckedForm
) -> Response:
    """End one lease now (``lease.revoke``, or a developer on their own agent's lease)."""
    lease = await services.leases.revoke(
        lease_id, actor=viewer.acting(), reason="revoked from the console"
    )
    return _back(form, 1 if lease.state is LeaseState.REVOKED else 0)


@router.post(PATH + "/revoke-agent")
async def revoke_agent(viewer: ViewerDep, services: ServicesDep, form: CheckedForm) -> Response:
    """End every live lease of one agent at once."""
    value = form.get("revoke_agent")
    agent = _filter(value) if isinstance(value, str) else None
    if agent is None:
        raise InvalidInput("name the agent whose leases to revoke")
    ended = await services.leases.revoke_all(
        LeaseMatch(agent=agent), actor=viewer.acting(), reason="revoked from the console"
    )
    return _back(form, sum(1 for lease in ended if lease.state is LeaseState.REVOKED))

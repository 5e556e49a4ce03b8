"""``/v1/alerts``: what the monitor found (:mod:`tether.monitor`).

Security admins, platform admins and auditors read every alert; a developer reads those of the
agents they own. Security admins — and a developer, for their own agents' — acknowledge
("someone is on it") and resolve them; each change is an audit record. A resolved alert stays
listed; the next finding of the same kind and key opens a new one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from tether.api.deps import ServicesDep, caller
from tether.monitor.models import Alert, AlertState
from tether.store.interfaces import AlertMatch

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])
Json = dict[str, Any]


class AlertChangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=1000)


def alert_json(alert: Alert) -> Json:
    return alert.facts() | {
        "acknowledged_at": _iso(alert.acknowledged_at),
        "resolved_at": _iso(alert.resolved_at),
    }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


@router.get("", summary="List alerts, newest first")
async def list_alerts(  # one query parameter each, keyword-only
    request: Request,
    services: ServicesDep,
    *,
    state: Annotated[list[AlertState] | None, Query()] = None,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    agent: Annotated[str | None, Query(max_length=63)] = None,
    since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> Json:
    actor = await caller(request, services)
    match = AlertMatch(states=tuple(state or ()), kind=kind, agent=agent, since=since)
    found = await services.monitor.list(match, actor=actor, limit=limit, after=after)
    return {"alerts": [alert_json(a) for a in found]}


@router.get("/{alert_id}", summary="Show an alert")
async def show(alert_id: str, request: Request, services: ServicesDep) -> Json:
    actor = await caller(request, services)
    return alert_json(await services.monitor.get(alert_id, actor=actor))


@router.post("/{alert_id}/acknowledge", summary="Acknowledge an open alert")
async def acknowledge(
    alert_id: str, body: AlertChangeIn, request: Request, services: ServicesDep
) -> Json:
    actor = await caller(request, services)
    changed = await services.monitor.acknowledge(alert_id, actor=actor, note=body.note)
    return alert_json(changed)


@router.post("/{alert_id}/resolve", summary="Resolve an open or acknowledged alert")
async def resolve(
    alert_id: str, body: AlertChangeIn, request: Request, services: ServicesDep
) -> Json:
    actor = await caller(request, services)
    return alert_json(await services.monitor.resolve(alert_id, actor=actor, note=body.note))

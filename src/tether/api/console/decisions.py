"""The console's decisions: the latest ones from the audit log, then a live feed.

``/console/decisions`` lists the newest ``decision`` records (the same records ``GET
/v1/audit?type_prefix=decision`` reads), each with a link to its trace; ``/console/decisions/
stream`` is the live part, as server-sent events: each new decision the checkpoint publishes on
:attr:`Services.events <tether.api.services.Services.events>` that matches the filters (agent,
user, effect), as one ``data:`` line of JSON holding only the fields the table shows — never a
token, a ``presented`` subject, the arguments or the evaluated request. Both need
``audit.read``.

The feed never slows a decision down: it reads its own bounded subscription, and a browser that
falls behind loses events (it is told how many, as an ``event: gap``), the checkpoint never
waits. The subscription is closed when the browser goes away, and every stream ends after
:data:`STREAM_SECONDS` (the browser reconnects by itself): an open stream would otherwise hold a
graceful shutdown of the server for as long as the page stays open.

Example::

    >>> Filters(effect="deny").keeps({"agent": "bot", "user": None, "effect": "deny"})
    True
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from tether.api.console._render import HEADERS, page
from tether.api.console._session import Viewer, ViewerDep
from tether.api.deps import ServicesDep
from tether.audit.reader import AuditReadStore
from tether.audit.records import AuditRecord
from tether.identity.access import Permission, require
from tether.monitor.events import EventStream, Subscription
from tether.policy.models import Effect

__all__ = ["HORIZON", "Filters", "latest_decisions", "router"]

router = APIRouter(tags=["console"], include_in_schema=False)

#: Decisions the page lists before the live feed takes over.
SHOWN = 50
#: How many audit records back the pages look for decisions (a bound on the work of a page).
HORIZON = 10_000
#: Events a browser's feed may hold before new ones are dropped for it.
FEED_CAPACITY = 256
#: A comment line this often keeps proxies from closing an idle stream.
KEEPALIVE_SECONDS = 15.0
#: A stream ends after this long; the browser reconnects (after ``RETRY_MS``).
STREAM_SECONDS = 25.0
RETRY_MS = 1000
#: The longest agent or user name a filter takes.
MAX_NAME = 256
#: The fields of a decision the page shows, and so the only ones the feed sends.
SHOWN_FIELDS = ("agent", "user", "action", "resource", "effect", "decision_id")


@dataclass(frozen=True, kw_only=True)
class Filters:
    """Which decisions to show: those of one agent, one user, one effect (empty: any)."""

    agent: str = ""
    user: str = ""
    effect: str = ""

    def keeps(self, fields: Mapping[str, object]) -> bool:
        """Whether a decision (its record's details, or its event's data) is shown."""
        wanted = (("agent", self.agent), ("user", self.user), ("effect", self.effect))
        return all(not value or fields.get(key) == value for key, value in wanted)

    def query(self) -> str:
        """The filters as a query string (the empty ones left out)."""
        chosen = {"agent": self.agent, "user": self.user, "effect": self.effect}
        return urlencode({k: v for k, v in chosen.items() if v})


def _filters(agent: str, user: str, effect: str) -> Filters:
    """The filters asked for; an effect that is not one is ignored, as in any search form."""
    known = {str(e) for e in Effect}
    return Filters(
        agent=agent.strip()[:MAX_NAME],
        user=user.strip()[:MAX_NAME],
        effect=effect if effect in known else "",
    )


def _trace_link(correlation_id: object) -> str | None:
    """Where a decision's trace is shown (none without a correlation id to follow)."""
    if isinstance(correlation_id, str) and correlation_id:
        return "/console/audit?" + urlencode({"correlation_id": correlation_id})
    return None


def _shown(
    fields: Mapping[str, object], *, at: datetime, correlation_id: object
) -> dict[str, object]:
    """One table row: the shown fields only, as text (or None), with when and the trace link."""
    row: dict[str, object] = {
        key: None if fields.get(key) is None else str(fields.get(key)) for key in SHOWN_FIELDS
    }
    row["time"] = at.astimezone(UTC).isoformat()
    row["trace"] = _trace_link(correlation_id)
    return row


async def last_sequence(store: AuditReadStore) -> int:
    """The newest record's sequence number (0 for an empty log). The store reads forward only,
    so it is found by doubling then halving: about twice log2(size) small reads."""
    low, step = 0, 1024
    while found := await store.list_audit(after_sequence=low + step, limit=1):
        low, step = found[0][0], step * 2
    high = low + step  # nothing after high; low is 0 or a record
    while high - low > 1:
        middle = (low + high) // 2
        found = await store.list_audit(after_sequence=middle, limit=1)
        if found:
            low = found[0][0]
        else:
            high = middle
    last = await store.list_audit(after_sequence=low, limit=1)
    return last[0][0] if last else low


async def latest_decisions(
    store: AuditReadStore,
    *,
    keep: Callable[[AuditRecord], bool],
    want: int = SHOWN,
    horizon: int = HORIZON,
) -> list[AuditRecord]:
    """The newest ``want`` decision records that ``keep`` accepts, newest first, among the
    last ``horizon`` audit records (a window that widens until it holds enough)."""
    end, window = await last_sequence(store), 512
    while True:
        start = max(0, end - window)
        rows = await store.list_audit(
            after_sequence=start, limit=window + 4096, type_prefix="decision"
        )
        found = [record for _, record in rows if keep(record)]
        if len(found) >= want or start == 0 or window >= horizon:
            return found[::-1][:want]
        window = min(horizon, window * 4)


def audit_reader(viewer: Viewer) -> None:
    """The check of the ``/v1/audit`` routes: ``audit.read`` (security admins, auditors)."""
    require(viewer.acting(), Permission.AUDIT_READ)


@router.get("/console/decisions")
async def decisions(  # noqa: PLR0917 - FastAPI passes query parameters by name
    request: Request,
    services: ServicesDep,
    viewer: ViewerDep,
    agent: Annotated[str, Query(max_length=MAX_NAME)] = "",
    user: Annotated[str, Query(max_length=MAX_NAME)] = "",
    effect: Annotated[str, Query(max_length=32)] = "",
) -> HTMLResponse:
    audit_reader(viewer)
    filters = _filters(agent, user, effect)
    records = await latest_decisions(services.store, keep=lambda r: filters.keeps(r.details))
    rows = [_shown(r.details, at=r.time, correlation_id=r.correlation_id) for r in records]
    query = filters.query()
    return page(
        request, "console/decisions.html", viewer=viewer, active="decisions", rows=rows,
        filters=filters, effects=[str(e) for e in Effect], shown=SHOWN, horizon=HORIZON,
        feed="/console/decisions/stream" + (f"?{query}" if query else ""),
    )  # fmt: skip


@router.get("/console/decisions/stream")
async def stream(
    services: ServicesDep,
    viewer: ViewerDep,
    agent: Annotated[str, Query(max_length=MAX_NAME)] = "",
    user: Annotated[str, Query(max_length=MAX_NAME)] = "",
    effect: Annotated[str, Query(max_length=32)] = "",
) -> Response:
    audit_reader(viewer)
    return DecisionFeed(services.events, _filters(agent, user, effect))


class DecisionFeed(Response):
    """The live feed as ``text/event-stream``: subscribes when the response starts, and
    unsubscribes when it ends, whichever way (the browser left, the stream's time ran out)."""

    def __init__(self, events: EventStream, filters: Filters) -> None:
        super().__init__(status_code=200)
        self._events = events
        self._filters = filters

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        subscription = self._events.subscribe(capacity=FEED_CAPACITY)
        try:
            body = StreamingResponse(
                _lines(subscription, self._filters),
                media_type="text/event-stream",
                headers=HEADERS | {"X-Accel-Buffering": "no"},  # no proxy holds it back
            )
            await body(scope, receive, send)
        finally:
            subscription.close()


async def _lines(subscription: Subscription, filters: Filters) -> AsyncIterator[str]:
    """The stream's messages until :data:`STREAM_SECONDS` have passed."""
    loop = asyncio.get_running_loop()
    ends, dropped = loop.time() + STREAM_SECONDS, 0
    yield f"retry: {RETRY_MS}\n: live decisions\n\n"
    while (left := ends - loop.time()) > 0:
        try:
            async with asyncio.timeout(min(KEEPALIVE_SECONDS, left)):
                event = await subscription.next()
        except TimeoutError:
            if loop.time() < ends:
                yield ": keep-alive\n\n"
            continue
        if subscription.dropped != dropped:
            dropped = subscription.dropped
            yield f"event: gap\ndata: {json.dumps({'dropped': dropped})}\n\n"
        if event.type == "decision" and filters.keeps(event.data):
            at = datetime.fromtimestamp(event.time, tz=UTC)
            row = _shown(event.data, at=at, correlation_id=event.data.get("correlation_id"))
            yield f"data: {json.dumps(row, separators=(',', ':'))}\n\n"

"""Admission: a bound on the requests the server works on at once; beyond it, shed at once.

A server pushed past what it can do gets slower for everyone until proxies time out. Tether
sheds instead: :class:`Admission` (pure ASGI middleware) lets at most ``limit`` requests of
each kind be in flight (``TETHER_MAX_IN_FLIGHT``); the next one is answered at once ``503`` with
``Retry-After`` and the stable error code ``overloaded`` (:class:`tether.errors.Overloaded`;
``temporarily_unavailable`` on the OAuth endpoints). Nothing is decided for a shed request,
so for an enforcement point it is a denial, never an allow: Envoy's ext_authz denies any
answer but a 2xx (``failure_mode_allow: false``), nginx ``auth_request`` answers 500 for a
503, and the SDK raises ``CheckUnavailable``.

The kinds (:data:`KINDS`) are bounded apart, so that one cannot starve another: ``decision``
(``/v1/ext_authz/…``, ``/access/v1/…``: CPU and a durable record), ``mcp`` (``/mcp/…``: tool
calls that mostly wait on upstream servers) and ``other`` (the management API, OAuth, the
console).

What is not counted, so that an operator can still see an overloaded server and long-lived
streams cannot use the bound up:

* ``/healthz``, ``/readyz`` and ``/metrics`` — never shed;
* long-lived streams: ``GET /mcp/<server>`` (an MCP client's listening stream) and the
  console's live feed — they wait for events, they do not work.

A request with a body is counted only once its body has arrived (it is read first, under the
body cap, and handed on whole): a client that sends its body slowly holds a connection, not a
place, so a few slow clients cannot turn the bound against everyone else.

:class:`AdmissionGate` holds the count; ``/metrics`` reports it
(``tether_requests_in_flight``, ``tether_requests_in_flight_limit``,
``tether_requests_shed_total``).

Example::

    >>> gate = AdmissionGate(limit=2)
    >>> gate.enter("mcp"), gate.enter("mcp"), gate.enter("mcp"), gate.enter("decision")
    (True, True, False, True)
    >>> gate.leave("mcp"); gate.in_flight
    2
    >>> gate.shed
    1
"""

from __future__ import annotations

import time

import structlog
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tether._internal.asgi import read_body
from tether.api.errors import error_response
from tether.errors import Overloaded

__all__ = ["EXEMPT_PATHS", "KINDS", "RETRY_AFTER_SECONDS", "Admission", "AdmissionGate", "kind_of"]

log = structlog.get_logger("tether.api")

#: Answered whatever the load: an operator must be able to see the overload.
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
#: Long-lived streams (GET): they wait for events rather than work.
_STREAM_PREFIXES = ("/mcp/",)
_STREAM_PATHS = frozenset({"/console/decisions/stream"})
#: What a shed caller is told to wait before trying again (seconds).
RETRY_AFTER_SECONDS = 1
#: How often, at most, shedding is logged (seconds): a count, not a line per request.
LOG_EVERY_SECONDS = 10.0
#: The kinds of request bounded apart.
KINDS = ("decision", "mcp", "other")
_DECISION_PREFIXES = ("/v1/ext_authz/", "/access/v1/")


def kind_of(path: str) -> str:
    """Which bound ``path`` counts against: one of :data:`KINDS`."""
    if path.startswith(_DECISION_PREFIXES):
        return "decision"
    return "mcp" if path.startswith("/mcp/") else "other"


class AdmissionGate:
    """The requests in flight of each kind, each against ``limit``; and those shed."""

    def __init__(self, *, limit: int) -> None:
        if limit < 1:
            raise ValueError("the in-flight limit is at least 1")
        self.limit = limit
        self.counts = dict.fromkeys(KINDS, 0)
        self.shed = 0

    @property
    def in_flight(self) -> int:
        """Requests in flight, every kind together."""
        return sum(self.counts.values())

    def enter(self, kind: str = "other") -> bool:
        """Take a place of ``kind`` if one is free (True); else count a shed (False)."""
        if self.counts[kind] < self.limit:
            self.counts[kind] += 1
            return True
        self.shed += 1
        return False

    def leave(self, kind: str = "other") -> None:
        """Give a place of ``kind`` back."""
        self.counts[kind] -= 1


def _counted(scope: Scope) -> bool:
    path: str = scope["path"]
    streams = path in _STREAM_PATHS or path.startswith(_STREAM_PREFIXES)
    return path not in EXEMPT_PATHS and not (scope["method"] == "GET" and streams)


def _has_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return True
    return False


class Admission:
    """Shed requests beyond the gate's limit (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, gate: AdmissionGate) -> None:
        self.app = app
        self.gate = gate
        self._unlogged = 0
        self._logged_at = -LOG_EVERY_SECONDS
        # The two answers, rendered once by the one map from errors to HTTP: shedding must
        # cost far less than serving, or an overload would starve the requests admitted.
        self._answers = {oauth: _rendered(oauth) for oauth in (False, True)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _counted(scope):
            await self.app(scope, receive, send)
            return
        if _has_body(scope):
            whole = await read_body(receive)
            if whole is None:  # the client went away first
                return
            receive = whole[1]
        kind = kind_of(scope["path"])
        if not self.gate.enter(kind):
            await self._shed(scope, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.gate.leave(kind)

    async def _shed(self, scope: Scope, send: Send) -> None:
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_SECONDS:
            log.warning("overloaded", shed=self._unlogged, limit=self.gate.limit)
            self._logged_at, self._unlogged = now, 0
        start, body = self._answers[scope["path"].startswith("/oauth2/")]
        await send({**start, "headers": list(start["headers"])})  # copies: no one shares them
        await send(dict(body))


def _rendered(oauth: bool) -> tuple[Message, Message]:
    """The shed answer (``Overloaded`` through :func:`~tether.api.errors.error_response`), as
    the two ASGI messages that send it."""
    error = Overloaded(
        "the server is overloaded; try again shortly",
        details={"retry_after": RETRY_AFTER_SECONDS},
    )
    path = "/oauth2/token" if oauth else "/"
    scope: Scope = {"type": "http", "method": "GET", "path": path, "headers": []}
    response = error_response(Request(scope), error)
    start: Message = {"type": "http.response.start", "status": response.status_code,
                      "headers": response.raw_headers}  # fmt: skip
    return start, {"type": "http.response.body", "body": bytes(response.body)}

"""The upstream's own messages, relayed to the one caller they are for.

An upstream MCP server talks to its client unasked: log notices (``notifications/message``)
after ``logging/setLevel``, most of them sent while a call runs, and
``notifications/resources/updated`` for a resource the client subscribed to. The gateway's
upstream sessions are shared by callers, and the SDK's client does not say which request a
notice came with, so a notice on a shared session cannot be told apart: relaying it would
let one caller read another's logs.

So a caller's session that asks for such messages (``logging/setLevel``,
``resources/subscribe``; the handshake era's stateful sessions only) gets an upstream session
of its own (:class:`~tether.enforcement.mcp._upstreams.Listener`), and its calls go through
that one. What arrives on it is the caller's:

* a log notice goes to the caller on the stream of its newest call still running (the
  handshake era's request-scoped stream), or on the session's own stream when none runs;
* the upstream's own sampling and elicitation requests are asked of the caller on the stream
  of its newest running call, and the answer goes back (refused when no call runs);
* a resource update goes on the session's own stream, only for a URI the caller subscribed
  to — and subscribing was decided like reading (``read_resource``), so a caller is told of
  changes to what it may read; reading the change is decided again.

A caller that went away loses its notices; the upstream session does not. A listener ends with
the caller's session (``DELETE``, or the front forgetting it); at most :data:`MAX_KEPT` are
remembered.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import mcp_types as types
import structlog
from mcp.server.context import ServerRequestContext
from mcp.server.session import ServerSession
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from pydantic import BaseModel

from tether.enforcement.mcp._upstreams import Listener, UpstreamPool

__all__ = ["Listeners"]

#: Listening caller sessions remembered (beyond this the least recently used stop listening).
MAX_KEPT = 4096
#: Why an upstream's request for input is refused when no call of the caller runs on a stream.
NOT_ASKABLE = "the caller cannot be asked for input: none of its calls runs on a stream"

log = structlog.get_logger("tether.mcp")
_T = TypeVar("_T", bound=BaseModel)


@dataclass(eq=False)
class _Audience:
    """Where one caller session's notices go."""

    standalone: ServerSession
    calls: list[ServerRequestContext[Any]] = field(default_factory=list)

    async def log(self, params: types.LoggingMessageNotificationParams) -> None:
        notice = types.LoggingMessageNotification(params=params)
        if self.calls:
            call = self.calls[-1]
            await _tell(call.session, notice, call.request_id)
        else:
            await _tell(self.standalone, notice, None)

    async def sample(
        self, context: object, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult | types.CreateMessageResultWithTools | types.ErrorData:
        request = types.CreateMessageRequest(params=params)
        if params.tools:
            return await self._ask(request, types.CreateMessageResultWithTools)
        return await self._ask(request, types.CreateMessageResult)

    async def elicit(
        self, context: object, params: types.ElicitRequestParams
    ) -> types.ElicitResult | types.ErrorData:
        return await self._ask(types.ElicitRequest(params=params), types.ElicitResult)

    async def _ask(self, request: types.ServerRequest, kind: type[_T]) -> _T | types.ErrorData:
        """The caller's answer to the upstream's request, asked on its newest running call's
        stream; refused when none runs on a stream (input is asked for a call, and a call
        answered with one JSON body has no stream to ask on)."""
        if not self.calls:
            return types.ErrorData(code=types.INVALID_REQUEST, message=NOT_ASKABLE)
        call = self.calls[-1]
        related = ServerMessageMetadata(related_request_id=call.request_id)
        try:
            return await call.session.send_request(request, kind, metadata=related)
        except MCPError as exc:
            return exc.error

    async def updated(self, uri: str) -> None:
        notice = types.ResourceUpdatedNotification(
            params=types.ResourceUpdatedNotificationParams(uri=uri)
        )
        await _tell(self.standalone, notice, None)


async def _tell(
    session: ServerSession, notice: types.ServerNotification, related: types.RequestId | None
) -> None:
    try:
        await session.send_notification(notice, related_request_id=related)
    except Exception as exc:  # noqa: BLE001 - a caller gone away must not break the upstream
        log.debug("mcp_notice_not_delivered", method=notice.method, error=type(exc).__name__)


class Listeners:
    """The listening caller sessions, by the session id the gateway gave them."""

    def __init__(self, pool: UpstreamPool) -> None:
        self._pool = pool
        self._kept: OrderedDict[str, tuple[Listener, _Audience]] = OrderedDict()

    def of(self, session: str | None) -> Listener | None:
        """The listener of caller session ``session``, if it asked for notices."""
        kept = self._kept.get(session) if session is not None else None
        if kept is None:
            return None
        self._kept.move_to_end(kept[0].key)
        return kept[0]

    def listen(self, session: str, ctx: ServerRequestContext[Any]) -> Listener:
        """The listener of ``session``, made on its first request for notices (``ctx``)."""
        known = self.of(session)
        if known is not None:
            return known
        audience = _Audience(standalone=ctx.session)
        listener = Listener(key=session, on_log=audience.log, on_updated=audience.updated,
                            on_sample=audience.sample, on_elicit=audience.elicit)  # fmt: skip
        self._kept[session] = (listener, audience)
        while len(self._kept) > MAX_KEPT:
            self.ended(next(iter(self._kept)))
        return listener

    @contextlib.contextmanager
    def calling(self, session: str | None, ctx: ServerRequestContext[Any]) -> Iterator[None]:
        """While a call of ``session`` runs: its log notices go on the call's stream."""
        kept = self._kept.get(session) if session is not None else None
        if kept is None:
            yield
            return
        calls = kept[1].calls
        calls.append(ctx)
        try:
            yield
        finally:
            calls.remove(ctx)

    def ended(self, session: str) -> None:
        """Caller session ``session`` ended: its upstream session is closed."""
        if self._kept.pop(session, None) is not None:
            self._pool.stop_listening(session)

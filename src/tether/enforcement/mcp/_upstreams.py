"""Kept connections to upstream MCP servers, on the official ``mcp`` SDK's client.

One MCP session per (server, injected credential) is opened on first use and kept: a call
never pays for a new TCP connection, handshake or child process (a gateway that opens one per
call adds tens of milliseconds to each). Servers without a credential, or with one the same for
every caller (a vault secret), share one session; a per-agent credential (a downstream token)
gets its own session, so no caller's credential is ever sent on another's behalf. Sessions
unused for :data:`IDLE_SECONDS` are closed, at most :data:`MAX_SESSIONS` are kept, and a
session whose transport failed is dropped and reopened by the next call.

The SDK's client holds anyio task groups, which must be left by the task that entered them:
each session is therefore owned by a task of its own that opens it, waits to be told to
close, and closes it; calls from any task go through the open session.

Nothing of the caller passes upstream but the tool's name and arguments: not its token, not
its headers. HTTP upstreams get only the injected header; stdio servers start with the SDK's
short list of safe environment variables plus the injected one. The trace context goes in the
request's ``_meta`` (``traceparent``, the MCP convention) and, for HTTP, also as the W3C
``traceparent`` header.

A caller's session that asks for the upstream's own messages — log notices
(``logging/setLevel``), resource updates (``resources/subscribe``) — is a :class:`Listener`
and gets an upstream session of its own (still kept, never opened per call): the SDK's client
does not say which request a notice belongs to, so on a shared session one caller's notices
could reach another. Everything that arrives on a listener's session is that caller's; its
level and subscriptions are sent again if the session has to be reopened. Such a session ends
with the caller's session, not after :data:`IDLE_SECONDS` unused (a subscriber may only wait);
at most :data:`MAX_LISTENERS` are kept per server, the idle ones closed to make room.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import httpx2
import mcp_types as types
from mcp import Client, StdioServerParameters
from mcp.client.session import ElicitationFnT, IncomingMessage, SamplingFnT
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.dispatcher import ProgressFnT

from tether.enforcement.mcp.models import Transport, Upstream
from tether.errors import EngineUnavailable

__all__ = ["Listener", "TooManyListeners", "UpstreamPool", "UpstreamUnavailable"]

IDLE_SECONDS = 300.0
MAX_SESSIONS = 256
#: Pages of a tool listing read at most (a server that never stops paging is cut off).
MAX_PAGES = 20
#: How long opening a session may take (a stdio server starts a Python process: seconds).
OPEN_TIMEOUT = 30.0
#: Upstream sessions of listeners kept per server (each may be a process, for stdio).
MAX_LISTENERS = 32


class UpstreamUnavailable(EngineUnavailable):
    """The upstream MCP server could not be reached or failed mid-call (503)."""


class TooManyListeners(EngineUnavailable):
    """:data:`MAX_LISTENERS` sessions already listen to this server, none of them idle."""


@dataclass(eq=False, kw_only=True)
class Listener:
    """A caller's session that asked for the upstream's own messages (see the module).

    ``key`` names the caller's session at the gateway; ``on_log`` receives the upstream's log
    notices, ``on_updated`` the URI of each update of a resource in ``subscribed``; the
    session speaks the handshake era, so the upstream asks for input (sampling, elicitation)
    with requests of its own, which ``on_sample`` and ``on_elicit`` relay to the caller. ``level``
    and ``subscribed`` are what the caller set, sent again when the session is reopened."""

    key: str
    on_log: Callable[[types.LoggingMessageNotificationParams], Awaitable[None]]
    on_updated: Callable[[str], Awaitable[None]]
    #: The upstream's own sampling and elicitation requests mid-call, asked of the caller.
    on_sample: SamplingFnT
    on_elicit: ElicitationFnT
    level: types.LoggingLevel | None = None
    subscribed: set[str] = field(default_factory=set)

    async def receive(self, message: IncomingMessage) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            uri = str(message.params.uri)
            if uri in self.subscribed:  # never what the caller did not subscribe to
                await self.on_updated(uri)

    async def restore(self, client: Client) -> None:
        """Set the level and subscriptions again on a reopened session."""
        session = client.session
        if self.level is not None:
            level = types.SetLevelRequestParams(level=self.level)
            await session.send_request(types.SetLevelRequest(params=level), types.EmptyResult)
        for uri in sorted(self.subscribed):
            subscribe = types.SubscribeRequest(params=types.SubscribeRequestParams(uri=uri))
            await session.send_request(subscribe, types.EmptyResult)


_Key = tuple[str, int, str, str]


@dataclass(eq=False, kw_only=True)
class _Session:
    key: _Key
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    client: Client | None = None
    error: BaseException | None = None
    task: asyncio.Task[None] | None = None
    used: float = field(default_factory=time.monotonic)


class UpstreamPool:
    def __init__(self, *, timeout: float) -> None:
        self._timeout = timeout
        self._sessions: dict[_Key, _Session] = {}
        self._opening = asyncio.Lock()

    async def list_tools(self, upstream: Upstream, secret: str | None) -> list[dict[str, Any]]:
        """Every tool definition the server lists (all pages, up to :data:`MAX_PAGES`), as
        JSON objects with the wire's field names."""
        found: list[dict[str, Any]] = []
        async with self.use(upstream, secret) as client:
            cursor: str | None = None
            for _ in range(MAX_PAGES):
                page = await client.session.list_tools(
                    params=types.PaginatedRequestParams(cursor=cursor)
                )
                found += [t.model_dump(mode="json", by_alias=True, exclude_none=True)
                          for t in page.tools]  # fmt: skip
                cursor = page.next_cursor
                if cursor is None:
                    break
        return found

    async def call_tool(
        self,
        upstream: Upstream,
        secret: str | None,
        *,
        name: str,
        arguments: Mapping[str, Any] | None,
        meta: Mapping[str, Any],
        progress: ProgressFnT | None = None,
        answers: types.InputResponses | None = None,
        state: str | None = None,
        listener: Listener | None = None,
    ) -> types.CallToolResult | types.InputRequiredResult:
        """The upstream's answer: a result, or (2026-07-28) the input it needs first — the
        caller's sampling or elicitation — to send back with ``answers`` and ``state``."""
        async with self.use(upstream, secret, listener) as client:
            result: types.CallToolResult | types.InputRequiredResult
            result = await client.session.call_tool(
                name, dict(arguments) if arguments is not None else None,
                read_timeout_seconds=self._timeout, meta=cast(types.RequestParamsMeta, dict(meta)),
                progress_callback=progress, input_responses=answers, request_state=state,
                allow_input_required=True,
            )  # fmt: skip
        return result

    @contextlib.asynccontextmanager
    async def use(
        self, upstream: Upstream, secret: str | None, listener: Listener | None = None
    ) -> AsyncIterator[Client]:
        """The kept session to ``upstream`` carrying ``secret`` (the listener's own, for a
        listener), for one exchange: bounded by the timeout; a transport failure drops the
        session and is ``UpstreamUnavailable``."""
        session = await self._session(upstream, secret, listener)
        client = session.client
        if client is None:  # closed between its opening and now
            raise UpstreamUnavailable(f"MCP server {upstream.name!r} closed the session")
        try:
            async with asyncio.timeout(self._timeout):
                yield client
        except (TimeoutError, OSError, httpx2.HTTPError, RuntimeError) as exc:
            self._drop(session)
            raise UpstreamUnavailable(
                f"MCP server {upstream.name!r} did not answer: {type(exc).__name__}"
            ) from exc
        finally:
            session.used = time.monotonic()

    async def _session(
        self, upstream: Upstream, secret: str | None, listener: Listener | None
    ) -> _Session:
        key = (upstream.name, upstream.version, _fingerprint(secret),
               listener.key if listener is not None else "")  # fmt: skip
        session = self._sessions.get(key)
        if session is None or session.error is not None:
            async with self._opening:
                session = self._sessions.get(key)
                if session is None or session.error is not None:
                    if listener is not None:
                        self._make_room(upstream.name)
                    session = self._open(key, upstream, secret, listener)
        try:
            async with asyncio.timeout(OPEN_TIMEOUT):
                await session.ready.wait()
        except TimeoutError:
            self._drop(session)
            raise UpstreamUnavailable(f"MCP server {upstream.name!r} did not start") from None
        if session.error is not None or session.client is None:
            self._drop(session)
            raise UpstreamUnavailable(
                f"MCP server {upstream.name!r} cannot be reached: {_cause(session.error)}"
            ) from session.error
        return session

    def _open(
        self, key: _Key, upstream: Upstream, secret: str | None, listener: Listener | None
    ) -> _Session:
        self._evict()
        session = _Session(key=key)
        self._sessions[key] = session
        session.task = asyncio.create_task(
            self._own(session, upstream, secret, listener), name=f"mcp-upstream-{upstream.name}"
        )
        return session

    def _make_room(self, server: str) -> None:
        """Room for one more listener's session to ``server``: the idle ones closed, or
        :class:`TooManyListeners`."""
        listening = [s for s in self._sessions.values() if s.key[0] == server and s.key[3]]
        if len(listening) < MAX_LISTENERS:
            return
        now = time.monotonic()
        idle = [s for s in listening if now - s.used > IDLE_SECONDS]
        for session in idle:
            self._drop(session)
        if len(listening) - len(idle) >= MAX_LISTENERS:
            raise TooManyListeners(
                f"{MAX_LISTENERS} sessions already listen to MCP server {server!r}"
            )

    async def _own(
        self, session: _Session, upstream: Upstream, secret: str | None, listener: Listener | None
    ) -> None:
        """Open the session, keep it until told to stop, close it — all in this task."""
        try:
            async with contextlib.AsyncExitStack() as stack:
                client = await stack.enter_async_context(
                    _client(upstream, secret, stack, timeout=self._timeout, listener=listener)
                )
                if listener is not None:
                    async with asyncio.timeout(self._timeout):
                        await listener.restore(client)
                session.client = client
                session.ready.set()
                await session.stop.wait()
        except Exception as exc:  # noqa: BLE001 - any failure to open is the upstream's
            session.error = exc
        finally:
            session.client = None if session.error is not None else session.client
            session.ready.set()
            if self._sessions.get(session.key) is session:
                del self._sessions[session.key]

    def _drop(self, session: _Session) -> None:
        if self._sessions.get(session.key) is session:
            del self._sessions[session.key]
        session.stop.set()

    def _evict(self) -> None:
        """Close sessions idle too long, and the least recently used beyond the limit."""
        now = time.monotonic()
        for session in list(self._sessions.values()):
            if now - session.used > IDLE_SECONDS and not session.key[3]:  # a listener: waits
                self._drop(session)
        while len(self._sessions) >= MAX_SESSIONS:
            self._drop(min(self._sessions.values(), key=lambda s: s.used))

    async def forget(self, name: str) -> None:
        """Close every session of server ``name`` (removed, or changed)."""
        for session in [s for s in self._sessions.values() if s.key[0] == name]:
            self._drop(session)

    def listening(self, server: str) -> int:
        """How many listeners' sessions to ``server`` are kept."""
        return sum(1 for s in self._sessions.values() if s.key[0] == server and s.key[3])

    def stop_listening(self, key: str) -> None:
        """Close the upstream sessions of the listener ``key`` (its caller's session ended)."""
        for session in [s for s in self._sessions.values() if s.key[3] == key]:
            self._drop(session)

    async def close(self) -> None:
        sessions = list(self._sessions.values())
        for session in sessions:
            self._drop(session)
        tasks = [s.task for s in sessions if s.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)


async def _not_relayed(context: Any, params: Any) -> types.ErrorData:
    """A handshake-era upstream's own sampling or elicitation request, mid-call, on a shared
    session: not routed to a caller (it could be anyone's), so refused (a listener's session
    relays them). A 2026-07-28 upstream asks through the call's result instead, which the
    gateway relays to the caller who made the call."""
    why = "this gateway relays input requests in the 2026-07-28 era only"
    return types.ErrorData(code=types.INVALID_REQUEST, message=why)


#: The upstream may ask the caller for input (sampling, elicitation): declared to it.
_INPUT: dict[str, Any] = {"sampling_callback": _not_relayed, "elicitation_callback": _not_relayed}


def _cause(error: BaseException | None) -> str:
    """What went wrong, through anyio's exception groups: the first real error's type and
    message (at most 200 characters)."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    if error is None:
        return "it closed"
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return text[:200]


def _fingerprint(secret: str | None) -> str:
    """Which credential a session carries, without keeping it as a key."""
    return "" if secret is None else hashlib.sha256(secret.encode()).hexdigest()


def _client(
    upstream: Upstream,
    secret: str | None,
    stack: contextlib.AsyncExitStack,
    *,
    timeout: float,
    listener: Listener | None,
) -> Client:
    info = types.Implementation(name="tether-mcp-gateway", version="1")
    options: dict[str, Any] = dict(_INPUT)
    if listener is not None:  # setLevel and subscriptions are the handshake era's
        options = {"logging_callback": listener.on_log, "message_handler": listener.receive,
                   "sampling_callback": listener.on_sample,
                   "elicitation_callback": listener.on_elicit, "mode": "legacy"}  # fmt: skip
    injection = upstream.credential
    if upstream.transport is Transport.STDIO:
        env = {injection.env: secret} if injection and injection.env and secret else None
        params = StdioServerParameters(
            command=upstream.command[0], args=list(upstream.command[1:]), env=env
        )
        return Client(params, cache=None, client_info=info, read_timeout_seconds=timeout,
                      **options)  # fmt: skip
    headers: dict[str, str] = {}
    if injection is not None and injection.header and secret is not None:
        headers[injection.header] = injection.prefix + secret
    http = httpx2.AsyncClient(
        headers=headers, timeout=httpx2.Timeout(timeout), follow_redirects=False,
        event_hooks={"request": [_traceparent_header]},
    )  # fmt: skip
    stack.push_async_callback(http.aclose)
    transport = streamable_http_client(upstream.url or "", http_client=http)
    return Client(transport, cache=None, client_info=info, read_timeout_seconds=timeout, **options)


async def _traceparent_header(request: httpx2.Request) -> None:
    """Copy a JSON-RPC request's ``params._meta.traceparent`` into the W3C header."""
    if request.method != "POST" or b"traceparent" not in request.content:
        return
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        message = json.loads(request.content)
        value = message["params"]["_meta"]["traceparent"]
        if isinstance(value, str) and len(value) == 55:
            request.headers["traceparent"] = value

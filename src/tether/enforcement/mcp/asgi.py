"""The MCP gateway's HTTP front: ``/mcp/<server>``, MCP streamable HTTP, authenticated.

Before the ``mcp`` SDK's streamable-HTTP transport sees a request, this front:

1. refuses a foreign ``Host`` (``421``) or ``Origin`` (``403``) before anything else (DNS
   rebinding), then a path that is not ``/mcp/<name>`` (``404``); that no server is
   registered under the name is told (``404``) only to an authenticated caller;
2. authenticates the bearer token — a delegated token or an agent's JWT-SVID — **minted for
   this server** (``aud`` = ``<issuer>/mcp/<server>``, RFC 8707): a token for Tether's API,
   another server or anything else is refused, so no token passes from one service to
   another. Without a valid one the answer is ``401`` with ``WWW-Authenticate: Bearer
   resource_metadata="…"`` pointing at the RFC 9728 protected-resource metadata
   (``/.well-known/oauth-protected-resource/mcp/<server>``), from which MCP clients discover
   Tether as the authorization server;
3. binds sessions to the caller: the session id a client sees is 256 random bits
   (``secrets.token_urlsafe(32)``) that the front maps to the SDK's own; a session id
   presented by another agent instance, another user or at another server's path is answered
   exactly like an unknown one (``404``);
4. leaves the caller (:class:`~tether.enforcement.mcp.gateway.GatewayCaller`), with a fresh
   correlation id and W3C trace context, in the scope for the handlers;
5. chooses how the request is answered. The streamable HTTP transport lets a server answer a
   request with one JSON body or with an SSE stream that carries, before the answer, the
   messages tied to the request (progress, log notices, the server's own requests for input).
   A stream costs the SDK a task group, an SSE writer and the garbage of their cancellation on
   every request (about half the gateway's CPU per tool call, measured), so every request of
   a session whose ``initialize`` declared no capability to be asked for input
   (``sampling``, ``elicitation``, ``roots``) is answered with one JSON body. Such a session's
   progress and log notices go on its GET stream instead — matched by their progress token
   and logger, not by the stream — so they may arrive after the call's answer, and are lost
   if the client keeps no GET stream open (MCP lets a server send neither). The SDK's JSON
   answers never end a request whose client went away, and a second request under the id of
   one still in flight would leave the first waiting forever, so in these sessions the front
   refuses (``400``, JSON-RPC ``-32600``) such a duplicate, and a body whose id it cannot read
   as the SDK keys it (not strict JSON, an id neither an integer nor a string). Every other
   request, and every stateless (2026-07-28) one whatever session it names — which the SDK
   answers with one JSON body anyway when its handler finishes quickly without a word — is
   answered on a stream of its own.

``Host`` and ``Origin`` are checked with the SDK's DNS-rebinding rules against the issuer's
host, loopback when the issuer is loopback, and ``mcp_allowed_hosts``.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

import orjson
from mcp.server.streamable_http import GET_STREAM_KEY
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from tether._internal.asgi import read_body
from tether.checkpoint import Checkpoint, CheckRequest
from tether.enforcement.mcp.gateway import SCOPE_KEY, SERVING, Gateway, GatewayCaller
from tether.enforcement.mcp.registry import McpRegistry
from tether.errors import Error
from tether.identity.names import gateway_resource
from tether.policy.models import Entity, EntityRef

__all__ = ["GatewayApp", "resource_metadata"]

SESSION_HEADER = b"mcp-session-id"
VERSION_HEADER = b"mcp-protocol-version"
#: Sessions the front remembers (beyond this the least recently used are forgotten: their
#: clients start a new session).
MAX_SESSIONS = 10_000
_SERVER = re.compile(r"^/mcp/([a-z][a-z0-9-]{0,61}[a-z0-9])/?$")
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass(frozen=True)
class _Bound:
    inner: str
    server: str
    owner: tuple[str, str | None]
    #: Whether the session's requests are answered with one JSON body (see the module's 5.).
    plain: bool
    #: The ids of the session's requests in flight (kept for a plain session only).
    pending: set[str] = field(default_factory=set)


def resource_metadata(issuer: str, server: str) -> dict[str, object]:
    """RFC 9728 §2 metadata of the gateway's resource for ``server``."""
    return {
        "resource": gateway_resource(issuer, server),
        "authorization_servers": [issuer],
        "bearer_methods_supported": ["header"],
        "resource_name": f"MCP server {server!r} through the Tether gateway",
    }


def security_settings(issuer: str, extra_hosts: Collection[str]) -> TransportSecuritySettings:
    """Hosts (and origins) the gateway answers to: the issuer's, loopback when the issuer is
    on loopback, and the configured ones."""
    parts = urlsplit(issuer)
    hosts = [parts.netloc, *extra_hosts]
    if parts.hostname in _LOOPBACK:
        hosts += ["127.0.0.1:*", "localhost:*", "[::1]:*"]
    origins = [f"{scheme}://{host}" for host in hosts for scheme in ("http", "https")]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )


class GatewayApp:
    """The ASGI app of ``/mcp/<server>`` paths; :meth:`running` must be entered while it
    serves."""

    def __init__(
        self,
        *,
        gateway: Gateway,
        registry: McpRegistry,
        checkpoint: Checkpoint,
        issuer: str,
        allowed_hosts: Collection[str] = (),
    ) -> None:
        self._gateway = gateway
        self._registry = registry
        self._checkpoint = checkpoint
        self._issuer = issuer
        self._security = security_settings(issuer, allowed_hosts)
        self._guard = TransportSecurityMiddleware(self._security)
        #: The SDK's session managers: answering on streams, and with one JSON body.
        self._managers: tuple[StreamableHTTPSessionManager, StreamableHTTPSessionManager] | None
        self._managers = None
        self._sessions: OrderedDict[str, _Bound] = OrderedDict()
        self._outer: dict[str, str] = {}

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Serve while entered (the SDK's session managers run once: new ones each time)."""
        streamed, plain = (
            StreamableHTTPSessionManager(
                app=self._gateway.server, security_settings=self._security, json_response=json
            )
            for json in (False, True)
        )
        async with streamed.run(), plain.run():
            self._managers = (streamed, plain)
            try:
                yield
            finally:
                self._managers = None
                self._sessions.clear()
                self._outer.clear()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        managers = self._managers
        if scope["type"] != "http":
            return
        if managers is None:
            down: dict[str, object] = {"error": "temporarily_unavailable",
                                       "error_description": "not running"}  # fmt: skip
            await _answer(send, 503, down)
            return
        who = await self._admitted(scope, receive, send)
        if who is None:
            return
        # a stateless (2026-07-28) request is streamed whatever session it names (module's 5.)
        stateless = _header(scope, VERSION_HEADER) not in (None, *HANDSHAKE_PROTOCOL_VERSIONS)
        outer = _header(scope, SESSION_HEADER)
        if outer is None:  # the request that opens a session, or a stateless one
            plain = False
            if scope["method"] == "POST" and not stateless:
                whole = await read_body(receive)
                if whole is None:  # gone before its body was read
                    return
                body, receive = whole
                plain = _plain(body)
            await self._serve(managers[plain], who, scope, receive, send, streamed=not plain)
            return
        bound = self._sessions.get(outer)
        if bound is None or bound.server != who.server or bound.owner != (who.instance, who.user):
            await _answer(send, 404, {"error": "session_not_found",
                                      "error_description": "Session not found"})  # fmt: skip
            return
        plain = bound.plain and not stateless
        await self._in_session(scope, receive, send, manager=managers[plain], plain=plain,
                               session=(outer, bound), who=who)  # fmt: skip

    async def _in_session(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        manager: StreamableHTTPSessionManager,
        plain: bool,
        session: tuple[str, _Bound],
        who: GatewayCaller,
    ) -> None:
        """A request of the caller's own ``session`` (its id, and what the front keeps of
        it); a plain session's request is refused while another with its id is in flight."""
        outer, bound = session
        self._sessions.move_to_end(outer)
        who = replace(who, session=outer)
        scope = _with_header(scope, SESSION_HEADER, bound.inner)
        if scope["method"] == "DELETE":
            self._forget(outer)
        elif plain and scope["method"] == "POST":
            whole = await read_body(receive)
            if whole is None:  # gone before its body was read
                return
            body, receive = whole
            try:
                request_id = _request_id(body)
            except ValueError as exc:  # what the SDK might read otherwise, and key as it reads
                await _answer(send, 400, _refusal(str(exc)))
                return
            if request_id in bound.pending:
                await _answer(send, 400, _refusal("a request with this id is already in flight"))
                return
            if request_id is not None:
                bound.pending.add(request_id)
                try:
                    await self._serve(manager, who, scope, receive, send, streamed=False)
                finally:
                    bound.pending.discard(request_id)
                return
        await self._serve(manager, who, scope, receive, send, streamed=not plain)

    async def _serve(
        self,
        manager: StreamableHTTPSessionManager,
        who: GatewayCaller,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        streamed: bool,
    ) -> None:
        """Hand the request to the SDK's ``manager`` with the caller in its scope."""
        who = replace(who, streamed=streamed)
        scope = {**scope, "state": {**scope.get("state", {}), SCOPE_KEY: who}}
        serving = SERVING.set(who.server)
        renaming = self._renaming(send, who, plain=not streamed)
        try:
            await manager.handle_request(scope, receive, renaming)
        finally:
            SERVING.reset(serving)

    async def _admitted(self, scope: Scope, receive: Receive, send: Send) -> GatewayCaller | None:
        """The caller, once its request passed the front's checks; None once refused."""
        refused = await self._guard.validate_request(Request(scope), is_post=False)
        if refused is not None:  # DNS rebinding: a foreign Host or Origin, before all else
            await refused(scope, receive, send)
            return None
        found = _SERVER.match(scope["path"])
        missing: dict[str, object] = {"error": "mcp_server_not_found",
                                      "error_description": "no such MCP server"}  # fmt: skip
        if found is None:  # not a server's path at all
            await _answer(send, 404, missing)
            return None
        who = await self._caller(scope, found.group(1), send)
        if who is not None and await self._registry.upstream(who.server) is None:
            await _answer(send, 404, missing)  # told to a known caller only
            return None
        return who

    async def _caller(self, scope: Scope, server: str, send: Send) -> GatewayCaller | None:
        """The verified caller, or None once a 401 has been sent."""
        audience = gateway_resource(self._issuer, server)
        token = _bearer(scope)
        if token is None:
            await self._unauthorized(send, server, None)
            return None
        # Certificate-bound tokens (RFC 8705) are not taken here yet: without the client
        # certificate the checkpoint refuses them (fail closed).
        thumbprint = None
        probe = CheckRequest(
            token=token, action="call_tool", resource=Entity(ref=EntityRef("McpServer", server)),
            enforcement_point="mcp-gateway", audience=audience, certificate_thumbprint=thumbprint,
        )  # fmt: skip
        try:
            caller, delegation = await self._checkpoint.identify(probe)
        except Error as exc:
            await self._unauthorized(send, server, exc.message)
            return None
        trace_id, traceparent = _trace(scope)
        return GatewayCaller(
            token=token, server=server, audience=audience, instance=caller.spiffe_id,
            certificate_thumbprint=thumbprint, correlation_id=trace_id, traceparent=traceparent,
            user=delegation.user if delegation is not None else None,
            grant_id=delegation.grant.id if delegation is not None else None,
        )  # fmt: skip

    async def _unauthorized(self, send: Send, server: str, why: str | None) -> None:
        metadata = f"{self._issuer}/.well-known/oauth-protected-resource/mcp/{server}"
        challenge = f'Bearer resource_metadata="{metadata}"'
        body: dict[str, object] = {"error": "unauthenticated",
                                   "error_description": "a bearer token for this MCP server "
                                                        "is required"}  # fmt: skip
        if why is not None:
            challenge += ', error="invalid_token"'
            body = {"error": "invalid_token", "error_description": why}
        await _answer(send, 401, body, headers=[(b"www-authenticate", challenge.encode())])

    def _renaming(self, send: Send, who: GatewayCaller, *, plain: bool) -> Send:
        """``send`` with the SDK's session id replaced by the caller's: the one its request
        named, or for a new session one of 256 random bits, bound to the SDK's."""
        owner = (who.instance, who.user)

        async def renamed(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = []
                for key, value in message.get("headers", []):
                    if key.lower() == SESSION_HEADER:
                        outer = who.session or self._bind(
                            value.decode("latin-1"), who.server, owner, plain
                        )
                        headers.append((key, outer.encode()))
                    else:
                        headers.append((key, value))
                message = {**message, "headers": headers}
            await send(message)

        return renamed

    def _bind(self, inner: str, server: str, owner: tuple[str, str | None], plain: bool) -> str:
        known = self._outer.get(inner)
        if known is not None:
            return known
        outer = secrets.token_urlsafe(32)
        self._sessions[outer] = _Bound(inner=inner, server=server, owner=owner, plain=plain)
        self._outer[inner] = outer
        while len(self._sessions) > MAX_SESSIONS:
            self._forget(next(iter(self._sessions)))
        return outer

    def _forget(self, outer: str) -> None:
        bound = self._sessions.pop(outer, None)
        if bound is not None:
            self._outer.pop(bound.inner, None)
            self._gateway.session_ended(outer)


#: What a client declares in ``initialize`` to be asked for input mid-call: on the call's stream.
_ASKABLE = ("sampling", "elicitation", "roots")


def _refusal(why: str) -> dict[str, object]:
    """The answer to a plain session's request refused before the SDK sees it (module's 5.)."""
    return {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": why}}


def _plain(body: bytes) -> bool:
    """Whether a request outside any session opens one whose requests are all answered with
    one JSON body: an ``initialize`` declaring nothing the caller can be asked, and asking for
    no progress. Anything else — unreadable bodies too — goes to the streams, whose transport
    answers it as the SDK does."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(message, dict) or message.get("method") != "initialize":
        return False
    params = message.get("params")
    if not isinstance(params, dict):
        return False
    meta = params.get("_meta")
    if isinstance(meta, dict) and "progressToken" in meta:
        return False
    capabilities = params.get("capabilities")
    return isinstance(capabilities, dict) and not any(c in capabilities for c in _ASKABLE)


def _request_id(body: bytes) -> str | None:
    """The id of the JSON-RPC request in ``body`` as the SDK's transport keys it (``str``);
    None for a notice, an answer, or anything the transport refuses itself (a batch).

    Raises ValueError for a body that is not strict JSON (``NaN``, an integer beyond 64 bits:
    the SDK's parser may read it, under an id this front could not see), for an id neither an
    integer nor a string, and for the id the transport keys its GET stream by."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ValueError("the body is not strict JSON") from None
    if not isinstance(message, dict) or "method" not in message or "id" not in message:
        return None
    given = message["id"]
    if isinstance(given, bool) or not isinstance(given, int | str) or given == GET_STREAM_KEY:
        raise ValueError("a request's id must be an integer or a string of the caller's own")
    return str(given)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def _with_header(scope: Scope, name: bytes, value: str) -> Scope:
    headers = [(k, v) for k, v in scope["headers"] if k.lower() != name]
    return {**scope, "headers": [*headers, (name, value.encode("latin-1"))]}


def _bearer(scope: Scope) -> str | None:
    value = _header(scope, b"authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _trace(scope: Scope) -> tuple[str, str]:
    """The trace id (the call's correlation id) and the ``traceparent`` to send upstream: the
    caller's trace continued with a new span, or a new trace."""
    given = _TRACEPARENT.match(_header(scope, b"traceparent") or "")
    trace_id = given.group(1) if given else secrets.token_hex(16)
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-01"


async def _answer(
    send: Send,
    status: int,
    body: dict[str, object],
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    data = orjson.dumps(body)
    start = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
             (b"cache-control", b"no-store"), *(headers or [])]  # fmt: skip
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": data})

"""The MCP gateway's handlers: every ``tools/list`` and ``tools/call`` through the checkpoint.

A low-level ``mcp`` SDK server (both protocol eras: the ``2025-11-25`` handshake and the
stateless ``2026-07-28``) whose handlers run for a caller the HTTP front
(:mod:`tether.enforcement.mcp.asgi`) already authenticated for ``/mcp/<server>``:

* ``tools/list``: the upstream's listing (kept for ``listing_ttl`` seconds, re-read and
  re-checked against the pins after that), without the tools held back by pinning, filtered by
  policy with **one** decision record per listing (:meth:`Checkpoint.check_listing`);
* ``tools/call``: the tool must be offered as approved (else refused, and the refusal recorded
  as the decision); the checkpoint decides ``call_tool`` on ``Tool::"<server>/<tool>"`` (in
  ``McpServer::"<server>"``) with the arguments; a deny is an MCP tool error carrying the
  reasons; ``approval_required`` starts a CIBA request bound to the call's digest and waits up
  to ``approval_wait`` seconds for the answer — or answers "approval pending" with the
  request's ``auth_req_id``, which the agent sends back in ``_meta`` (:data:`APPROVAL_META`)
  with the same call once the person approved; an allow forwards the call upstream with the
  injected credential and the trace context (:data:`CORRELATION_META`, ``traceparent``).

Any failure on the way is a refusal: the gateway fails closed.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from tether import __version__
from tether._internal.clock import Clock
from tether.checkpoint import Checkpoint, CheckRequest, Verdict
from tether.delegation.approvals import Approvals
from tether.delegation.models import Approval, ApprovalState
from tether.enforcement.mcp._inject import Injector
from tether.enforcement.mcp._listeners import NOT_ASKABLE, Listeners
from tether.enforcement.mcp._relay import (
    ENFORCEMENT_POINT,
    Relay,
    server_entity,
)
from tether.enforcement.mcp._upstreams import Listener, UpstreamPool
from tether.enforcement.mcp.models import Upstream
from tether.enforcement.mcp.registry import McpRegistry
from tether.errors import Error, UnknownUserId
from tether.policy.models import Effect, Entity, EntityRef

__all__ = ["APPROVAL_META", "CORRELATION_META", "SCOPE_KEY", "SERVING", "Gateway", "GatewayCaller"]

#: Where the HTTP front leaves the authenticated caller in the ASGI scope's ``state``.
SCOPE_KEY = "tether.mcp"
#: ``_meta`` key of a call that redeems the approval it was told is pending.
APPROVAL_META = "tether.dev/auth_req_id"
#: ``_meta`` key of the correlation id sent upstream (also in every record of the call).
CORRELATION_META = "tether.dev/correlation_id"
#: How often a call waiting for an approval reads the request's state.
APPROVAL_POLL = 0.5
#: Rounds of input (sampling, elicitation) one call may ask of a handshake-era caller.
MAX_INPUT_ROUNDS = 8
#: The server of the request being served (set by the HTTP front): the SDK asks for a tool's
#: input schema by name alone.
SERVING: ContextVar[str | None] = ContextVar("tether_mcp_serving", default=None)


@dataclass(frozen=True, kw_only=True)
class GatewayCaller:
    """Who is calling, as the HTTP front verified: the bearer token (checked again by the
    checkpoint for every request), the server, and the gateway resource it was minted for."""

    token: str = field(repr=False)
    server: str
    audience: str
    instance: str
    certificate_thumbprint: str | None
    correlation_id: str
    traceparent: str
    #: The user a delegated token acts for, and the grant it acts under; None for an agent's
    #: own token.
    user: str | None = None
    grant_id: str | None = None
    #: The MCP session the request belongs to (the id the front gave the caller); None for
    #: the request that opens one, and for stateless (2026-07-28) callers.
    session: str | None = None
    #: Whether the request is answered on a stream of its own (SSE), which carries the
    #: messages tied to it before its answer; False when it is answered with one JSON body.
    streamed: bool = True


@dataclass(kw_only=True)
class _Listing:
    version: int
    fetched: float
    tools: Mapping[str, Mapping[str, Any]]


class Gateway:
    def __init__(
        self,
        *,
        registry: McpRegistry,
        checkpoint: Checkpoint,
        approvals: Approvals,
        pool: UpstreamPool,
        injector: Injector,
        clock: Clock,
        listing_ttl: float,
        approval_wait: float,
    ) -> None:
        self._registry = registry
        self._checkpoint = checkpoint
        self._approvals = approvals
        self._pool = pool
        self._injector = injector
        self._clock = clock
        self._listing_ttl = listing_ttl
        self._approval_wait = approval_wait
        self._listings: dict[str, _Listing] = {}
        self._refreshing: dict[str, asyncio.Lock] = {}
        self._listeners = Listeners(pool)
        relay = Relay(checkpoint=checkpoint, pool=pool, reach=self._reach,
                      credential=self._credential, listen=self._listener)  # fmt: skip
        with warnings.catch_warnings():  # logging/setLevel is deprecated as of 2026-07-28
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            self.server: Server[Any] = Server(
                "tether-mcp-gateway", version=__version__,
                get_tool_input_schema=self._input_schema,
                on_list_tools=self._list_tools, on_call_tool=self._call_tool,
                on_list_resources=relay.list_resources,
                on_list_resource_templates=relay.list_resource_templates,
                on_read_resource=relay.read_resource, on_list_prompts=relay.list_prompts,
                on_get_prompt=relay.get_prompt, on_completion=relay.complete,
                on_set_logging_level=relay.set_logging_level,
                on_subscribe_resource=relay.subscribe_resource,
                on_unsubscribe_resource=relay.unsubscribe_resource,
            )  # fmt: skip

    # -- tools/list ----------------------------------------------------------------------

    async def _list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        who = caller_of(ctx)
        upstream = await self._upstream(who.server)
        try:
            tools = await self.offered(upstream, who)
        except Error as exc:
            why = f"the tools cannot be listed: {exc.message}"
            raise MCPError(types.INTERNAL_ERROR, why) from exc
        candidates = [_tool_entity(upstream.name, name, d) for name, d in tools.items()]
        listing = replace(_base(who, upstream), action="list_tools")
        _, visible = await self._checkpoint.check_listing(listing, candidates, action="call_tool")
        shown = {entity_id.split("/", 1)[1] for entity_id in visible}
        return types.ListToolsResult(
            tools=[types.Tool.model_validate(d) for name, d in tools.items() if name in shown]
        )

    async def offered(self, upstream: Upstream, who: GatewayCaller) -> Mapping[str, Any]:
        """The upstream's tools agents may see (approved and unchanged), by name: the kept
        listing while it is younger than ``listing_ttl``, else a fresh one, re-checked."""
        kept = self._listings.get(upstream.name)
        if kept is not None and kept.version == upstream.version and self._fresh(kept):
            return kept.tools
        lock = self._refreshing.setdefault(upstream.name, asyncio.Lock())
        async with lock:
            kept = self._listings.get(upstream.name)
            if kept is not None and kept.version == upstream.version and self._fresh(kept):
                return kept.tools
            secret = await self._secret(upstream, who)
            listed = await self._pool.list_tools(upstream, secret)
            usable = await self._registry.review(upstream, listed)
            tools = MappingProxyType({str(d["name"]): d for d in usable})
            self._listings[upstream.name] = _Listing(
                version=upstream.version, fetched=time.monotonic(), tools=tools
            )
            return tools

    def _input_schema(self, name: str) -> Mapping[str, Any] | None:
        """The pinned input schema of tool ``name`` of the server being served, for the SDK's
        check of ``Mcp-Param-*`` headers (2026-07-28) — from the kept listing, so a call does
        not cost a listing (and its record); None (the SDK skips the check) when not kept."""
        server = SERVING.get()
        kept = self._listings.get(server) if server is not None else None
        definition = kept.tools.get(name) if kept is not None else None
        schema = definition.get("inputSchema") if definition is not None else None
        return schema if isinstance(schema, Mapping) else None

    def _fresh(self, kept: _Listing) -> bool:
        return time.monotonic() - kept.fetched < self._listing_ttl

    def forget(self, server: str) -> None:
        """Read ``server``'s listing again on next use (a tool approved, the server changed)."""
        self._listings.pop(server, None)

    # -- tools/call ----------------------------------------------------------------------

    async def _call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        who = caller_of(ctx)
        upstream = await self._upstream(who.server)
        arguments = dict(params.arguments or {})
        definition, refusal = await self._definition(upstream, who, params.name)
        request = replace(
            _base(who, upstream), action="call_tool",
            resource=_tool_entity(upstream.name, params.name, definition or {}),
            entities=(server_entity(upstream.name),), arguments=arguments, refusal=refusal,
        )  # fmt: skip
        verdict = await self._checkpoint.check(request)
        pending = (params.meta or {}).get(APPROVAL_META)
        if verdict.decision.effect is Effect.APPROVAL_REQUIRED and not verdict.audit_failed:
            verdict, answer = await self._approved(request, verdict, who, pending)
            if answer is not None:
                return answer
        if not verdict.allowed:
            return _refused(verdict)
        return await self._forward(ctx, upstream, params, verdict)

    async def _definition(
        self, upstream: Upstream, who: GatewayCaller, name: str
    ) -> tuple[Mapping[str, Any] | None, str | None]:
        """The tool's approved definition, or why the call is refused before any policy."""
        try:
            definition = (await self.offered(upstream, who)).get(name)
        except Error as exc:
            return None, f"the tools of {upstream.name!r} cannot be read: {exc.message}"
        if definition is None:
            return None, (f"tool {name!r} is not offered by {upstream.name!r}: unknown, not "
                          "approved, or changed since it was approved")  # fmt: skip
        return definition, None

    async def _forward(
        self,
        ctx: ServerRequestContext[Any],
        upstream: Upstream,
        params: types.CallToolRequestParams,
        verdict: Verdict,
    ) -> types.CallToolResult | types.InputRequiredResult:
        """Send the allowed call upstream; its progress notices go back to the caller (if it
        asked for them), and so does any input it needs (sampling, elicitation): returned
        as is to a 2026-07-28 caller, who calls again with its answers; asked of a
        handshake-era caller on this request's stream, then sent upstream here."""
        who = caller_of(ctx)
        meta = {"traceparent": who.traceparent, CORRELATION_META: who.correlation_id}
        answers, state = params.input_responses, params.request_state
        listener = self._listener(ctx, False)
        progress = ctx.session.report_progress if who.streamed else _unstreamed(ctx, params)
        try:
            secret = await self._secret(upstream, who)
            for _ in range(MAX_INPUT_ROUNDS):
                # a call answered with one JSON body leaves its session's log notices on the
                # session's own stream: nothing tied to it can reach the caller before its end
                calling = self._listeners.calling(who.session if who.streamed else None, ctx)
                with calling:
                    result = await self._pool.call_tool(
                        upstream, secret, name=params.name, arguments=params.arguments,
                        meta=meta, progress=progress, answers=answers, state=state,
                        listener=listener,
                    )  # fmt: skip
                if isinstance(result, types.CallToolResult) or _modern(ctx):
                    return result
                if not who.streamed:  # it said it cannot be asked, and has no stream to be
                    return _error(NOT_ASKABLE)
                answers, state = await _ask_caller(ctx, result), result.request_state
        except Error as exc:  # the upstream's own errors (MCPError) reach the caller as they are
            return _error(f"refused: {exc.message} (decision {verdict.decision_id})")
        return _error(f"the upstream asked for input more than {MAX_INPUT_ROUNDS} times")

    async def _secret(self, upstream: Upstream, who: GatewayCaller) -> str | None:
        if upstream.credential is None:
            return None
        injected = await self._injector.value(
            upstream.credential, token=who.token, instance=who.instance, audience=who.audience,
            grant_id=who.grant_id,
        )  # fmt: skip
        return injected.value

    async def _reach(self, ctx: ServerRequestContext[Any]) -> tuple[Upstream, CheckRequest]:
        """For the relay: the caller's upstream and the caller's part of a check request."""
        who = caller_of(ctx)
        upstream = await self._upstream(who.server)
        return upstream, _base(who, upstream)

    async def _credential(self, ctx: ServerRequestContext[Any], upstream: Upstream) -> str | None:
        return await self._secret(upstream, caller_of(ctx))

    def _listener(self, ctx: ServerRequestContext[Any], make: bool) -> Listener | None:
        """The listener of the caller's session (made if ``make``); None without a session."""
        session = caller_of(ctx).session
        if session is None or _modern(ctx):
            return None
        return self._listeners.listen(session, ctx) if make else self._listeners.of(session)

    def session_ended(self, session: str) -> None:
        """The caller's session ``session`` ended (deleted, or forgotten by the front)."""
        self._listeners.ended(session)

    async def _upstream(self, name: str) -> Upstream:
        found = await self._registry.upstream(name)
        if found is None:  # removed since the front looked
            raise Error(f"no MCP server {name!r}")
        return found

    # -- approvals -----------------------------------------------------------------------

    async def _approved(
        self, request: CheckRequest, verdict: Verdict, who: GatewayCaller, pending: object
    ) -> tuple[Verdict, types.CallToolResult | None]:
        """The verdict with the approval redeemed, or the answer to give instead (pending,
        refused)."""
        try:
            auth_req_id = pending if isinstance(pending, str) and pending else None
            if auth_req_id is None:
                auth_req_id = await self._start(request, verdict)
            approval = await self._wait(auth_req_id)
            if approval is None:
                return verdict, _error("approval refused: no such approval request")
            if approval.state is ApprovalState.PENDING and approval.expired(self._clock.now()):
                return verdict, _error("approval refused: the request expired unanswered")
            if approval.state is ApprovalState.PENDING:
                return verdict, _pending(auth_req_id, verdict)
            digests = {item.get("call_digest") for item in approval.details}
            if approval.client != who.instance or verdict.call_digest not in digests:
                # Not redeemed: the approval stays for the call (and the caller) it is for.
                return verdict, _error("approval refused: it was given for another call")
            issued = await self._approvals.redeem_for(auth_req_id, instance=who.instance)
        except Error as exc:
            return verdict, _error(f"approval refused: {exc.message}")
        again = await self._checkpoint.check(replace(request, approval_token=issued.access_token))
        return again, None

    async def _start(self, request: CheckRequest, verdict: Verdict) -> str:
        caller = verdict.caller
        if caller is None:
            raise Error("the caller is not known")
        delegation = verdict.delegation
        call = {"action": request.action,
                "resource": {"type": request.resource.ref.type, "id": request.resource.ref.id},
                "arguments": request.arguments}  # fmt: skip
        message = f"{caller.agent.name} calls {request.resource.ref.id}"[:100]
        people = [delegation.user] if delegation is not None else list(caller.agent.owners)
        for person in people:
            try:
                started = await self._approvals.start_for_call(
                    caller=caller, call=call, call_digest=verdict.call_digest, user=person,
                    grant_id=delegation.grant.id if delegation is not None else None,
                    binding_message=message,
                )  # fmt: skip
            except UnknownUserId:
                continue
            return started.auth_req_id
        raise UnknownUserId("no one who may approve this call is a user of this server")

    async def _wait(self, auth_req_id: str) -> Approval | None:
        deadline = time.monotonic() + self._approval_wait
        while True:
            approval = await self._approvals.status(auth_req_id)
            if approval is None or approval.state is not ApprovalState.PENDING:
                return approval
            if approval.expired(self._clock.now()) or time.monotonic() >= deadline:
                return approval
            await asyncio.sleep(APPROVAL_POLL)


def _base(who: GatewayCaller, upstream: Upstream) -> CheckRequest:
    """The caller's part of every check request of a request to ``upstream`` (the server as
    the resource until the action's own is set)."""
    return CheckRequest(
        token=who.token, action="", resource=server_entity(upstream.name),
        enforcement_point=ENFORCEMENT_POINT, correlation_id=who.correlation_id,
        audience=who.audience, certificate_thumbprint=who.certificate_thumbprint,
    )  # fmt: skip


def _unstreamed(
    ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
) -> ProgressFnT | None:
    """Progress of a call answered with one JSON body, if its caller asked for it: sent on
    the caller's session stream, where its progress token tells the caller which call it is
    of (MCP's progress notices are matched by token)."""
    token = (params.meta or {}).get("progress_token")
    if token is None:
        return None

    async def tell(progress: float, total: float | None, message: str | None) -> None:
        await ctx.session.send_progress_notification(token, progress, total, message)

    return tell


def _modern(ctx: ServerRequestContext[Any]) -> bool:
    return ctx.protocol_version in MODERN_PROTOCOL_VERSIONS


async def _ask_caller(
    ctx: ServerRequestContext[Any], needed: types.InputRequiredResult
) -> types.InputResponses:
    """Each input the upstream needs, asked of the caller as a request of its own related to
    the call (the handshake era's way), and its answer."""
    answers: types.InputResponses = {}
    related = ServerMessageMetadata(related_request_id=ctx.request_id)
    for key, request in (needed.input_requests or {}).items():
        kind: type[types.InputResponse] = (
            types.ElicitResult if isinstance(request, types.ElicitRequest)
            else types.ListRootsResult if isinstance(request, types.ListRootsRequest)
            else types.CreateMessageResultWithTools if request.params.tools
            else types.CreateMessageResult
        )  # fmt: skip
        answers[key] = await ctx.session.send_request(request, kind, metadata=related)
    return answers


def caller_of(ctx: ServerRequestContext[Any]) -> GatewayCaller:
    """The caller the HTTP front authenticated (a request that did not pass it has none)."""
    request = ctx.request
    state = getattr(request, "scope", {}).get("state", {}) if request is not None else {}
    who = state.get(SCOPE_KEY)
    if not isinstance(who, GatewayCaller):
        raise Error("unauthenticated")
    return who


def _tool_entity(server: str, name: str, definition: Mapping[str, Any]) -> Entity:
    """``Tool::"<server>/<name>"`` in its server. A tool the server marks read-only
    (``annotations.readOnlyHint``) is not state-changing; any other is."""
    annotations = definition.get("annotations")
    read_only = isinstance(annotations, Mapping) and annotations.get("readOnlyHint") is True
    attrs = {"name": name, "data_class": "internal", "state_changing": not read_only}
    return Entity(
        ref=EntityRef("Tool", f"{server}/{name}"), attrs=MappingProxyType(attrs),
        parents=(EntityRef("McpServer", server),),
    )  # fmt: skip


def _error(text: str, structured: Mapping[str, Any] | None = None) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)], is_error=True,
        structured_content=dict(structured) if structured is not None else None,
    )  # fmt: skip


def _refused(verdict: Verdict) -> types.CallToolResult:
    reasons = "; ".join(verdict.decision.reasons) or "no policy allows it"
    return _error(
        f"refused by Tether: {reasons} (decision {verdict.decision_id})",
        {"tether": {"effect": str(verdict.decision.effect), "decision_id": verdict.decision_id,
                    "reasons": list(verdict.decision.reasons)}},
    )  # fmt: skip


def _pending(auth_req_id: str, verdict: Verdict) -> types.CallToolResult:
    return _error(
        "approval pending: the person asked has not answered yet. Call the tool again with the "
        f'same arguments and _meta {{"{APPROVAL_META}": "{auth_req_id}"}} once they approve.',
        {"tether": {"effect": "approval_pending", "auth_req_id": auth_req_id,
                    "decision_id": verdict.decision_id}},
    )  # fmt: skip

"""The rest of an MCP server behind the gateway: resources, prompts, completion — checked.

What the model reads through them is as much an agent's action as a tool call, so each goes
through the checkpoint the same way:

* ``resources/list`` and ``resources/templates/list`` show what ``read_resource`` may read
  (``McpResource::"<server>/<uri or template>"`` in the server), ``prompts/list`` what
  ``get_prompt`` may get (``Prompt::"<server>/<name>"``) — one decision per candidate and
  **one** record per listing (:meth:`Checkpoint.check_listing`), as for tools;
* ``resources/read`` decides ``read_resource`` with the URI as its argument, ``prompts/get``
  ``get_prompt`` with the prompt's arguments, and ``completion/complete`` the action of what it
  completes (a prompt's arguments, or a resource template's), each recorded like a tool call;
  a refusal is a JSON-RPC error ``-32001`` carrying the reasons and the decision id;
* the request goes upstream as the client sent it, without its ``_meta`` (the caller's
  protocol metadata is not the upstream's business), with the injected credential.

``logging/setLevel`` and ``resources/subscribe`` make the caller's session a listener with an
upstream session of its own (:mod:`tether.enforcement.mcp._listeners`): the level is sent
upstream there, and the upstream's log notices and resource updates come back to this caller
only. Subscribing is decided as ``read_resource`` on the URI (arguments ``{"uri": …,
"subscribe": true}``), recorded like a read; unsubscribing is not decided. A stateless caller
(the 2026-07-28 era) has no session to relay to: its ``logging/setLevel`` is answered here and
not forwarded. Definitions of resources and prompts are not pinned (only tools are).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import Any, TypeVar

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel

from tether.checkpoint import Checkpoint, CheckRequest, Verdict
from tether.enforcement.mcp._upstreams import Listener, UpstreamPool
from tether.enforcement.mcp.models import Upstream
from tether.errors import Error
from tether.policy.models import Entity, EntityRef

__all__ = ["ENFORCEMENT_POINT", "REFUSED", "Relay", "server_entity"]

#: The JSON-RPC error code of a request Tether refused (the server-error range of JSON-RPC).
REFUSED = -32001
ENFORCEMENT_POINT = "mcp-gateway"

_R = TypeVar("_R", bound=BaseModel)
#: The caller's upstream and the caller's part of a check request, its resource the server.
Reach = Callable[[ServerRequestContext[Any]], Awaitable[tuple[Upstream, CheckRequest]]]
#: The credential to send ``upstream`` for the caller of a request (None: none).
Credential = Callable[[ServerRequestContext[Any], Upstream], Awaitable[str | None]]
#: The caller's listener (made when asked to, for a caller with a session), or None.
Listen = Callable[[ServerRequestContext[Any], bool], Listener | None]


def server_entity(server: str) -> Entity:
    """``McpServer::"<server>"``, the parent of its tools, resources and prompts."""
    return Entity(ref=EntityRef("McpServer", server), attrs=MappingProxyType({"name": server}))


def _resource(server: str, uri: str) -> Entity:
    return Entity(
        ref=EntityRef("McpResource", f"{server}/{uri}"),
        attrs=MappingProxyType({"name": uri, "data_class": "internal"}),
        parents=(EntityRef("McpServer", server),),
    )


def _prompt(server: str, name: str) -> Entity:
    return Entity(ref=EntityRef("Prompt", f"{server}/{name}"), attrs=MappingProxyType(
        {"name": name}), parents=(EntityRef("McpServer", server),))  # fmt: skip


def _refused(verdict: Verdict) -> MCPError:
    reasons = "; ".join(verdict.decision.reasons) or "no policy allows it"
    return MCPError(REFUSED, f"refused by Tether: {reasons} (decision {verdict.decision_id})",
                    {"effect": str(verdict.decision.effect),
                     "decision_id": verdict.decision_id})  # fmt: skip


def _without_meta(params: BaseModel | None) -> dict[str, Any]:
    if params is None:
        return {}
    return params.model_dump(by_alias=True, exclude_none=True, exclude={"meta"})


class Relay:
    """Handlers of the SDK server for everything but tools (see the module)."""

    def __init__(
        self,
        *,
        checkpoint: Checkpoint,
        pool: UpstreamPool,
        reach: Reach,
        credential: Credential,
        listen: Listen,
    ) -> None:
        self._checkpoint = checkpoint
        self._pool = pool
        #: The caller's upstream and the caller's part of a check request (once per request).
        self._reach = reach
        #: The credential to send upstream for the caller (taken only once a call is allowed).
        self._credential = credential
        #: The caller's listener: its requests go through the listener's upstream session.
        self._listen = listen

    async def _ask(
        self,
        ctx: ServerRequestContext[Any],
        upstream: Upstream,
        request: types.Request[Any, Any],
        result: type[_R],
    ) -> _R:
        try:
            secret = await self._credential(ctx, upstream)
        except Error as exc:
            raise MCPError(REFUSED, f"refused by Tether: {exc.message}") from exc
        try:
            async with self._pool.use(upstream, secret, self._listen(ctx, False)) as client:
                return await client.session.send_request(request, result)
        except Error as exc:
            raise MCPError(types.INTERNAL_ERROR, exc.message) from exc

    async def _visible(
        self, base: CheckRequest, listing: str, action: str, candidates: Sequence[Entity]
    ) -> set[str]:
        request = replace(base, action=listing)
        _, visible = await self._checkpoint.check_listing(request, candidates, action=action)
        return set(visible)

    async def _decide(
        self, base: CheckRequest, action: str, target: Entity, arguments: Any
    ) -> None:
        request = replace(base, action=action, resource=target, entities=(base.resource,),
                          arguments=arguments)  # fmt: skip
        verdict = await self._checkpoint.check(request)
        if not verdict.allowed:
            raise _refused(verdict)

    # -- resources -------------------------------------------------------------------------

    async def list_resources(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        upstream, base = await self._reach(ctx)
        page = await self._ask(ctx, upstream, types.ListResourcesRequest(
            params=types.PaginatedRequestParams(**_without_meta(params))),
            types.ListResourcesResult)  # fmt: skip
        entities = [_resource(upstream.name, r.uri) for r in page.resources]
        shown = await self._visible(base, "list_resources", "read_resource", entities)
        kept = [r for r, e in zip(page.resources, entities, strict=True) if e.ref.id in shown]
        return types.ListResourcesResult(resources=kept, next_cursor=page.next_cursor)

    async def list_resource_templates(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        upstream, base = await self._reach(ctx)
        page = await self._ask(ctx, upstream, types.ListResourceTemplatesRequest(
            params=types.PaginatedRequestParams(**_without_meta(params))),
            types.ListResourceTemplatesResult)  # fmt: skip
        entities = [_resource(upstream.name, t.uri_template) for t in page.resource_templates]
        shown = await self._visible(base, "list_resources", "read_resource", entities)
        kept = [t for t, e in zip(page.resource_templates, entities, strict=True)
                if e.ref.id in shown]  # fmt: skip
        return types.ListResourceTemplatesResult(
            resource_templates=kept, next_cursor=page.next_cursor
        )

    async def read_resource(
        self, ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        upstream, base = await self._reach(ctx)
        await self._decide(base, "read_resource", _resource(upstream.name, params.uri),
                           {"uri": params.uri})  # fmt: skip
        request = types.ReadResourceRequest(
            params=types.ReadResourceRequestParams(**_without_meta(params))
        )
        return await self._ask(ctx, upstream, request, types.ReadResourceResult)

    # -- prompts and completion ------------------------------------------------------------

    async def list_prompts(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        upstream, base = await self._reach(ctx)
        page = await self._ask(ctx, upstream, types.ListPromptsRequest(
            params=types.PaginatedRequestParams(**_without_meta(params))),
            types.ListPromptsResult)  # fmt: skip
        entities = [_prompt(upstream.name, p.name) for p in page.prompts]
        shown = await self._visible(base, "list_prompts", "get_prompt", entities)
        kept = [p for p, e in zip(page.prompts, entities, strict=True) if e.ref.id in shown]
        return types.ListPromptsResult(prompts=kept, next_cursor=page.next_cursor)

    async def get_prompt(
        self, ctx: ServerRequestContext[Any], params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        upstream, base = await self._reach(ctx)
        await self._decide(base, "get_prompt", _prompt(upstream.name, params.name),
                           dict(params.arguments or {}))  # fmt: skip
        request = types.GetPromptRequest(
            params=types.GetPromptRequestParams(**_without_meta(params))
        )
        return await self._ask(ctx, upstream, request, types.GetPromptResult)

    async def complete(
        self, ctx: ServerRequestContext[Any], params: types.CompleteRequestParams
    ) -> types.CompleteResult:
        upstream, base = await self._reach(ctx)
        ref = params.ref
        argument = {"argument": params.argument.name, "value": params.argument.value}
        if isinstance(ref, types.PromptReference):
            await self._decide(base, "get_prompt", _prompt(upstream.name, ref.name), argument)
        else:
            await self._decide(base, "read_resource", _resource(upstream.name, ref.uri), argument)
        request = types.CompleteRequest(params=types.CompleteRequestParams(**_without_meta(params)))
        return await self._ask(ctx, upstream, request, types.CompleteResult)

    async def subscribe_resource(
        self, ctx: ServerRequestContext[Any], params: types.SubscribeRequestParams
    ) -> types.EmptyResult:
        upstream, base = await self._reach(ctx)
        await self._decide(base, "read_resource", _resource(upstream.name, params.uri),
                           {"uri": params.uri, "subscribe": True})  # fmt: skip
        listener = self._listening(ctx)
        request = types.SubscribeRequest(params=types.SubscribeRequestParams(uri=params.uri))
        await self._ask(ctx, upstream, request, types.EmptyResult)
        listener.subscribed.add(params.uri)
        return types.EmptyResult()

    async def unsubscribe_resource(
        self, ctx: ServerRequestContext[Any], params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        upstream, _ = await self._reach(ctx)
        listener = self._listen(ctx, False)
        if listener is None or params.uri not in listener.subscribed:
            return types.EmptyResult()  # nothing to stop
        listener.subscribed.discard(params.uri)
        request = types.UnsubscribeRequest(params=types.UnsubscribeRequestParams(uri=params.uri))
        await self._ask(ctx, upstream, request, types.EmptyResult)
        return types.EmptyResult()

    async def set_logging_level(
        self, ctx: ServerRequestContext[Any], params: types.SetLevelRequestParams
    ) -> types.EmptyResult:
        upstream, _ = await self._reach(ctx)
        listener = self._listen(ctx, True)
        if listener is None:
            return types.EmptyResult()  # no session to relay notices to (see the module)
        request = types.SetLevelRequest(params=types.SetLevelRequestParams(level=params.level))
        try:
            await self._ask(ctx, upstream, request, types.EmptyResult)
        except MCPError as exc:
            if exc.error.code != types.METHOD_NOT_FOUND:
                raise
            return types.EmptyResult()  # the upstream has no logging: no notices will come
        listener.level = params.level
        return types.EmptyResult()

    def _listening(self, ctx: ServerRequestContext[Any]) -> Listener:
        listener = self._listen(ctx, True)
        if listener is None:
            raise MCPError(types.INVALID_REQUEST, "notices need a session (the handshake era)")
        return listener

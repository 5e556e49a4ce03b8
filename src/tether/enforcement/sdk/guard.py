"""``@tether.guard``: a check at the checkpoint before a function's body runs.

For the tool functions of any agent framework (LangChain's ``@tool``, LangGraph nodes, the
OpenAI Agents SDK's ``@function_tool``, or plain code): the decorated function keeps its
name, docstring and signature (``functools.wraps``), so frameworks that read them see the
original. Plain functions are checked with the blocking :class:`tether.Client`, coroutine
functions with :class:`tether.AsyncClient` — the one passed as ``client=``, else the one of
the innermost ``with client:`` block. No client, no answer within the client's timeout, or a
malformed answer: the body does not run (:class:`~tether.errors.CheckUnavailable`). A deny
raises :class:`~tether.errors.Denied` with the decision id and reasons.

The call's arguments go to the checkpoint (policies read them; an approval binds to their
digest): by default every bound argument, with values that are not JSON (a client, a
connection) named by their type only; ``arguments=`` picks them instead.

Example::

    @tether.guard(action="call_tool", resource={"type": "Tool", "id": "kb/search"})
    def search(query: str) -> list[str]: ...

    @tether.guard(action="write", resource=lambda a: {"type": "Api", "id": f"orders/{a['id']}"},
                  approval_wait=60, approver="alice")
    async def cancel_order(id: str) -> None: ...
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any, ParamSpec, TypeVar, cast

from tether.delegation.flows import ApprovalPending, Approved
from tether.enforcement.sdk._flows import Decision
from tether.enforcement.sdk.aio import AsyncClient, current_async_client
from tether.enforcement.sdk.client import Client, current_client
from tether.errors import CheckUnavailable

__all__ = ["guard"]

P = ParamSpec("P")
R = TypeVar("R")
Bound = Mapping[str, Any]
Resource = Mapping[str, Any] | Callable[[Bound], Mapping[str, Any]]
_JSON = (str, int, float, bool, type(None))


def guard(
    *,
    action: str,
    resource: Resource,
    client: Client | AsyncClient | None = None,
    arguments: Callable[[Bound], Any] | None = None,
    context: Mapping[str, Any] | None = None,
    approval_wait: float = 0.0,
    approver: str | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Check ``action`` on ``resource`` (``{"type", "id"}``, or a function of the call's
    bound arguments) before each call. With ``approval_wait`` > 0, a call that needs approval
    asks for it (the person of the delegated token in force, else ``approver``, one of the
    agent's owners) and waits up to that many seconds for it."""
    if approval_wait < 0:
        raise ValueError("approval_wait is a number of seconds, 0 or more")

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        call = _Call(
            fn, action=action, resource=resource, arguments=arguments, context=context,
            approval_wait=approval_wait, approver=approver,
        )  # fmt: skip
        if inspect.iscoroutinefunction(fn):
            return cast(Callable[P, R], _async_wrapper(fn, call, client))
        return _sync_wrapper(fn, call, client)

    return decorate


class _Call:
    """What one guarded function asks, computed from each call's bound arguments."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        action: str,
        resource: Resource,
        arguments: Callable[[Bound], Any] | None,
        context: Mapping[str, Any] | None,
        approval_wait: float,
        approver: str | None,
    ) -> None:
        self.signature = inspect.signature(fn)
        self.action = action
        self.resource = resource
        self.arguments = arguments
        self.context = dict(context or {})
        self.approval_wait = approval_wait
        #: Asked only when the call will wait for the answer (``approval_wait`` > 0).
        self.approval_request = (
            ({"login_hint": approver} if approver else {}) if approval_wait > 0 else None
        )

    def ask(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = bound.arguments
        resource = self.resource(values) if callable(self.resource) else self.resource
        picked = self.arguments(values) if self.arguments else _jsonable(values)
        return {
            "action": self.action, "resource": resource, "arguments": picked,
            "context": self.context, "approval_request": self.approval_request,
        }  # fmt: skip


def _sync_wrapper(
    fn: Callable[P, R], call: _Call, client: Client | AsyncClient | None
) -> Callable[P, R]:
    @functools.wraps(fn)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        who = client or current_client()
        if not isinstance(who, Client):
            raise CheckUnavailable("no Tether client for this call (with client: …): denied")
        asked = call.ask(args, kwargs)
        decision = who.check(**asked)
        if decision.effect == "approval_required" and call.approval_wait > 0:
            decision = _after_approval(who, decision, asked, call.approval_wait)
        decision.raise_if_denied()
        return fn(*args, **kwargs)

    return guarded


def _async_wrapper(
    fn: Callable[P, Awaitable[R]], call: _Call, client: Client | AsyncClient | None
) -> Callable[P, Awaitable[R]]:
    @functools.wraps(fn)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        who = client or current_async_client()
        if not isinstance(who, AsyncClient):
            raise CheckUnavailable("no Tether AsyncClient for this call (async with …): denied")
        asked = call.ask(args, kwargs)
        decision = await who.check(**asked)
        if decision.effect == "approval_required" and call.approval_wait > 0:
            decision = await _after_approval_async(who, decision, asked, call.approval_wait)
        decision.raise_if_denied()
        return await fn(*args, **kwargs)

    return guarded


def _after_approval(
    client: Client, decision: Decision, asked: dict[str, Any], wait: float
) -> Decision:
    """Wait for the approval the check started; approved: the same call checked again with
    the approval token (single use). Still pending: the first decision stands."""
    pending = _pending(decision)
    if pending is None:
        return decision
    answer = client.poll_approval(pending, wait=wait)
    if not isinstance(answer, Approved):
        return _with_pending(decision, answer)
    return client.check(**asked | {"approval_token": answer.access_token, "approval_request": None})


async def _after_approval_async(
    client: AsyncClient, decision: Decision, asked: dict[str, Any], wait: float
) -> Decision:
    pending = _pending(decision)
    if pending is None:
        return decision
    answer = await client.poll_approval(pending, wait=wait)
    if not isinstance(answer, Approved):
        return _with_pending(decision, answer)
    return await client.check(
        **asked | {"approval_token": answer.access_token, "approval_request": None}
    )


def _pending(decision: Decision) -> ApprovalPending | None:
    raw = decision.approval_pending
    if not raw or not isinstance(raw.get("auth_req_id"), str):
        return None
    return ApprovalPending(
        auth_req_id=raw["auth_req_id"],
        expires_in=int(raw.get("expires_in", 0)),
        interval=int(raw.get("interval", 5)),
    )


def _with_pending(decision: Decision, pending: ApprovalPending) -> Decision:
    return replace(
        decision,
        approval_pending={"auth_req_id": pending.auth_req_id, "expires_in": pending.expires_in,
                          "interval": pending.interval},
    )  # fmt: skip


def _jsonable(values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _value(v) for name, v in values.items()}


def _value(value: Any) -> Any:
    if isinstance(value, _JSON):
        return value
    if isinstance(value, list | tuple):
        return [_value(v) for v in value]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: _value(v) for k, v in value.items()}
    return {"$type": type(value).__qualname__}

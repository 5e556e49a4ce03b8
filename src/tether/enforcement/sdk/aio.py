"""``tether.AsyncClient``: the asynchronous twin of :class:`tether.Client`, for agents on an
event loop. The same flows (:mod:`tether.enforcement.sdk._flows`), driven with
``httpx.AsyncClient``; inside ``async with client:`` a task renews the agent's token and the
open leases, and leaving the block cancels it, revokes what is open and forgets the token.

Example::

    async with tether.AsyncClient(addr, agent=spiffe_id, key=pem) as c:
        decision = await c.check("call_tool", {"type": "Tool", "id": "kb/search"})
        async with c.lease("faq-db", "reader") as lease:
            ...
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import ssl
import time
from collections.abc import AsyncIterator, Generator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from tether.delegation.flows import ApprovalPending, Approved, HttpRequest, Pause, TokenSet
from tether.enforcement.sdk._base import (
    FINAL,
    Base,
    audience_of,
    failure_code,
    is_token_key,
    request_args,
    response_of,
    unreachable,
)
from tether.enforcement.sdk._flows import Decision, Lease
from tether.errors import Error

__all__ = ["AsyncClient", "current_async_client"]

T = TypeVar("T")
log = logging.getLogger("tether.sdk")
_CURRENT: contextvars.ContextVar[AsyncClient | None] = contextvars.ContextVar(
    "tether-async-client", default=None
)


def current_async_client() -> AsyncClient | None:
    """The client of the innermost ``async with client:`` block (None outside any)."""
    return _CURRENT.get()


class AsyncClient(Base):
    """An asynchronous client for one agent instance (one event loop)."""

    def __init__(
        self,
        addr: str,
        *,
        verify: ssl.SSLContext | str | bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
        **kwargs: Any,
    ) -> None:
        """The arguments of :class:`tether.Client`, with an asynchronous ``transport``."""
        super().__init__(addr, **kwargs)
        self._http = httpx.AsyncClient(timeout=self.timeout, verify=verify, transport=transport)
        self._fetching = asyncio.Lock()
        self._wake = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None
        self._entered: list[contextvars.Token[AsyncClient | None]] = []

    async def __aenter__(self) -> Self:
        self._entered.append(_CURRENT.set(self))
        if self._keeper is None:
            self._keeper = asyncio.create_task(self._keep(), name="tether-keeper")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        _CURRENT.reset(self._entered.pop())
        if not self._entered:
            await self.aclose()

    async def aclose(self) -> None:
        """Stop renewing, revoke every lease still open, forget the token, close HTTP."""
        if self._keeper is not None:
            keeper, self._keeper = self._keeper, None
            keeper.cancel()
            # Wait for it to end without taking its CancelledError for our own: a cancel of
            # the caller (a timeout around the block) still reaches the caller.
            await asyncio.wait({keeper})
        for lease_id in list(self.leases):
            await self._end_lease(lease_id, reason="the work ended")
        self.drop_tokens()
        await self._http.aclose()

    async def token(self, audience: str | None = None) -> str:
        """The agent instance's JWT-SVID for ``audience``, as :meth:`tether.Client.token`."""
        cached = self.cached_token(time.monotonic(), audience)
        if cached is not None:
            return cached
        async with self._fetching:
            cached = self.cached_token(time.monotonic(), audience)
            if cached is None:
                cached = await self._fetch_token(audience)
        return cached

    async def check(
        self,
        action: str,
        resource: Mapping[str, Any],
        *,
        arguments: Any = None,
        context: Mapping[str, Any] | None = None,
        entities: Sequence[Mapping[str, Any]] = (),
        approval_token: str | None = None,
        approval_request: Mapping[str, Any] | None = None,
    ) -> Decision:
        """The checkpoint's decision on ``action`` over ``resource`` (``{"type", "id"}``)."""
        return await self.run(
            self.check_flow(
                await self.token(), action=action, resource=resource, arguments=arguments,
                context=context, entities=entities, approval_token=approval_token,
                approval_request=approval_request,
            )
        )  # fmt: skip

    async def exchange(
        self,
        subject_token: str,
        *,
        scope: str | None = None,
        audience: str | None = None,
        grant_id: str | None = None,
    ) -> TokenSet:
        """RFC 8693, as :meth:`tether.Client.exchange`."""
        flow = self.exchange_flow(
            await self.token(), subject_token=subject_token, scope=scope, audience=audience,
            grant_id=grant_id,
        )  # fmt: skip
        return await self.run(flow)

    async def request_approval(
        self,
        details: Sequence[Mapping[str, Any]],
        *,
        hint: tuple[str, str],
        binding_message: str | None = None,
        wait: float = 0.0,
    ) -> Approved | ApprovalPending:
        """CIBA, as :meth:`tether.Client.request_approval`."""
        return await self.run(
            self.approval(details, hint=hint, binding_message=binding_message, wait=wait)
        )

    async def poll_approval(
        self, pending: ApprovalPending, *, wait: float = 0.0
    ) -> Approved | ApprovalPending:
        return await self.run(self.poll(pending, wait=wait))

    @asynccontextmanager
    async def lease(
        self, engine: str, role: str, *, ttl: int | None = None
    ) -> AsyncIterator[Lease]:
        """A just-in-time credential for this block, renewed while it runs, revoked at its
        end."""
        lease = await self.run(self.issue(await self.token(), engine=engine, role=role, ttl=ttl))
        self.keep_lease(lease, now=time.monotonic())
        self._wake.set()
        try:
            yield lease
        finally:
            await self._end_lease(lease.id, reason="the block using it ended")

    async def run(self, flow: Generator[HttpRequest | Pause, Any, T]) -> T:
        """Send each request ``flow`` yields and hand back the answer, until it returns."""
        step: HttpRequest | Pause = next(flow)
        while True:
            reply = None
            if isinstance(step, Pause):
                await asyncio.sleep(step.seconds)
            else:
                try:
                    sent = await self._http.request(step.method, step.url, **request_args(step))
                except httpx.TransportError as exc:
                    raise unreachable(exc, self.timeout) from None
                reply = response_of(sent)
            try:
                step = flow.send(reply)
            except StopIteration as done:
                result: T = done.value
                return result

    async def _fetch_token(self, audience: str | None = None) -> str:
        issued = await self.run(self.svid(audience))
        self.keep_token(
            issued.access_token, issued.expires_in, now=time.monotonic(), audience=audience
        )
        self._wake.set()
        return issued.access_token

    async def _keep(self) -> None:
        while True:
            wait = self.schedule.next_wake(time.monotonic())
            self._wake.clear()
            # asyncio.timeout, not wait_for: on Python 3.11, wait_for returns when the event
            # is set just as the keeper is cancelled, swallowing the cancel (CPython
            # gh-86296), and leaving the client's block then never returned.
            with suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            for key in self.schedule.due(time.monotonic()):
                await self._renew(key)

    async def _renew(self, key: str) -> None:
        try:
            if is_token_key(key):
                async with self._fetching:
                    await self._fetch_token(audience_of(key))
                return
            lease = self.leases.get(key)
            if lease is None:
                return
            renewed = await self.run(self.renew(await self.token(), lease))
            if key in self.leases:
                self.keep_lease(renewed, now=time.monotonic())
        except Error as exc:
            code = failure_code(exc)
            log.warning("tether: renewing %s failed (%s)", key, code)
            self.schedule.failed(key, now=time.monotonic(), final=code in FINAL)

    async def _end_lease(self, lease_id: str, *, reason: str) -> None:
        if lease_id not in self.leases:
            return
        self.drop_lease(lease_id)
        try:
            await self.run(self.revoke(await self.token(), lease_id, reason))
        except Error as exc:  # it still ends at its TTL; the reaper sees to that
            log.warning("tether: revoking lease %s failed (%s)", lease_id, exc.code)

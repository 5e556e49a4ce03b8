"""``tether.Client``: the blocking SDK for an agent (the asynchronous twin is
:class:`tether.AsyncClient`, in :mod:`tether.enforcement.sdk.aio`).

The agent authenticates with its own private key (``private_key_jwt``; no shared secret),
asks the checkpoint before it acts (:meth:`Client.check`, and :func:`tether.guard` on tool
functions), exchanges a person's token for a delegated one (RFC 8693), asks a person to
approve a call (CIBA), and takes just-in-time credentials as context managers that revoke on
exit. Inside ``with client:`` a background thread renews the agent's token and every open
lease before they expire; leaving the block stops it, revokes what is still open and forgets
the token. Any failure to get an answer in ``timeout`` seconds is a deny
(:class:`~tether.errors.CheckUnavailable`), never an allow.

Example::

    with tether.Client(addr, agent="spiffe://acme.org/agent/faq-bot", key="faq-bot.pem") as c:
        c.check("query", {"type": "Table", "id": "faq/public.answers"}).raise_if_denied()
        with c.lease("faq-db", "reader", ttl=300) as lease:
            connect(user=lease.credential["name"], password=lease.credential["secret"])
"""

from __future__ import annotations

import contextvars
import logging
import ssl
import threading
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
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

__all__ = ["Client", "current_client"]

T = TypeVar("T")
log = logging.getLogger("tether.sdk")
#: The client of the innermost ``with client:`` block (what :func:`tether.guard` uses).
_CURRENT: contextvars.ContextVar[Client | None] = contextvars.ContextVar(
    "tether-client", default=None
)


def current_client() -> Client | None:
    """The client of the innermost ``with client:`` block (None outside any)."""
    return _CURRENT.get()


class Client(Base):
    """A blocking client for one agent instance; thread-safe."""

    def __init__(
        self,
        addr: str,
        *,
        verify: ssl.SSLContext | str | bool = True,
        transport: httpx.BaseTransport | None = None,
        **kwargs: Any,
    ) -> None:
        """``agent``: its SPIFFE ID; ``key``: its private key (PEM bytes or a file);
        ``instance_id``: this running copy (a new one when omitted); ``timeout``: seconds
        before the SDK denies; ``verify``: the CA bundle (or SSL context) Tether's TLS
        certificate is checked with; ``transport``: an httpx transport (a Unix socket, a
        proxy)."""
        super().__init__(addr, **kwargs)
        self._http = httpx.Client(timeout=self.timeout, verify=verify, transport=transport)
        self._lock = threading.RLock()
        #: Wakes the keeper when something new is kept, or when the work ends.
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None
        self._entered: list[contextvars.Token[Client | None]] = []

    # -- the block of work -------------------------------------------------------------------

    def __enter__(self) -> Self:
        self._entered.append(_CURRENT.set(self))
        if self._keeper is None:
            self._stop.clear()
            self._keeper = threading.Thread(target=self._keep, name="tether-keeper", daemon=True)
            self._keeper.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        _CURRENT.reset(self._entered.pop())
        if not self._entered:
            self.close()

    def close(self) -> None:
        """Stop renewing, revoke every lease still open, forget the token."""
        with self._changed:
            self._stop.set()
            self._changed.notify_all()
        if self._keeper is not None and self._keeper is not threading.current_thread():
            self._keeper.join(timeout=self.timeout + 1)
        self._keeper = None
        for lease_id in list(self.leases):
            self._end_lease(lease_id, reason="the work ended")
        with self._lock:
            self.drop_tokens()
        self._http.close()

    # -- calls ----------------------------------------------------------------------------

    def token(self, audience: str | None = None) -> str:
        """The agent instance's JWT-SVID for ``audience`` (Tether itself when None; an MCP
        server behind the gateway is ``<addr>/mcp/<name>``), cached and renewed before it
        expires."""
        cached = self.cached_token(time.monotonic(), audience)
        if cached is not None:
            return cached
        with self._lock:
            cached = self.cached_token(time.monotonic(), audience)
            if cached is None:
                cached = self._fetch_token(audience)
        return cached

    def check(
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
        return self.run(
            self.check_flow(
                self.token(), action=action, resource=resource, arguments=arguments,
                context=context, entities=entities, approval_token=approval_token,
                approval_request=approval_request,
            )
        )  # fmt: skip

    def exchange(
        self,
        subject_token: str,
        *,
        scope: str | None = None,
        audience: str | None = None,
        grant_id: str | None = None,
    ) -> TokenSet:
        """RFC 8693: a person's token (or a delegated one) for a delegated token naming this
        instance as the actor, narrowed to ``scope`` and ``audience``."""
        flow = self.exchange_flow(
            self.token(), subject_token=subject_token, scope=scope, audience=audience,
            grant_id=grant_id,
        )  # fmt: skip
        return self.run(flow)

    def request_approval(
        self,
        details: Sequence[Mapping[str, Any]],
        *,
        hint: tuple[str, str],
        binding_message: str | None = None,
        wait: float = 0.0,
    ) -> Approved | ApprovalPending:
        """CIBA: ask the person ``hint`` names to approve ``details`` (RFC 9396 items); wait up
        to ``wait`` seconds for the answer."""
        return self.run(
            self.approval(details, hint=hint, binding_message=binding_message, wait=wait)
        )

    def poll_approval(
        self, pending: ApprovalPending, *, wait: float = 0.0
    ) -> Approved | ApprovalPending:
        return self.run(self.poll(pending, wait=wait))

    @contextmanager
    def lease(self, engine: str, role: str, *, ttl: int | None = None) -> Iterator[Lease]:
        """A just-in-time credential for this block: renewed in the background while the
        block runs (inside ``with client:``), revoked when it ends."""
        lease = self.run(self.issue(self.token(), engine=engine, role=role, ttl=ttl))
        with self._changed:
            self.keep_lease(lease, now=time.monotonic())
            self._changed.notify_all()
        try:
            yield lease
        finally:
            self._end_lease(lease.id, reason="the block using it ended")

    # -- the driver -----------------------------------------------------------------------

    def run(self, flow: Generator[HttpRequest | Pause, Any, T]) -> T:
        """Send each request ``flow`` yields and hand back the answer, until it returns."""
        step: HttpRequest | Pause = next(flow)
        while True:
            reply = None
            if isinstance(step, Pause):
                self._stop.wait(step.seconds)
            else:
                try:
                    sent = self._http.request(step.method, step.url, **request_args(step))
                except httpx.TransportError as exc:
                    raise unreachable(exc, self.timeout) from None
                reply = response_of(sent)
            try:
                step = flow.send(reply)
            except StopIteration as done:
                result: T = done.value
                return result

    # -- background renewal ---------------------------------------------------------------

    def _fetch_token(self, audience: str | None = None) -> str:
        issued = self.run(self.svid(audience))
        with self._changed:
            self.keep_token(
                issued.access_token, issued.expires_in, now=time.monotonic(), audience=audience
            )
            self._changed.notify_all()
        return issued.access_token

    def _keep(self) -> None:
        while True:
            with self._changed:
                if self._stop.is_set():
                    return
                self._changed.wait(self.schedule.next_wake(time.monotonic()))
                if self._stop.is_set():
                    return
                due = self.schedule.due(time.monotonic())
            for key in due:
                self._renew(key)

    def _renew(self, key: str) -> None:
        try:
            if is_token_key(key):
                with self._lock:
                    self._fetch_token(audience_of(key))
                return
            lease = self.leases.get(key)
            if lease is None:
                return
            renewed = self.run(self.renew(self.token(), lease))
            with self._lock:
                if key in self.leases:  # not ended meanwhile
                    self.keep_lease(renewed, now=time.monotonic())
        except Error as exc:
            code = failure_code(exc)
            log.warning("tether: renewing %s failed (%s)", key, code)
            with self._lock:
                self.schedule.failed(key, now=time.monotonic(), final=code in FINAL)

    def _end_lease(self, lease_id: str, *, reason: str) -> None:
        with self._lock:
            if lease_id not in self.leases:
                return
            self.drop_lease(lease_id)
        try:
            self.run(self.revoke(self.token(), lease_id, reason))
        except Error as exc:  # it still ends at its TTL; the reaper sees to that
            log.warning("tether: revoking lease %s failed (%s)", lease_id, exc.code)

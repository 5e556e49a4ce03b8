"""What the blocking and the asynchronous client share: the agent's identity, its token
state, the renewal schedule, the flows each call runs, and how an HTTP exchange becomes a
:class:`~tether.delegation.flows.HttpResponse`. Everything here is free of I/O; the two
clients only send and sleep.
"""

from __future__ import annotations

import contextvars
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from tether.delegation.flows import (
    ApprovalFlow,
    ApprovalPending,
    Flow,
    HttpRequest,
    HttpResponse,
    approval_flow,
    approval_poll_flow,
    token_exchange_flow,
)
from tether.enforcement.sdk._flows import (
    AgentKey,
    Decision,
    Lease,
    Step,
    check_flow,
    evaluation_body,
    lease_flow,
    renew_flow,
    revoke_flow,
    svid_flow,
)
from tether.enforcement.sdk._keeper import Schedule
from tether.errors import CheckUnavailable, Error

__all__ = [
    "DEFAULT_TIMEOUT",
    "FINAL",
    "TOKEN_KEY",
    "Base",
    "audience_of",
    "failure_code",
    "is_token_key",
    "request_args",
    "response_of",
    "token_key",
    "unreachable",
]

#: Seconds the SDK waits for an answer before it denies (``timeout=`` changes it).
DEFAULT_TIMEOUT = 2.0
#: The schedule's key for the client's own token; a token for another audience (an MCP
#: server behind the gateway, an API behind ext_authz) is ``token:<audience>``.
TOKEN_KEY = "token"
#: Renewal refusals that no retry can change: the lease is at its max TTL or gone, the
#: agent no longer active. The credential then lives out its TTL.
FINAL = frozenset({"lease_max_ttl_reached", "lease_not_found", "invalid_state_transition",
                   "forbidden", "denied", "token_invalid"})  # fmt: skip


@dataclass(frozen=True)
class _Token:
    value: str
    issued: float  # monotonic
    expires: float  # monotonic


class Base:
    """The state one client keeps; see :class:`tether.Client` for the public surface."""

    def __init__(
        self,
        addr: str,
        *,
        agent: str,
        key: bytes | str | Path,
        instance_id: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout is a positive number of seconds")
        pem = key if isinstance(key, bytes) else _read_key(key)
        self.addr = addr.rstrip("/")
        self.token_endpoint = f"{self.addr}/oauth2/token"
        self.key = AgentKey(
            spiffe_id=agent, private_key_pem=pem, instance_id=instance_id or _instance_id()
        )
        self.timeout = timeout
        self.schedule = Schedule()
        #: JWT-SVIDs by audience (None: Tether itself).
        self._tokens: dict[str | None, _Token] = {}
        self.leases: dict[str, Lease] = {}
        #: The delegated token checks are made with inside :meth:`acting_for`.
        self._acting: contextvars.ContextVar[str | None] = contextvars.ContextVar(
            f"tether-acting-{id(self)}", default=None
        )

    # -- the token -----------------------------------------------------------------------

    def cached_token(self, now: float, audience: str | None = None) -> str | None:
        """The token, while more than a sliver of its life is left."""
        token = self._tokens.get(audience)
        if token is None or now >= token.expires - min(5.0, (token.expires - token.issued) / 10):
            return None
        return token.value

    def svid(self, audience: str | None = None) -> Flow:
        return svid_flow(token_endpoint=self.token_endpoint, key=self.key, now=int(time.time()),
                         audience=audience)  # fmt: skip

    def keep_token(
        self, value: str, expires_in: int, *, now: float, audience: str | None = None
    ) -> None:
        expires = now + max(1, expires_in)
        self._tokens[audience] = _Token(value=value, issued=now, expires=expires)
        self.schedule.keep(token_key(audience), issued=now, expires=expires)

    def drop_tokens(self) -> None:
        for audience in list(self._tokens):
            self.schedule.drop(token_key(audience))
        self._tokens.clear()

    def bearer(self, own: str) -> str:
        """The token a check presents: the delegated one inside :meth:`acting_for`."""
        return self._acting.get() or own

    @contextmanager
    def acting_for(self, delegated_token: str) -> Iterator[None]:
        """Checks in this block present ``delegated_token`` (from :meth:`exchange`): the
        agent acting for a person, under their grant."""
        reset = self._acting.set(delegated_token)
        try:
            yield
        finally:
            self._acting.reset(reset)

    # -- flows -----------------------------------------------------------------------------

    def check_flow(self, token: str, **call: Any) -> Step[Decision]:
        return check_flow(addr=self.addr, token=self.bearer(token), body=evaluation_body(**call))

    def exchange_flow(
        self,
        own: str,
        *,
        subject_token: str,
        scope: str | None,
        audience: str | None,
        grant_id: str | None,
    ) -> Flow:
        return token_exchange_flow(
            token_endpoint=self.token_endpoint, subject_token=subject_token, actor_token=own,
            scope=scope, audience=audience, grant_id=grant_id,
        )  # fmt: skip

    def approval(
        self,
        details: Sequence[Mapping[str, Any]],
        *,
        hint: tuple[str, str],
        binding_message: str | None,
        wait: float,
    ) -> ApprovalFlow:
        return approval_flow(
            issuer=self.addr, authenticate=self._authenticate, details=details, hint=hint,
            binding_message=binding_message, wait=wait,
        )  # fmt: skip

    def poll(self, pending: ApprovalPending, *, wait: float) -> ApprovalFlow:
        return approval_poll_flow(
            issuer=self.addr, authenticate=self._authenticate, pending=pending, wait=wait
        )

    def _authenticate(self) -> Mapping[str, str]:
        return self.key.authentication(audience=self.token_endpoint, now=int(time.time()))

    def issue(self, token: str, *, engine: str, role: str, ttl: int | None) -> Step[Lease]:
        return lease_flow(addr=self.addr, token=token, engine=engine, role=role, ttl=ttl)

    def renew(self, token: str, lease: Lease) -> Step[Lease]:
        return renew_flow(addr=self.addr, token=token, lease=lease)

    def revoke(self, token: str, lease_id: str, reason: str) -> Step[None]:
        return revoke_flow(addr=self.addr, token=token, lease_id=lease_id, reason=reason)

    def keep_lease(self, lease: Lease, *, now: float) -> None:
        """Keep ``lease`` alive until its block ends: renewed at two thirds of its TTL."""
        self.leases[lease.id] = lease
        left = _seconds_left(lease.expires_at)
        if left is not None:
            self.schedule.keep(lease.id, issued=now, expires=now + left)

    def drop_lease(self, lease_id: str) -> None:
        self.leases.pop(lease_id, None)
        self.schedule.drop(lease_id)


def token_key(audience: str | None) -> str:
    """The schedule's key for the token of ``audience``."""
    return TOKEN_KEY if audience is None else f"{TOKEN_KEY}:{audience}"


def failure_code(exc: Error) -> str:
    """The server's own error code when it sent one (``lease_max_ttl_reached``), else the
    SDK's (``check_unavailable``)."""
    sent = exc.details.get("error")
    return sent if isinstance(sent, str) else exc.code


def is_token_key(key: str) -> bool:
    """Whether a schedule key names a token (lease ids start with ``lea_``)."""
    return key == TOKEN_KEY or key.startswith(f"{TOKEN_KEY}:")


def audience_of(key: str) -> str | None:
    """The audience of a token's schedule key (None: Tether itself)."""
    return None if key == TOKEN_KEY else key.removeprefix(f"{TOKEN_KEY}:")


def response_of(sent: httpx.Response) -> HttpResponse:
    body: Any = None
    if sent.content and "json" in sent.headers.get("content-type", ""):
        try:
            body = orjson.loads(sent.content)
        except orjson.JSONDecodeError:
            body = None
    return HttpResponse(status=sent.status_code, headers=sent.headers, body=body)


def request_args(request: HttpRequest) -> dict[str, Any]:
    """httpx keyword arguments for ``request`` (redirects are never followed)."""
    args: dict[str, Any] = {"headers": dict(request.headers), "follow_redirects": False}
    if request.form is not None:
        args["data"] = dict(request.form)
    elif request.json is not None:
        args["content"] = orjson.dumps(request.json)
        args["headers"]["Content-Type"] = "application/json"
    return args


def unreachable(exc: httpx.TransportError, timeout: float) -> CheckUnavailable:
    """No answer: the SDK denies (fail closed), saying why."""
    what = "did not answer within" if isinstance(exc, httpx.TimeoutException) else "unreachable;"
    return CheckUnavailable(
        f"Tether {what} {timeout:g} s: denied", details={"cause": type(exc).__name__}
    )


def _read_key(path: str | Path) -> bytes:
    return Path(path).read_bytes()


def _instance_id() -> str:
    return f"sdk-{uuid.uuid4().hex[:12]}"


def _seconds_left(expires_at: str | None) -> float | None:
    if not expires_at:
        return None
    return datetime.fromisoformat(expires_at).timestamp() - time.time()

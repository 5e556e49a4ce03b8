"""The agent's side of Tether as sans-I/O flows: its own token (``client_credentials`` with
``private_key_jwt``, RFC 7523), a decision at the checkpoint (AuthZEN evaluation), and leases
(issue, renew, revoke).

Each flow is a generator in the shape of :mod:`tether.delegation.flows` — it yields the
:class:`~tether.delegation.flows.HttpRequest` to send and receives the
:class:`~tether.delegation.flows.HttpResponse` — so the blocking and the asynchronous client
(:mod:`tether.enforcement.sdk.client`) drive the very same protocol code, and the pure parts
are tested without a network. No I/O and no clock here: ``now`` is passed in.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tether.crypto.assertion import sign_client_assertion
from tether.delegation.flows import (
    Flow,
    FlowError,
    HttpRequest,
    HttpResponse,
    Pause,
    token_set,
)
from tether.errors import (
    ApprovalRequired,
    CheckUnavailable,
    Denied,
    Error,
    InvalidInput,
    TokenInvalid,
)

__all__ = [
    "ASSERTION_TYPE",
    "AgentKey",
    "Decision",
    "Lease",
    "Step",
    "check_flow",
    "lease_flow",
    "renew_flow",
    "revoke_flow",
    "svid_flow",
]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
T = TypeVar("T")
#: What a flow yields (a request, or a pause for the approval poll) and receives back.
Step = Generator[HttpRequest | Pause, HttpResponse | None, T]


@dataclass(frozen=True, kw_only=True, repr=False)
class AgentKey:
    """Who the agent is: its SPIFFE ID (the OAuth ``client_id``), the private key it was
    registered with (PEM), and the id of this running instance."""

    spiffe_id: str
    private_key_pem: bytes
    instance_id: str

    def __repr__(self) -> str:  # the key never reaches a log line
        return f"AgentKey(spiffe_id={self.spiffe_id!r}, instance_id={self.instance_id!r})"

    def authentication(self, *, audience: str, now: int) -> dict[str, str]:
        """Fresh client authentication fields (an assertion is single use)."""
        assertion = sign_client_assertion(
            self.private_key_pem, client_id=self.spiffe_id, audience=audience, now=now
        )
        return {
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
            "instance_id": self.instance_id,
        }


@dataclass(frozen=True, kw_only=True)
class Decision:
    """The checkpoint's answer: never a bare bool."""

    allowed: bool
    effect: str
    decision_id: str
    call_digest: str | None = None
    reasons: tuple[str, ...] = ()
    policy_ids: tuple[str, ...] = ()
    #: When the SDK asked for it to be started: the approval request to poll.
    approval_pending: Mapping[str, Any] | None = None

    def raise_if_denied(self) -> None:
        """Raise :class:`~tether.errors.Denied` (or :class:`~tether.errors.ApprovalRequired`)
        unless the call is allowed."""
        if self.allowed:
            return
        details: dict[str, Any] = {"decision_id": self.decision_id, "effect": self.effect,
                                   "reasons": list(self.reasons),
                                   "policy_ids": list(self.policy_ids)}  # fmt: skip
        why = "; ".join(self.reasons) or "no policy permits it"
        if self.effect == "approval_required":
            details["call_digest"] = self.call_digest
            if self.approval_pending:
                details["auth_req_id"] = self.approval_pending.get("auth_req_id")
            raise ApprovalRequired(f"the call needs approval ({why})", details=details)
        raise Denied(f"denied: {why}", details=details)


@dataclass(frozen=True, kw_only=True, repr=False)
class Lease:
    """A just-in-time credential: the lease's facts and, once, its secret."""

    id: str
    engine: str
    role: str
    expires_at: str | None
    max_expires_at: str | None
    #: The credential as the engine hands it out (``name``, ``secret`` and the engine's facts,
    #: such as ``host``, ``port`` and ``database`` for PostgreSQL).
    credential: Mapping[str, Any] = field(default_factory=dict)
    decision_id: str | None = None

    def __repr__(self) -> str:  # the secret never reaches a log line
        return f"Lease(id={self.id!r}, engine={self.engine!r}, role={self.role!r})"


def svid_flow(*, token_endpoint: str, key: AgentKey, now: int, audience: str | None = None) -> Flow:
    """RFC 6749 §4.4 with ``private_key_jwt``: the instance's JWT-SVID (for ``audience``, or
    for Tether itself)."""
    form = {"grant_type": "client_credentials",
            **key.authentication(audience=token_endpoint, now=now)}  # fmt: skip
    if audience is not None:
        form["audience"] = audience
    response = yield HttpRequest(method="POST", url=token_endpoint, form=form)
    try:
        return token_set(response)
    except FlowError as refused:
        raise TokenInvalid(
            f"the agent could not authenticate: {refused.message}",
            details={"error": refused.error or "server_error"},
        ) from None


def evaluation_body(
    *,
    action: str,
    resource: Mapping[str, Any],
    arguments: Any = None,
    context: Mapping[str, Any] | None = None,
    entities: Sequence[Mapping[str, Any]] = (),
    approval_token: str | None = None,
    approval_request: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An AuthZEN evaluation of ``action`` on ``resource`` (``{"type", "id"}``)."""
    if not isinstance(resource.get("type"), str) or not isinstance(resource.get("id"), str):
        raise InvalidInput('a resource is {"type": …, "id": …}')
    ctx: dict[str, Any] = dict(context or {})
    if entities:
        ctx["entities"] = [dict(e) for e in entities]
    if approval_token is not None:
        ctx["approval_token"] = approval_token
    if approval_request is not None:
        ctx["approval_request"] = dict(approval_request)
    action_in: dict[str, Any] = {"name": action}
    if arguments is not None:
        action_in["properties"] = {"arguments": arguments}
    return {"action": action_in, "resource": dict(resource), "context": ctx}


def check_flow(*, addr: str, token: str, body: Mapping[str, Any]) -> Step[Decision]:
    """One decision for the bearer of ``token``; a server that cannot answer is a deny
    (:class:`~tether.errors.CheckUnavailable`), never an allow."""
    response = yield HttpRequest(
        method="POST",
        url=f"{addr}/access/v1/evaluation?explain=true",
        headers={"Authorization": f"Bearer {token}"},
        json=body,
    )
    return decision_of(response)


def decision_of(response: HttpResponse | None) -> Decision:
    """The decision an evaluation answered; anything but a well-formed 200 is raised."""
    body = _body(response)
    status = response.status if response is not None else 0
    if status == 401:
        raise TokenInvalid("the checkpoint refused the agent's token", details=_error(body))
    if status != 200:
        raise CheckUnavailable(
            f"the checkpoint answered {status}: denied", details={"status": status, **_error(body)}
        )
    context = body.get("context")
    if not isinstance(body.get("decision"), bool) or not isinstance(context, Mapping):
        raise CheckUnavailable("the checkpoint's answer is malformed: denied")
    return Decision(
        allowed=body["decision"] is True,
        effect=str(context.get("effect", "deny")),
        decision_id=str(context.get("id", "")),
        call_digest=context.get("call_digest"),
        reasons=tuple(str(r) for r in context.get("reasons", ())),
        policy_ids=tuple(str(p) for p in context.get("policy_ids", ())),
        approval_pending=context.get("approval_pending"),
    )


def lease_flow(
    *, addr: str, token: str, engine: str, role: str, ttl: int | None = None
) -> Step[Lease]:
    """``POST /v1/leases``: a lease for the calling instance (decided as ``use_credential``)."""
    body: dict[str, Any] = {"engine": engine, "role": role}
    if ttl is not None:
        body["ttl"] = ttl
    response = yield _json_request(addr, "/v1/leases", token, body)
    answer = _ok(response, 201)
    credential = answer.get("credential")
    return _lease(
        answer.get("lease"),
        credential if isinstance(credential, Mapping) else {},
        answer.get("decision_id"),
    )


def renew_flow(*, addr: str, token: str, lease: Lease, ttl: int | None = None) -> Step[Lease]:
    """Renew ``lease`` (up to its max TTL); the secret is kept, not sent again."""
    body = {"ttl": ttl} if ttl is not None else {}
    response = yield _json_request(addr, f"/v1/leases/{lease.id}/renew", token, body)
    return _lease(_ok(response, 200), lease.credential, lease.decision_id)


def revoke_flow(*, addr: str, token: str, lease_id: str, reason: str) -> Step[None]:
    response = yield _json_request(addr, f"/v1/leases/{lease_id}/revoke", token, {"reason": reason})
    _ok(response, 200)


def _json_request(addr: str, path: str, token: str, body: Mapping[str, Any]) -> HttpRequest:
    return HttpRequest(
        method="POST", url=f"{addr}{path}", headers={"Authorization": f"Bearer {token}"},
        json=dict(body),
    )  # fmt: skip


def _lease(facts: Any, credential: Mapping[str, Any], decision_id: Any) -> Lease:
    if not isinstance(facts, Mapping) or not isinstance(facts.get("id"), str):
        raise Error("the lease answer is malformed")
    return Lease(
        id=facts["id"],
        engine=str(facts.get("engine", "")),
        role=str(facts.get("role", "")),
        expires_at=facts.get("expires_at"),
        max_expires_at=facts.get("max_expires_at"),
        credential=dict(credential),
        decision_id=decision_id if isinstance(decision_id, str) else None,
    )


def _body(response: HttpResponse | None) -> Mapping[str, Any]:
    body = response.body if response is not None else None
    return body if isinstance(body, Mapping) else {}


def _error(body: Mapping[str, Any]) -> dict[str, Any]:
    error = body.get("error")
    code = error.get("code") if isinstance(error, Mapping) else error
    return {"error": code} if isinstance(code, str) else {}


def _ok(response: HttpResponse | None, status: int) -> Mapping[str, Any]:
    """The body of an expected answer; Tether's error body raised as a Denied (403) or an
    Error with its code otherwise."""
    body = _body(response)
    got = response.status if response is not None else 0
    if got == status:
        return body
    error = body.get("error")
    message = str(error.get("message")) if isinstance(error, Mapping) else f"answered {got}"
    details = {"status": got, "error": _error(body).get("error", "error")}
    if got == 401:
        raise TokenInvalid(message, details=details)
    if got == 403:
        raise Denied(message, details=details)
    raise Error(message, details=details)

"""The checkpoint: the one decision pipeline every enforcement point calls.

An MCP tool call, an HTTP request behind Envoy, an SDK-guarded function and an AuthZEN
evaluation all come here, so they are checked, audited and (later) monitored the same way:

1. **authenticate** the presented token: a JWT-SVID Tether issued (ES256 only, ``exp``/``nbf``
   with a 30 s leeway, ``aud`` = Tether, issuer, certificate binding) from an active agent, or
   a delegated token (RFC 8693, ``typ`` ``at+jwt``) for this enforcement point's audience
   whose actor is an active agent instance, whose user is active and whose grants are in
   force (:mod:`tether.delegation.tokens`). A user's own token presented here is
   **impersonation**: denied, and an ``impersonation`` event is published;
2. **refuse at once** what no policy may allow: an inactive agent (also a shipped ``forbid``),
   a delegation chain deeper than allowed;
3. **decide** with the policy set in force (:class:`~tether.policy.service.PolicySets`);
4. on ``approval_required``, answer with what the caller needs to start an approval: the
   obligations and the digest of this exact call. An approval token (CIBA,
   :mod:`tether.delegation.approvals`) presented with the call proves the approval when it
   approves exactly this call, for this instance and user; the allow it gives spends it;
5. **append the decision record durably before answering** — allow or not. If the record
   cannot be written within ``audit_timeout`` seconds the answer is deny
   (``audit_unavailable``): no audit, no access;
6. **publish** a ``decision`` event for monitoring (:mod:`tether.monitor.events`: bounded,
   never waits — a lagging monitor loses events, it never slows a decision).

Example::

    verdict = await checkpoint.check(CheckRequest(token=svid, action="call_tool",
                                                  resource=tool_entity, arguments={"q": "hours"},
                                                  enforcement_point="authzen"))
    verdict.decision.effect   # Effect.ALLOW / DENY / APPROVAL_REQUIRED
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from tether._internal.canonical import call_digest_of, canonical_json
from tether._internal.clock import Clock
from tether._internal.ids import new_id
from tether._internal.kept import KeptFor
from tether.audit.records import AuditRecord, Outcome
from tether.audit.redact import Redactor
from tether.audit.sink import AuditSink
from tether.checkpoint._entities import PROVEN, agent_context, agent_entity
from tether.checkpoint._forms import RecordForms
from tether.crypto.jwt import declared_type, unverified_subject
from tether.delegation.approval_gate import ApprovalGate
from tether.delegation.token_exchange import delegation_facts
from tether.delegation.tokens import AccessTokens, Delegation, ProvenApproval, user_entity
from tether.errors import Error, Forbidden, InvalidInput, Unauthenticated
from tether.identity.directory import AgentDirectory
from tether.identity.models import Agent
from tether.identity.names import parse_agent_spiffe_id
from tether.identity.svid import AgentCaller, SvidIssuer
from tether.monitor.events import Event, EventStream
from tether.policy.engine import APPROVAL, PolicyEngine
from tether.policy.models import Decision, DecisionRequest, Effect, Entity, EntityRef
from tether.policy.service import PolicySets

__all__ = ["CheckRequest", "Checkpoint", "Verdict", "agent_entity"]

#: Delegation deeper than this is refused before any policy runs (by default: the server
#: passes ``max_delegation_depth``).
MAX_ACT_DEPTH = 4
#: Agents whose policy entity is kept (beyond this the cache starts over).
MAX_PRINCIPALS = 10_000


@dataclass(frozen=True, kw_only=True)
class CheckRequest:
    """What an enforcement point asks: may the bearer of ``token`` do ``action`` on
    ``resource`` (with ``arguments``)? ``entities`` are the resource's parents and other
    entities policies may read; ``context`` adds to the delegation context (never overrides
    what the token proves)."""

    token: str
    action: str
    resource: Entity
    enforcement_point: str
    certificate_thumbprint: str | None = None
    arguments: Any = None
    entities: tuple[Entity, ...] = ()
    context: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    correlation_id: str | None = None
    #: Who the enforcement point says is asking (an agent name or SPIFFE ID); must match the
    #: token, or the answer is deny.
    subject: str | None = None
    #: The enforcement point's own identifier, which the token (a delegated token or a
    #: JWT-SVID) must be minted for (its ``aud``); Tether's issuer when not given.
    audience: str | None = None
    #: An approval token for this exact call (single use).
    approval_token: str | None = None
    #: Why the enforcement point refuses the call itself (a quarantined tool): the caller is
    #: authenticated and the refusal recorded as the decision, no policy asked.
    refusal: str | None = None


@dataclass(frozen=True, kw_only=True)
class Verdict:
    decision_id: str
    decision: Decision
    call_digest: str
    caller: AgentCaller | None = None
    #: What a delegated token proved (the user, the grant in force); None for an agent's own
    #: token.
    delegation: Delegation | None = None
    #: Set when the decision could not be recorded (the caller should answer 503).
    audit_failed: bool = False

    @property
    def allowed(self) -> bool:
        return self.decision.allowed and not self.audit_failed


class Checkpoint:
    def __init__(
        self,
        *,
        svids: SvidIssuer,
        policies: PolicySets,
        engine: PolicyEngine,
        audit: AuditSink,
        clock: Clock,
        directory: AgentDirectory | None = None,
        events: EventStream | None = None,
        audit_timeout: float = 2.0,
        redactor: Redactor | None = None,
        tokens: AccessTokens | None = None,
        max_depth: int = MAX_ACT_DEPTH,
        approvals: ApprovalGate | None = None,
        current: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        #: Makes sure the state decided from is current (a replica that was paused resyncs
        #: first), or raises — before every decision; None: nothing to check (one process).
        self._current = current
        self._tokens = tokens
        self._approvals = approvals
        self._max_depth = max_depth
        # Without a deployment key, a key of this process: values are hidden all the same.
        self._redactor = redactor or Redactor(secrets.token_bytes(32))
        self._directory = directory
        self._events = events
        self._principals: KeptFor[str, Agent, Entity] = KeptFor(limit=MAX_PRINCIPALS)
        #: The evaluated request as the record keeps it, sensitive values as their HMAC.
        self._forms = RecordForms(self._redactor)
        self._svids = svids
        self._policies = policies
        self._engine = engine
        self._audit = audit
        self._clock = clock
        self._audit_timeout = audit_timeout

    async def check(self, request: CheckRequest) -> Verdict:
        started = time.perf_counter()
        decision_id = new_id("dec")
        # The arguments in canonical form: what the digest covers and what policies read.
        # Arguments JSON cannot carry exactly (a number beyond I-JSON's 2^53, a lone
        # surrogate) are refused once the caller is known, and the refusal recorded.
        unfit: InvalidInput | None = None
        try:
            arguments = canonical_json(request.arguments)
        except InvalidInput as exc:
            arguments, unfit = b"null", exc
        digest = call_digest_of(request.action, _uid(request.resource.ref), arguments)
        caller: AgentCaller | None = None
        delegation: Delegation | None = None
        outcome = _Outcome(request=request, decision=Decision.deny("unauthenticated"))
        try:
            caller, delegation = await self._authenticate(request)
        except Error as exc:
            outcome.decision = Decision.deny(f"unauthenticated: {exc.message}")
            outcome.refusal = _unauthenticated(request, exc)
            if exc.details.get("reason") == "impersonation":
                outcome.decision = Decision.deny(f"impersonation: {exc.message}")
                self._publish("impersonation", _impersonation(request, exc))
        else:
            if unfit is None:
                await self._evaluate(outcome, caller, delegation, digest, arguments)
            else:
                outcome.refuse(unfit)
        decision, request = outcome.decision, outcome.request
        refusal = outcome.refusal or _refusal_of(decision)
        if decision.effect is Effect.APPROVAL_REQUIRED:
            decision = replace(decision, details=MappingProxyType({"call_digest": digest}))
        details = self._details(decision_id, request, caller, decision, digest)
        approval = outcome.approval
        if approval is not None and APPROVAL in decision.obligations:  # the approval counted
            details |= {"approval_id": approval.id, "approver": approval.approver}
        try:
            recorded = await self._record(request, caller, decision, details, outcome.evaluated)
        except InvalidInput as exc:  # what was evaluated cannot be put in canonical JSON
            decision = Decision.deny(exc.message)
            refusal = {"refusal": exc.code}
            details = self._details(decision_id, request, caller, decision, digest)
            recorded = await self._record_plain(request, caller, decision, details)
        if not recorded:
            decision = Decision.deny("audit_unavailable: the decision could not be recorded")
        data = details | refusal | {"effect": str(decision.effect), "audit_failed": not recorded}
        data["elapsed"] = time.perf_counter() - started
        self._publish("decision", data)
        return Verdict(
            decision_id=decision_id,
            decision=decision,
            call_digest=digest,
            caller=caller,
            delegation=delegation,
            audit_failed=not recorded,
        )

    async def _evaluate(
        self,
        outcome: _Outcome,
        caller: AgentCaller,
        delegation: Delegation | None,
        digest: str,
        arguments: bytes,
    ) -> None:
        """Decide for an authenticated caller, into ``outcome``; any failure is a deny."""
        try:
            request = outcome.request = await self._known_agents(outcome.request)
            approval = outcome.approval = await self._approval(request, caller, delegation, digest)
            outcome.decision, outcome.evaluated = self._decide(
                caller, request, digest, arguments, delegation=delegation, approval=approval
            )
            if self._approvals is not None:
                outcome.decision = await self._approvals.spend(approval, outcome.decision)
        except Error as exc:
            outcome.refuse(exc)
        except Exception as exc:  # noqa: BLE001 - an engine fault is a recorded deny
            outcome.decision = Decision.deny(f"engine error: {type(exc).__name__}")
            outcome.refusal = {"refusal": "engine_error"}

    async def check_listing(
        self, request: CheckRequest, candidates: Sequence[Entity], *, action: str
    ) -> tuple[Verdict, tuple[str, ...]]:
        """What of ``request.resource`` (an MCP server being listed) the caller may see: one
        authentication, one decision of ``action`` per candidate (its tools, no arguments)
        and **one** record naming the ids of the visible ones — those not denied (a tool that
        needs an approval is shown: it can be called with one). Nothing is visible when the
        caller is refused or the record cannot be written."""
        decision_id = new_id("dec")
        digest = call_digest_of(request.action, _uid(request.resource.ref), b"null")
        caller: AgentCaller | None = None
        visible: list[str] = []
        try:
            caller, delegation = await self._authenticate(request)
            for candidate in candidates:
                each = replace(request, action=action, resource=candidate, arguments=None)
                answer, _ = self._decide(caller, each, digest, b"null", delegation=delegation)
                if answer.effect is not Effect.DENY:
                    visible.append(candidate.ref.id)
            decision = Decision(effect=Effect.ALLOW, reasons=(f"{len(visible)} visible",),
                                policy_version=self._policies.current.version)  # fmt: skip
        except Error as exc:
            decision, visible = Decision.deny(exc.message), []
        details = self._details(decision_id, request, caller, decision, digest)
        recorded = await self._record(request, caller, decision, details | {"visible": visible},
                                      None)  # fmt: skip
        verdict = Verdict(decision_id=decision_id, decision=decision, call_digest=digest,
                          caller=caller, audit_failed=not recorded)  # fmt: skip
        return verdict, tuple(visible) if recorded else ()

    def _publish(self, type: str, data: Mapping[str, Any]) -> None:
        if self._events is None:
            return
        # Shared by every subscriber: immutable all the way down.
        frozen = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        self._events.publish(
            Event(type=type, time=self._clock.now().timestamp(), data=MappingProxyType(frozen))
        )

    async def identify(self, request: CheckRequest) -> tuple[AgentCaller, Delegation | None]:
        """Step 1 alone, for an enforcement point that must know the caller before it can
        ask (the MCP gateway binds its sessions to it): ``Unauthenticated`` (or another
        ``Error``) when the token does not prove an active agent instance."""
        return await self._authenticate(request)

    async def _authenticate(self, request: CheckRequest) -> tuple[AgentCaller, Delegation | None]:
        """The calling instance, from its JWT-SVID or from a delegated token (told apart by
        the signed ``typ`` header, then verified as that kind only) — against state shown to
        be current first (``StoreUnavailable`` when it cannot be)."""
        if self._current is not None:
            await self._current()
        typ = declared_type(request.token)  # an unreadable one: the SVID path refuses it
        if self._tokens is not None and self._tokens.is_external(request.token):
            await self._tokens.external_user(request.token)  # only a valid one is flagged
            raise Unauthenticated(
                "a user's token from an external provider, presented without an actor",
                details={"reason": "impersonation"},
            )
        if typ != "AT+JWT":
            caller = await self._svids.verify_agent_token(
                request.token,
                certificate_thumbprint=request.certificate_thumbprint,
                audience=request.audience,
            )
            return caller, None
        if self._tokens is None or self._directory is None:
            raise Unauthenticated("delegated tokens are not accepted here")
        audience = request.audience or self._svids.issuer
        delegation = await self._tokens.delegation(request.token, audience=audience)
        instance = delegation.chain[0]
        ref = parse_agent_spiffe_id(instance, trust_domain=self._svids.trust_domain)
        agent = await self._directory.get(ref.name)
        if agent is None or ref.instance_id is None or not agent.can_authenticate:
            raise Unauthenticated("the acting agent is not active")
        bound = delegation.claims.claims.get("cnf")
        if bound is not None:
            want = bound.get("x5t#S256") if isinstance(bound, Mapping) else None
            if not want or want != request.certificate_thumbprint:
                raise Unauthenticated("this token is bound to a client certificate")
        caller = AgentCaller(
            agent=agent, instance_id=ref.instance_id, spiffe_id=instance,
            claims=delegation.claims,
        )  # fmt: skip
        return caller, delegation

    def act_for(self, agent: Agent, user: str, context: Mapping[str, Any]) -> Decision:
        """May ``agent`` act for ``user`` (token exchange), by the policy set in force."""
        compiled = self._policies.current
        if self._policies.refused_version is not None:
            return Decision.deny("the active policy set cannot be compiled here")
        person = user_entity(user)
        evaluated = DecisionRequest(
            principal=self._principal(agent),
            action="act_for",
            resource=person,
            context={**context, "user": person.ref},
        )
        return self._engine.decide(compiled, evaluated)

    def _decide(
        self,
        caller: AgentCaller,
        request: CheckRequest,
        digest: str,
        arguments: bytes,
        *,
        delegation: Delegation | None = None,
        approval: ProvenApproval | None = None,
    ) -> tuple[Decision, DecisionRequest | None]:
        """The decision, and the request the engine evaluated (None when refused before)."""
        compiled = self._policies.current
        unusable = self._policies.refused_version
        if unusable is not None:
            why = f"the active policy set v{unusable} cannot be compiled here"
            unusable_set = Decision.deny(why, policy_version=compiled.version)
            return replace(unusable_set, details=_POLICY_UNUSABLE), None
        named = {caller.spiffe_id, caller.agent.spiffe_id, caller.agent.name}
        if request.subject is not None and request.subject not in named:
            refused = "the subject does not match the presented token"
            return Decision.deny(refused, policy_version=compiled.version), None
        if not caller.agent.can_authenticate:
            refused = f"agent is {caller.agent.state}"
            return Decision.deny(refused, policy_version=compiled.version), None
        context = self._context(caller, request, digest, arguments)
        entities = request.entities
        if delegation is not None:
            context |= delegation.policy_context()
            entities = (*entities, user_entity(delegation.user))
        if approval is not None:
            context["approval"] = approval.policy_context()
        depth = context["act_depth"]
        if not isinstance(depth, int) or depth > self._max_depth:
            too_deep = Decision.deny(f"delegation chain deeper than {self._max_depth}",
                                     policy_version=compiled.version)  # fmt: skip
            return replace(too_deep, details=_CHAIN_TOO_DEEP), None
        evaluated = DecisionRequest(
            principal=self._principal(caller.agent),
            action=request.action,
            resource=request.resource,
            context=context,
            entities=entities,
        )
        return self._engine.decide(compiled, evaluated), evaluated

    async def _approval(
        self, request: CheckRequest, caller: AgentCaller, delegation: Delegation | None, digest: str
    ) -> ProvenApproval | None:
        if self._approvals is None or request.approval_token is None:
            return None
        user = delegation.user if delegation is not None else None
        return await self._approvals.proven(
            request.approval_token, call_digest=digest, caller=caller, user=user
        )

    def _principal(self, agent: Agent) -> Entity:
        """The agent's entity, built once per registry record: the directory hands out the
        same (immutable) record until it reads the agent again (at once after a change on
        this replica or a change note, else after ``agent_cache_seconds``), so the same
        entity object is reused and the engine can reuse what it derived from it."""
        return self._principals.derived(agent.name, agent, agent_entity)

    async def _known_agents(self, request: CheckRequest) -> CheckRequest:
        """Agents are described by the registry, never by the caller: an ``Agent`` resource
        (``invoke_agent``) is replaced by the registry's record; other ``Agent`` entities are
        refused."""
        if request.refusal is not None:  # the enforcement point refused it: recorded as such
            raise Forbidden(request.refusal)
        if any(e.ref.type == "Agent" for e in request.entities):
            raise InvalidInput("agents are described by the registry, not in the request")
        if request.resource.ref.type != "Agent":
            return request
        if self._directory is None:
            raise InvalidInput("agent resources need the registry")
        target = await self._directory.get(request.resource.ref.id)
        if target is None:
            raise InvalidInput(f"no agent named {request.resource.ref.id!r}")
        return replace(request, resource=agent_entity(target))

    def _context(
        self, caller: AgentCaller, request: CheckRequest, digest: str, arguments: bytes
    ) -> dict[str, Any]:
        supplied = {k: v for k, v in request.context.items() if k not in PROVEN}
        claims = caller.claims.claims
        scope = claims.get("scope")
        proven = agent_context(
            now=self._clock.timestamp(),
            instance=caller.instance_id,
            scopes=set(scope.split()) if isinstance(scope, str) else set(),
        )
        proven["call_digest"] = digest
        if request.arguments is not None:
            proven["arguments"] = arguments.decode()
        return supplied | proven

    def _details(
        self,
        decision_id: str,
        request: CheckRequest,
        caller: AgentCaller | None,
        decision: Decision,
        digest: str,
    ) -> dict[str, Any]:
        """What the decision record and the monitoring event both say about a decision.

        Every field is present in every decision record, null when it does not apply: the
        delegation fields (``user``, ``app``, ``act``, ``grant_id``, ``purpose``, ``session``)
        come from a delegated token, ``approval_id``/``approver`` from an approval,
        ``lease_id`` from a credential lease — an agent's own JWT-SVID carries none of them."""
        agent = caller.agent if caller else None
        return {
            "decision_id": decision_id,
            "correlation_id": request.correlation_id,
            "enforcement_point": request.enforcement_point,
            "agent": agent.name if agent else None,
            "instance": caller.instance_id if caller else None,
            "risk_tier": str(agent.risk_tier) if agent else None,
            **delegation_facts(caller.claims.claims if caller else {}),
            "action": request.action,
            "resource": _uid(request.resource.ref),
            "effect": str(decision.effect),
            "policy_ids": list(decision.policy_ids),
            "policy_version": decision.policy_version,
            "reasons": list(decision.reasons)[:5],
            "obligations": list(decision.obligations),
            # A plain hash of the arguments would let anyone holding the record or the event
            # test guesses of a redacted value: kept as its HMAC, as those values are.
            "call_digest": self._redactor.hash(digest),
        }

    async def _record(
        self,
        request: CheckRequest,
        caller: AgentCaller | None,
        decision: Decision,
        details: dict[str, Any],
        evaluated: DecisionRequest | None,
    ) -> bool:
        recorded = {k: v for k, v in details.items() if k != "correlation_id"}
        # What the engine saw, so a proposed policy set can be replayed against it.
        # Sensitive values (passwords, keys, tokens in the arguments) only as their HMAC.
        recorded["request"] = self._forms.request(evaluated) if evaluated else None
        record = AuditRecord.new(
            type="decision",
            actor=caller.spiffe_id if caller else "unauthenticated",
            subject=_uid(request.resource.ref),
            time=self._clock.now(),
            outcome=Outcome.SUCCESS if decision.allowed else Outcome.FAILURE,
            correlation_id=request.correlation_id,
            details=recorded,
        )
        try:
            # asyncio.timeout, not wait_for: no extra task (and loop turn) per decision.
            async with asyncio.timeout(self._audit_timeout):
                await self._audit.append(record)
        except InvalidInput:
            raise  # the caller's values, not the log: the caller records a refusal instead
        except (Error, TimeoutError, OSError):
            return False
        return True

    async def _record_plain(
        self,
        request: CheckRequest,
        caller: AgentCaller | None,
        decision: Decision,
        details: dict[str, Any],
    ) -> bool:
        """The refusal of a request whose values canonical JSON cannot carry, recorded
        without them (no evaluated request); False if even that cannot be recorded."""
        try:
            return await self._record(request, caller, decision, details, None)
        except InvalidInput:
            return False


@dataclass(kw_only=True)
class _Outcome:
    """What :meth:`Checkpoint.check` found before recording: the request as completed (known
    agents filled in), the decision, what the engine saw, the approval spent, and why it was
    refused before any policy ran (for monitoring, never in the record)."""

    request: CheckRequest
    decision: Decision
    evaluated: DecisionRequest | None = None
    approval: ProvenApproval | None = None
    refusal: dict[str, Any] = field(default_factory=dict)

    def refuse(self, error: Error) -> None:
        self.decision = Decision.deny(error.message)
        self.refusal = {"refusal": error.code}


#: The refusal of a delegation chain deeper than allowed, as the monitor reads it.
_CHAIN_TOO_DEEP = MappingProxyType({"refusal": "chain_too_deep"})
#: The refusal of every call while the active policy set cannot be compiled here.
_POLICY_UNUSABLE = MappingProxyType({"refusal": "policy_unusable"})


def _refusal_of(decision: Decision) -> dict[str, Any]:
    """The refusal a decision made before any policy ran names (none for the engine's)."""
    refusal = decision.details.get("refusal")
    return {} if refusal is None else {"refusal": refusal}


def _unauthenticated(request: CheckRequest, exc: Error) -> dict[str, Any]:
    """What the monitor learns of a refused token: why (``revoked``, ``unknown_agent``,
    ``invalid_token`` and its cause, …) and whom it *claims* to be (unverified)."""
    return {
        "refusal": exc.details.get("reason") or exc.code,
        "refusal_cause": exc.details.get("cause"),
        "presented": unverified_subject(request.token),
    }


def _impersonation(request: CheckRequest, exc: Error) -> dict[str, Any]:
    """The ``impersonation`` event: a user's own token presented where an agent acts."""
    return {
        "enforcement_point": request.enforcement_point,
        "subject": request.subject,
        # Whose token it is: verified before it was found to be a user's own.
        "presented": unverified_subject(request.token),
        "action": request.action,
        "resource": _uid(request.resource.ref),
        "reason": exc.message,
    }


def _uid(ref: EntityRef) -> str:
    return f'{ref.type}::"{ref.id}"'

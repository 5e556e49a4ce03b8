"""The agent registry: register, update, lifecycle, keys — every change assessed and audited.

Lifecycle (``AgentState``)::

    pending_review ──approve──▶ active ◀──resume── suspended
          │                      │  ▲                 ▲
          │                      │  └────resume───┐   │
          │                      ├──suspend───────┼───┘
          │                      └──quarantine──▶ quarantined
          └────────── retire (from any state but retired) ──────────▶ retired (final)

A change is recorded in the audit log *before* it is applied (fail closed: if the record cannot
be made durable, nothing changes); if applying then fails, a failure record follows.

An agent that stops (suspended, quarantined, retired, or sent back to review) has every token
issued to it before (or up to 30 s after) revoked in the same store transaction
(:mod:`tether.identity.revocations`), so resuming it later does not bring old tokens back; then
every lease it holds is ended (the ``on_stop`` hook: :meth:`tether.credentials.leases.Leases.
revoke_agent`).

Example (with the in-memory store)::

    registry = Registry(store=MemoryStore(), audit=sink, clock=SystemClock(),
                        trust_domain="acme.org")
    agent = await registry.register(actor=root, name="faq-bot", owners=("alice",),
                                    description="answers FAQs", declarations=Declarations())
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import TypeVar

from tether._internal.clock import Clock
from tether._internal.ids import new_id
from tether.audit.records import AuditRecord
from tether.audit.sink import AuditSink
from tether.crypto.jwk import PublicJwk
from tether.errors import (
    AgentExists,
    AgentNotFound,
    Error,
    Forbidden,
    InvalidDeclaration,
    InvalidKey,
    InvalidTransition,
    KeyExists,
)
from tether.identity import risk
from tether.identity.access import Actor, Permission, require
from tether.identity.declarations import check_declarations
from tether.identity.directory import AgentDirectory
from tether.identity.models import (
    Agent,
    AgentKey,
    AgentState,
    Declarations,
    Instance,
    RiskAssessment,
    RiskTier,
    Role,
)
from tether.identity.names import agent_spiffe_id, check_agent_name, check_owner
from tether.identity.revocations import Revocation, RevocationKind, RevocationList
from tether.store.interfaces import AgentStore

__all__ = ["MAX_KEYS_PER_AGENT", "Registry"]

T = TypeVar("T")
MAX_KEYS_PER_AGENT = 10

#: target state -> (states it may be entered from, the permission it needs)
_TRANSITIONS: dict[AgentState, tuple[frozenset[AgentState], Permission]] = {
    AgentState.ACTIVE: (
        frozenset({AgentState.SUSPENDED, AgentState.QUARANTINED}),
        Permission.AGENT_RESUME,
    ),
    AgentState.SUSPENDED: (frozenset({AgentState.ACTIVE}), Permission.AGENT_SUSPEND),
    AgentState.QUARANTINED: (
        frozenset({AgentState.ACTIVE, AgentState.SUSPENDED, AgentState.PENDING_REVIEW}),
        Permission.AGENT_QUARANTINE,
    ),
    AgentState.RETIRED: (
        frozenset(set(AgentState) - {AgentState.RETIRED}),
        Permission.AGENT_RETIRE,
    ),
}


class Registry:
    def __init__(
        self,
        *,
        store: AgentStore,
        audit: AuditSink,
        clock: Clock,
        trust_domain: str,
        directory: AgentDirectory | None = None,
        revocations: RevocationList | None = None,
        on_stop: Callable[[str, Actor, str], Awaitable[object]] | None = None,
    ) -> None:
        self._store = store
        self._audit = audit
        self._clock = clock
        self._trust_domain = trust_domain
        #: Told of every change, so the hot path never decides on a stale state here.
        self._directory = directory
        #: Where an agent's tokens are revoked when it stops.
        self._revocations = revocations
        #: Called once an agent has stopped (name, actor, reason): its leases are ended there.
        self._on_stop = on_stop

    # -- reading -------------------------------------------------------------------------

    async def get(self, name: str, *, actor: Actor) -> Agent:
        require(actor, Permission.AGENT_READ)
        return await self._load(name)

    async def list(
        self,
        *,
        actor: Actor,
        state: AgentState | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[Agent]:
        require(actor, Permission.AGENT_READ)
        return await self._store.list_agents(
            state=state, limit=max(1, min(limit, 500)), after=after
        )

    async def assessments(self, name: str, *, actor: Actor) -> builtins.list[RiskAssessment]:
        agent = await self.get(name, actor=actor)
        return await self._store.list_assessments(agent.id)

    async def instances(self, name: str, *, actor: Actor) -> builtins.list[Instance]:
        agent = await self.get(name, actor=actor)
        return await self._store.list_instances(agent.id)

    async def keys(
        self, name: str, *, actor: Actor, include_removed: bool = False
    ) -> builtins.list[AgentKey]:
        agent = await self.get(name, actor=actor)
        return await self._store.list_keys(agent.id, include_removed=include_removed)

    # -- registering and changing ----------------------------------------------------------

    async def register(
        self,
        *,
        actor: Actor,
        name: str,
        owners: Sequence[str],
        description: str,
        declarations: Declarations,
    ) -> Agent:
        require(actor, Permission.AGENT_REGISTER)
        check_agent_name(name)
        owner_tuple = _owners(owners)
        if actor.role is Role.DEVELOPER and actor.name not in owner_tuple:
            raise Forbidden("a developer registers agents they own: list yourself in owners")
        declarations = check_declarations(declarations)
        if await self._store.get_agent(name) is not None:
            raise AgentExists(f"an agent named {name!r} already exists", details={"name": name})
        now = self._clock.now()
        agent_id = new_id("agt")
        assessment = risk.assess(declarations, agent_id=agent_id, at=now, assessed_by=actor.label)
        state = (
            AgentState.PENDING_REVIEW if assessment.tier is RiskTier.CRITICAL else AgentState.ACTIVE
        )
        agent = Agent(
            id=agent_id,
            name=name,
            spiffe_id=agent_spiffe_id(self._trust_domain, name),
            owners=owner_tuple,
            description=_description(description),
            declarations=declarations,
            state=state,
            state_reason="critical risk: waiting for security review"
            if state is AgentState.PENDING_REVIEW
            else None,
            risk_score=assessment.score,
            risk_tier=assessment.tier,
            created_at=now,
            updated_at=now,
            created_by=actor.label,
        )
        record = self._record("agent.registered", actor, agent, _agent_facts(agent, assessment))
        await self._audited(
            record, lambda: self._store.create_agent(agent, assessment), agent=agent.name
        )
        return agent

    async def update(
        self,
        name: str,
        *,
        actor: Actor,
        owners: Sequence[str] | None = None,
        description: str | None = None,
        declarations: Declarations | None = None,
    ) -> Agent:
        agent = await self._load(name)
        require(actor, Permission.AGENT_UPDATE, owners=agent.owners)
        _refuse_if_retired(agent)
        changes: dict[str, object] = {}
        if owners is not None:
            changes["owners"] = _owners(owners)
        if description is not None:
            changes["description"] = _description(description)
        assessment = None
        if declarations is not None:
            changes["declarations"] = check_declarations(declarations)
            assessment = risk.assess(
                changes["declarations"],  # type: ignore[arg-type]
                agent_id=agent.id,
                at=self._clock.now(),
                assessed_by=actor.label,
            )
            changes |= _risk_changes(agent, assessment)
        updated = self._next(agent, **changes)
        facts = _agent_facts(updated, assessment) | {"changed": sorted(changes)}
        return await self._commit(agent, updated, actor=actor, tag="agent.updated", facts=facts,
                                  assessment=assessment)  # fmt: skip

    async def set_state(
        self, name: str, target: AgentState, *, actor: Actor, reason: str | None = None
    ) -> Agent:
        """Suspend, resume (→ active), quarantine or retire an agent."""
        agent = await self._load(name)
        if target not in _TRANSITIONS:
            raise InvalidTransition(f"an agent cannot be moved to {target} this way")
        sources, permission = _TRANSITIONS[target]
        require(actor, permission, owners=agent.owners)
        if agent.state not in sources:
            raise InvalidTransition(
                f"agent {name!r} is {agent.state}; it cannot become {target}",
                details={"from": str(agent.state), "to": str(target)},
            )
        if agent.state is AgentState.QUARANTINED and target is AgentState.ACTIVE:
            require(actor, Permission.AGENT_QUARANTINE)  # only security lifts a quarantine
        if target is AgentState.ACTIVE and agent.risk_tier is RiskTier.CRITICAL:
            # A critical agent runs only with security's approval, however it got stopped
            # (its declarations may have risen to critical while it was suspended).
            require(actor, Permission.AGENT_APPROVE)
        return await self._transition(agent, target, actor=actor, reason=reason)

    async def approve(self, name: str, *, actor: Actor, reason: str | None = None) -> Agent:
        """A security admin approves an agent waiting for review."""
        agent = await self._load(name)
        require(actor, Permission.AGENT_APPROVE)
        if agent.state is not AgentState.PENDING_REVIEW:
            raise InvalidTransition(
                f"agent {name!r} is {agent.state}, not pending_review",
                details={"from": str(agent.state), "to": "active"},
            )
        return await self._transition(
            agent, AgentState.ACTIVE, actor=actor, reason=reason, tag="agent.approved"
        )

    # -- keys ----------------------------------------------------------------------------

    async def add_key(self, name: str, jwk: Mapping[str, object], *, actor: Actor) -> AgentKey:
        agent = await self._load(name)
        require(actor, Permission.AGENT_KEYS, owners=agent.owners)
        _refuse_if_retired(agent)
        public = PublicJwk.parse(jwk)
        existing = await self._store.list_keys(agent.id, include_removed=True)
        if any(k.kid == public.thumbprint for k in existing):
            raise KeyExists(
                f"agent {name!r} already has key {public.thumbprint}",
                details={"kid": public.thumbprint},
            )
        if sum(1 for k in existing if k.active) >= MAX_KEYS_PER_AGENT:
            raise InvalidKey(
                f"an agent has at most {MAX_KEYS_PER_AGENT} active keys: remove one first",
                details={"rule": f"at most {MAX_KEYS_PER_AGENT} active keys"},
            )
        key = AgentKey(
            agent_id=agent.id,
            kid=public.thumbprint,
            jwk=public.to_dict(),
            alg=public.alg,
            created_at=self._clock.now(),
            created_by=actor.label,
        )
        record = self._record(
            "agent.key_added", actor, agent, {"kid": key.kid, "alg": key.alg, "kty": public.kty}
        )
        await self._audited(record, lambda: self._store.add_key(key))
        return key

    async def remove_key(self, name: str, kid: str, *, actor: Actor) -> AgentKey:
        agent = await self._load(name)
        require(actor, Permission.AGENT_KEYS, owners=agent.owners)
        record = self._record("agent.key_removed", actor, agent, {"kid": kid})
        return await self._audited(
            record, lambda: self._store.remove_key(agent.id, kid, at=self._clock.now())
        )

    # -- internals -----------------------------------------------------------------------

    async def reassess(
        self, name: str, *, undeclared: Sequence[str], actor: Actor | None = None
    ) -> Agent:
        """Assess the agent again, counting what it was seen using without declaring it (the
        monitor's out-of-declaration finding). Its tier follows the new score; an active agent
        that becomes critical waits for security's review, as on an update."""
        actor = actor or Actor.system("monitor")
        agent = await self._load(name)
        assessment = risk.assess(agent.declarations, agent_id=agent.id, at=self._clock.now(),
                                 assessed_by=actor.label, undeclared=undeclared)  # fmt: skip
        updated = self._next(agent, **_risk_changes(agent, assessment))
        facts = _agent_facts(updated, assessment) | {"undeclared": sorted(set(undeclared))}
        return await self._commit(agent, updated, actor=actor, tag="agent.reassessed",
                                  facts=facts, assessment=assessment)  # fmt: skip

    async def _load(self, name: str) -> Agent:
        agent = await self._store.get_agent(name)
        if agent is None:
            raise AgentNotFound(f"no agent named {name!r}", details={"name": name})
        return agent

    async def _transition(
        self,
        agent: Agent,
        target: AgentState,
        *,
        actor: Actor,
        reason: str | None,
        tag: str = "agent.state_changed",
    ) -> Agent:
        updated = self._next(agent, state=target, state_reason=_reason(reason))
        facts = {"from": str(agent.state), "to": str(target), "reason": updated.state_reason}
        return await self._commit(agent, updated, actor=actor, tag=tag, facts=facts)

    async def _commit(
        self,
        agent: Agent,
        updated: Agent,
        *,
        actor: Actor,
        tag: str,
        facts: Mapping[str, object],
        assessment: RiskAssessment | None = None,
    ) -> Agent:
        """Record ``agent`` becoming ``updated`` (with the revocation of its tokens when the
        change stops it), store it, then end its leases if it stopped."""
        stop = self._stop_entry(agent, updated, actor)
        record = self._record(tag, actor, updated, _with_stop(facts, stop))
        await self._audited(
            record,
            lambda: self._save(agent, updated, assessment=assessment, stop=stop),
            agent=agent.name,
        )
        await self._stopped(agent, actor, stop)
        return updated

    def _stop_entry(self, agent: Agent, updated: Agent, actor: Actor) -> Revocation | None:
        """The revocation of the agent's tokens (see :mod:`tether.identity.revocations`),
        when this change stops it."""
        if self._revocations is None or updated.state is agent.state or updated.can_authenticate:
            return None
        said = f"agent {updated.state}"
        return self._revocations.entry(
            kind=RevocationKind.AGENT,
            target=agent.name,
            actor=actor.label,
            reason=f"{said}: {updated.state_reason}" if updated.state_reason else said,
        )

    async def _stopped(self, agent: Agent, actor: Actor, stop: Revocation | None) -> None:
        """After a change that stopped the agent (its tokens revoked with it): end every
        lease it holds."""
        if stop is not None and self._on_stop is not None:
            await self._on_stop(agent.name, actor, stop.reason or "agent stopped")

    async def _save(
        self,
        agent: Agent,
        updated: Agent,
        *,
        assessment: RiskAssessment | None = None,
        stop: Revocation | None = None,
    ) -> None:
        """Store the change (and the revocation, in the same transaction), then put the
        revocation in force on this replica."""
        await self._store.update_agent(
            updated, expected_version=agent.version, assessment=assessment, revocation=stop
        )
        if stop is not None and self._revocations is not None:
            self._revocations.add(stop)

    def _next(self, agent: Agent, **changes: object) -> Agent:
        return replace(
            agent,
            **changes,  # type: ignore[arg-type]
            updated_at=self._clock.now(),
            version=agent.version + 1,
        )

    def _record(
        self, tag: str, actor: Actor, agent: Agent, details: Mapping[str, object]
    ) -> AuditRecord:
        return AuditRecord.new(
            type=tag,
            actor=actor.label,
            subject=agent.spiffe_id,
            time=self._clock.now(),
            details=details,
        )

    async def _audited(
        self, record: AuditRecord, apply: Callable[[], Awaitable[T]], *, agent: str | None = None
    ) -> T:
        """Record, then apply; a failure to apply is recorded too. ``agent`` names an agent
        whose record the change touches, for the directory to forget."""
        await self._audit.append(record)
        try:
            return await apply()
        except Error as exc:
            await self._audit.append(record.failure(exc.code, time=self._clock.now()))
            raise
        finally:
            # Applied or not, the hot path re-reads this agent on its next decision.
            if self._directory is not None and agent is not None:
                self._directory.invalidate(agent)


def _risk_changes(agent: Agent, assessment: RiskAssessment) -> dict[str, object]:
    """The agent's new score and tier; an active agent that became critical waits for review."""
    changes: dict[str, object] = {"risk_score": assessment.score, "risk_tier": assessment.tier}
    if assessment.tier is RiskTier.CRITICAL and agent.state is AgentState.ACTIVE:
        changes["state"] = AgentState.PENDING_REVIEW
        changes["state_reason"] = "risk rose to critical: waiting for security review"
    return changes


def _owners(owners: Sequence[str]) -> tuple[str, ...]:
    if isinstance(owners, str) or not owners:
        raise InvalidDeclaration(
            "an agent needs at least one owner", details={"rule": "at least one owner"}
        )
    if len(owners) > 20:
        raise InvalidDeclaration("at most 20 owners", details={"rule": "at most 20 owners"})
    return tuple(dict.fromkeys(check_owner(o) for o in owners))


def _description(text: str) -> str:
    if not isinstance(text, str) or len(text) > 2000:
        raise InvalidDeclaration(
            "description is text of at most 2000 characters",
            details={"rule": "at most 2000 characters", "field": "description"},
        )
    return text.strip()


def _reason(text: str | None) -> str | None:
    if text is None:
        return None
    if len(text) > 500:
        raise InvalidDeclaration("a reason is at most 500 characters")
    return text.strip() or None


def _refuse_if_retired(agent: Agent) -> None:
    if agent.state is AgentState.RETIRED:
        raise InvalidTransition(f"agent {agent.name!r} is retired; it cannot change")


def _with_stop(facts: Mapping[str, object], stop: Revocation | None) -> dict[str, object]:
    """``facts``, naming the revocation of the agent's tokens when the change makes one."""
    if stop is None:
        return dict(facts)
    return {**facts, "tokens_revoked": {"revocation_id": stop.id, "until": stop.until.isoformat()}}


def _agent_facts(agent: Agent, assessment: RiskAssessment | None) -> dict[str, object]:
    facts: dict[str, object] = {
        "agent_id": agent.id,
        "name": agent.name,
        "state": str(agent.state),
        "owners": list(agent.owners),
        "declarations": agent.declarations.to_dict(),
    }
    if assessment is not None:
        facts["risk"] = {
            "assessment_id": assessment.id,
            "score": assessment.score,
            "tier": str(assessment.tier),
            "factors": [f.code for f in assessment.factors],
            "model": assessment.model,
        }
    return facts

"""The lease service's view of a request: who asks (from a verdict or an actor) and on what
policy entity a ``use_credential`` decision is taken."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

from tether.checkpoint import Verdict
from tether.credentials.models import EngineConfig, RoleTemplate
from tether.errors import AuditUnavailable, Error, Forbidden, Unauthenticated
from tether.identity.access import Actor
from tether.identity.names import AgentRef, parse_agent_spiffe_id, parse_spiffe_id
from tether.identity.svid import AgentCaller
from tether.policy.models import Entity, EntityRef

__all__ = [
    "Delegated",
    "agent_name",
    "allowed_caller",
    "delegation_of",
    "error_code",
    "instance_of",
    "resource_of",
]

#: Policy entity type of each engine kind's resource.
_RESOURCE_TYPES = {"postgres": "Database", "vault": "Secret", "token": "Api"}


def error_code(problem: BaseException) -> str:
    return problem.code if isinstance(problem, Error) else type(problem).__name__


def allowed_caller(verdict: Verdict) -> AgentCaller:
    """The caller of an allowed verdict; otherwise the refusal, as an error."""
    if verdict.allowed and verdict.caller is not None:
        return verdict.caller
    if verdict.audit_failed:
        raise AuditUnavailable("the decision could not be recorded; no credential was issued")
    reasons = "; ".join(verdict.decision.reasons) or "no policy permits it"
    details = {"decision_id": verdict.decision_id, "reasons": list(verdict.decision.reasons)}
    if verdict.caller is None:
        raise Unauthenticated(f"the agent token was refused: {reasons}", details=details)
    raise Forbidden(f"use_credential denied: {reasons}", details=details)


@dataclass(frozen=True, kw_only=True)
class Delegated:
    """Whom a lease is taken for, and the TTLs it may have under that grant."""

    grant_id: str | None
    user: str | None
    ttl: int
    max_ttl: int


def delegation_of(verdict: Verdict, *, ttl: int, max_ttl: int, now: datetime) -> Delegated:
    """The grant and the user the caller acts for — from its delegated token (RFC 8693),
    which the checkpoint verified: grants in force, user active — and the TTLs bounded so the
    lease never outlives the grant (its renewals included). An agent's own JWT-SVID: no grant,
    no user, the TTLs as asked."""
    found = verdict.delegation
    if found is None:
        return Delegated(grant_id=None, user=None, ttl=ttl, max_ttl=max_ttl)
    remaining = int((found.grant.expires_at - now).total_seconds())
    if remaining < 1:
        raise Forbidden("the grant this agent acts under ends now: no lease outlives it")
    return Delegated(
        grant_id=found.grant.id,
        user=found.user,
        ttl=min(ttl, remaining),
        max_ttl=min(max_ttl, remaining),
    )


def resource_of(engine: str, config: EngineConfig | None, template: RoleTemplate | None) -> Entity:
    """The entity ``use_credential`` is decided on: the role's resource (default: the
    engine), typed by the engine's kind. For an unknown engine or role, a database named
    after the engine, so that the caller is checked before it learns the name is unknown."""
    if config is None or template is None:
        name, kind, data_class = engine, "postgres", "restricted"
    else:
        name, kind, data_class = template.resource or config.name, config.kind, template.data_class
    return Entity(
        ref=EntityRef(_RESOURCE_TYPES.get(kind, "Database"), name),
        attrs=MappingProxyType({"name": name, "data_class": data_class}),
    )


def _agent_ref(actor: Actor) -> AgentRef:
    """The agent and instance an agent actor's SPIFFE ID names (parsed as the registry
    parses them; ``InvalidSpiffeId`` if it names none)."""
    trust_domain = parse_spiffe_id(actor.id).trust_domain
    return parse_agent_spiffe_id(actor.id, trust_domain=trust_domain)


def instance_of(actor: Actor) -> str:
    """The instance id of an agent actor (``…/agent/<name>/i/<instance>``), or ``""``."""
    return _agent_ref(actor).instance_id or ""


def agent_name(actor: Actor) -> str:
    """The agent name of an agent actor (``…/agent/<name>[/i/<instance>]``)."""
    return _agent_ref(actor).name

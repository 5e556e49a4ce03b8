"""The checkpoint's view of an agent as a policy entity, and the context keys only it sets."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from tether.identity.models import Agent
from tether.policy.models import Entity, EntityRef

__all__ = ["PROVEN", "agent_context", "agent_entity"]


def agent_entity(agent: Agent) -> Entity:
    """The ``Tether::Agent`` entity policies see, from the registry's record (immutable all
    the way down: the checkpoint and the engine keep what they derive from it)."""
    d = agent.declarations
    return Entity(
        ref=EntityRef("Agent", agent.name),
        attrs=MappingProxyType(
            {
                "name": agent.name,
                "state": str(agent.state),
                "risk_tier": str(agent.risk_tier),
                "risk_score": agent.risk_score,
                "owners": frozenset(agent.owners),
                "tools": frozenset(d.tools),
                "resources": frozenset(d.resources),
                "data_classes": frozenset(str(c) for c in d.data_classes),
                "external_connections": str(d.external_connections),
                "autonomy": str(d.autonomy),
                "may_call_agents": d.may_call_agents,
            }
        ),
    )


def agent_context(*, now: float, instance: str, scopes: set[str]) -> dict[str, Any]:
    """The proven context of an agent instance acting for itself (no delegation yet: an
    empty actor chain); the checkpoint adds the call's digest and arguments, a delegated
    token's user and grant. The posture evaluates what an agent may do with the same."""
    return {"now": now, "instance": instance, "scopes": scopes, "act_chain": set(),
            "act_depth": 0}  # fmt: skip


#: Context keys only the checkpoint sets, from what it verified; a caller's values for them are
#: dropped. ``approval`` above all: only an approval token verified here proves one, so a call
#: under an approval obligation stays ``approval_required`` whatever the caller claims.
PROVEN = frozenset(
    {
        "now",
        "instance",
        "user",
        "grant_id",
        "grant_expires_at",
        "scopes",
        "act_chain",
        "act_depth",
        "approval",
        "call_digest",
        "arguments",
        "session",
        "purpose",
        "purpose_code",
    }
)

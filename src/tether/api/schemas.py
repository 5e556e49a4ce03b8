"""Request bodies of the management API (pydantic, unknown fields refused) and the JSON shapes
of responses."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tether.identity.models import (
    Agent,
    AgentKey,
    AgentState,
    Autonomy,
    Connectivity,
    DataClass,
    Declarations,
    Instance,
    OperatorToken,
    RiskAssessment,
    Role,
)
from tether.identity.revocations import Revocation
from tether.policy.models import PolicySetVersion

__all__ = [
    "AgentIn",
    "AgentUpdate",
    "CsrIn",
    "DeclarationsIn",
    "KeyIn",
    "PolicyIn",
    "PolicyText",
    "ReplayIn",
    "RevocationIn",
    "StateChange",
    "Strict",
    "TokenCreate",
    "agent_json",
    "assessment_json",
    "instance_json",
    "key_json",
    "policy_json",
    "revocation_json",
    "token_json",
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeclarationsIn(Strict):
    tools: list[str] = Field(default_factory=list, max_length=256)
    resources: list[str] = Field(default_factory=list, max_length=256)
    data_classes: list[DataClass] = Field(default_factory=lambda: [DataClass.PUBLIC], max_length=4)
    external_connections: Connectivity = Connectivity.NONE
    autonomy: Autonomy = Autonomy.SUPERVISED
    may_call_agents: bool = False
    notification_endpoint: str | None = Field(default=None, max_length=2000)

    def to_domain(self) -> Declarations:
        return Declarations(
            tools=tuple(self.tools),
            resources=tuple(self.resources),
            data_classes=tuple(self.data_classes),
            external_connections=self.external_connections,
            autonomy=self.autonomy,
            may_call_agents=self.may_call_agents,
            notification_endpoint=self.notification_endpoint,
        )


class AgentIn(Strict):
    name: str = Field(max_length=63)
    owners: list[str] = Field(min_length=1, max_length=20)
    description: str = Field(default="", max_length=2000)
    declarations: DeclarationsIn = Field(default_factory=DeclarationsIn)


class AgentUpdate(Strict):
    owners: list[str] | None = Field(default=None, min_length=1, max_length=20)
    description: str | None = Field(default=None, max_length=2000)
    declarations: DeclarationsIn | None = None


class StateChange(Strict):
    reason: str | None = Field(default=None, max_length=500)


class KeyIn(Strict):
    jwk: dict[str, Any]


class TokenCreate(Strict):
    role: Role
    display_name: str = Field(min_length=1, max_length=254)
    ttl_seconds: int | None = Field(default=None, ge=60, le=366 * 24 * 3600)


class RevocationIn(Strict):
    """Exactly one of: ``jti``; ``agent``; ``agent`` and ``instance`` (checked by the domain,
    so the CLI and every other way in are held to the same rule)."""

    jti: str | None = Field(default=None, max_length=128, description="One token's jti")
    agent: str | None = Field(default=None, max_length=63, description="Every token of it")
    instance: str | None = Field(
        default=None, max_length=64, description="With agent: every token of this instance"
    )
    reason: str | None = Field(default=None, max_length=500)


class CsrIn(Strict):
    csr: str = Field(max_length=16 * 1024, description="A PEM-encoded PKCS#10 request")


def agent_json(agent: Agent) -> dict[str, object]:
    return {
        "id": agent.id,
        "name": agent.name,
        "spiffe_id": agent.spiffe_id,
        "owners": list(agent.owners),
        "description": agent.description,
        "declarations": agent.declarations.to_dict(),
        "state": str(agent.state),
        "state_reason": agent.state_reason,
        "risk": {"score": agent.risk_score, "tier": str(agent.risk_tier)},
        "created_at": agent.created_at.isoformat(),
        "updated_at": agent.updated_at.isoformat(),
        "created_by": agent.created_by,
        "version": agent.version,
    }


def assessment_json(a: RiskAssessment) -> dict[str, object]:
    return {
        "id": a.id,
        "score": a.score,
        "tier": str(a.tier),
        "model": a.model,
        "factors": [{"code": f.code, "points": f.points, "detail": f.detail} for f in a.factors],
        "assessed_at": a.assessed_at.isoformat(),
        "assessed_by": a.assessed_by,
        "declarations": a.declarations.to_dict(),
    }


def key_json(key: AgentKey) -> dict[str, object]:
    return {
        "kid": key.kid,
        "alg": key.alg,
        "jwk": dict(key.jwk),
        "created_at": key.created_at.isoformat(),
        "created_by": key.created_by,
        "removed_at": key.removed_at.isoformat() if key.removed_at else None,
    }


def instance_json(i: Instance) -> dict[str, object]:
    return {
        "instance_id": i.instance_id,
        "spiffe_id": i.spiffe_id,
        "first_seen": i.first_seen.isoformat(),
        "last_seen": i.last_seen.isoformat(),
        "last_kid": i.last_kid,
        "last_auth_method": i.last_auth_method,
    }


def token_json(t: OperatorToken) -> dict[str, object]:
    return {
        "id": t.id,
        "role": str(t.role),
        "display_name": t.display_name,
        "created_at": t.created_at.isoformat(),
        "expires_at": t.expires_at.isoformat() if t.expires_at else None,
        "created_by": t.created_by,
        "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None,
    }


def revocation_json(r: Revocation) -> dict[str, object]:
    return {
        "id": r.id,
        "kind": str(r.kind),
        "target": r.target,
        "revoked_at": r.revoked_at.isoformat(),
        "until": r.until.isoformat(),
        "actor": r.actor,
        "reason": r.reason,
    }


def state_filter(value: str | None) -> AgentState | None:
    return AgentState(value) if value else None


class PolicyText(Strict):
    text: str = Field(max_length=1024 * 1024, description="Cedar policies, each with an @id")


class ReplayIn(PolicyText):
    since_seconds: int = Field(default=7 * 24 * 3600, ge=60, le=90 * 24 * 3600)


class PolicyIn(PolicyText):
    comment: str | None = Field(default=None, max_length=500)


def policy_json(v: PolicySetVersion, *, active: int | None, text: bool = True) -> dict[str, object]:
    body: dict[str, object] = {
        "version": v.version,
        "active": v.version == active,
        "sha256": v.sha256,
        "created_at": v.created_at.isoformat(),
        "created_by": v.created_by,
        "comment": v.comment,
    }
    if text:
        body["text"] = v.text
    return body

"""The values of the agent registry: agents, declarations, risk, keys, instances, operators.

All are frozen; changes produce new values (``dataclasses.replace``) that the registry stores
with optimistic versioning.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

__all__ = [
    "Agent",
    "AgentKey",
    "AgentState",
    "Autonomy",
    "Connectivity",
    "DataClass",
    "Declarations",
    "Instance",
    "OperatorToken",
    "RiskAssessment",
    "RiskFactor",
    "RiskTier",
    "Role",
]


class AgentState(StrEnum):
    PENDING_REVIEW = "pending_review"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    QUARANTINED = "quarantined"
    RETIRED = "retired"


class DataClass(StrEnum):
    PUBLIC = "public"
    INTERNAL = "internal"
    CONFIDENTIAL = "confidential"
    RESTRICTED = "restricted"


class Connectivity(StrEnum):
    NONE = "none"
    INTERNAL = "internal"
    INTERNET = "internet"


class Autonomy(StrEnum):
    HUMAN_IN_THE_LOOP = "human-in-the-loop"
    SUPERVISED = "supervised"
    AUTONOMOUS = "autonomous"


class RiskTier(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Role(StrEnum):
    """Roles of operators on the management API: people, and the enforcement points that ask
    for decisions."""

    ROOT = "root"
    SECURITY_ADMIN = "security-admin"
    PLATFORM_ADMIN = "platform-admin"
    DEVELOPER = "developer"
    AUDITOR = "auditor"
    #: A gateway or proxy (Envoy, an MCP gateway) asking for decisions on agents' behalf;
    #: it may evaluate decisions and read agents and policies, nothing else.
    ENFORCEMENT_POINT = "enforcement-point"


@dataclass(frozen=True, kw_only=True)
class Declarations:
    """What an agent says, at registration, it will use: the input of the risk assessment."""

    tools: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    data_classes: tuple[DataClass, ...] = (DataClass.PUBLIC,)
    external_connections: Connectivity = Connectivity.NONE
    autonomy: Autonomy = Autonomy.SUPERVISED
    may_call_agents: bool = False
    #: Where the agent wants to hear that its user answered an approval request (OpenID
    #: CIBA ping mode, the client's ``backchannel_client_notification_endpoint``); ``None``:
    #: it polls.
    notification_endpoint: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "tools": list(self.tools),
            "resources": list(self.resources),
            "data_classes": [str(d) for d in self.data_classes],
            "external_connections": str(self.external_connections),
            "autonomy": str(self.autonomy),
            "may_call_agents": self.may_call_agents,
            "notification_endpoint": self.notification_endpoint,
        }


@dataclass(frozen=True, kw_only=True)
class RiskFactor:
    code: str
    points: int
    detail: str


@dataclass(frozen=True, kw_only=True)
class RiskAssessment:
    """One assessment of an agent's declarations; every assessment is kept as history."""

    id: str
    agent_id: str
    score: int
    tier: RiskTier
    factors: tuple[RiskFactor, ...]
    model: str
    assessed_at: datetime
    assessed_by: str
    declarations: Declarations


@dataclass(frozen=True, kw_only=True)
class Agent:
    id: str
    name: str
    spiffe_id: str
    owners: tuple[str, ...]
    description: str
    declarations: Declarations
    state: AgentState
    state_reason: str | None
    risk_score: int
    risk_tier: RiskTier
    created_at: datetime
    updated_at: datetime
    created_by: str
    version: int = 1

    @property
    def can_authenticate(self) -> bool:
        return self.state is AgentState.ACTIVE


@dataclass(frozen=True, kw_only=True)
class AgentKey:
    """A public key an agent authenticates with (never a shared secret)."""

    agent_id: str
    kid: str
    #: The public JWK (RFC 7517) exactly as stored; ``kid`` is its RFC 7638 thumbprint.
    jwk: Mapping[str, str]
    alg: str
    created_at: datetime
    created_by: str
    removed_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.removed_at is None


@dataclass(frozen=True, kw_only=True)
class Instance:
    """One running copy of an agent, told apart by its instance id."""

    agent_id: str
    instance_id: str
    spiffe_id: str
    first_seen: datetime
    last_seen: datetime
    last_kid: str | None
    last_auth_method: str


@dataclass(frozen=True, kw_only=True)
class OperatorToken:
    """A bearer token for a person on the management API; only its SHA-256 is stored."""

    id: str
    token_hash: str
    role: Role
    display_name: str
    created_at: datetime
    expires_at: datetime | None
    created_by: str
    revoked_at: datetime | None = None

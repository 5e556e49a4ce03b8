"""The shapes of ``/v1/posture``: the report (:mod:`tether.monitor.posture`) and the secret
digest match of ``tether posture scan-secrets``.

Every section's keys are stable, and every problem, in its section and in the flat
``problems`` list, carries a ``kind`` — so the same state gives the same report, and a script
(or a test) can compare the set of problems exactly. Times are ISO 8601 text.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from tether.api._posture import MAX_DIGESTS
from tether.api.schemas import Strict

__all__ = ["PostureOut", "SecretDigestsIn", "SecretMatchesOut"]


class ProblemOut(BaseModel):
    kind: str
    #: What the problem is about, unique within its kind (an agent, a lease id, ``engine/login``).
    subject: str
    agent: str | None
    summary: str


class AgentCountsOut(BaseModel):
    total: int
    by_state: dict[str, int]
    by_tier: dict[str, int]


class OwnerlessOut(BaseModel):
    kind: str
    agent: str
    owners: list[str]
    reason: str


class SightingOut(BaseModel):
    kind: str
    #: The identity a refused token claimed, or the user whose own token was presented.
    key: str
    count: int
    first_seen: str
    last_seen: str
    enforcement_points: list[str]
    agents: list[str]


class StandingLeaseOut(BaseModel):
    kind: str
    lease_id: str
    engine: str
    role: str
    agent: str
    state: str
    created_at: str
    expires_at: str
    max_expires_at: str
    role_max_ttl: int | None
    reason: str


class StandingGrantOut(BaseModel):
    kind: str
    grant_id: str
    user: str
    agent: str
    created_at: str
    expires_at: str
    lifetime_seconds: int
    max_ttl_seconds: int


class LoginOut(BaseModel):
    kind: str
    engine: str
    login: str
    source: str
    details: dict[str, Any]


class ScanFailureOut(BaseModel):
    kind: str
    engine: str
    error: str


class StandingOut(BaseModel):
    leases: list[StandingLeaseOut]
    grants: list[StandingGrantOut]
    logins: list[LoginOut]
    scan_failures: list[ScanFailureOut]


class UsedOut(BaseModel):
    action: str
    resource: str
    count: int
    last_used: str


class UnusedDeclarationOut(BaseModel):
    kind: str
    field: str
    entry: str


class UnusedPermissionOut(BaseModel):
    kind: str
    action: str
    resource: str


class LeastPrivilegeOut(BaseModel):
    agent: str
    used: list[UsedOut]
    unused_declarations: list[UnusedDeclarationOut]
    unused_permissions: list[UnusedPermissionOut]
    #: Cedar text permitting exactly ``used``.
    suggested_policy: str


class SecretSourceOut(BaseModel):
    engine: str
    kind: str
    location: dict[str, Any]
    roles: list[str]
    secret_set: bool
    secrets: int | None


class PolicyOut(BaseModel):
    version: int | None
    evaluated: bool


class PostureOut(BaseModel):
    generated_at: str
    days: int
    since: str
    agents: AgentCountsOut
    ownerless_agents: list[OwnerlessOut]
    unregistered_callers: list[SightingOut]
    standing_privileges: StandingOut
    user_credentials: list[SightingOut]
    unused_permissions: list[LeastPrivilegeOut]
    secret_sources: list[SecretSourceOut]
    policy: PolicyOut
    problems: list[ProblemOut]


Digest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class SecretDigestsIn(Strict):
    """Lowercase hex SHA-256 digests of secrets found outside Tether (never the secrets)."""

    digests: list[Digest] = Field(max_length=MAX_DIGESTS)


class SecretMatchOut(BaseModel):
    digest: str
    engine: str
    kind: str
    #: The admin user whose password it is, or the vault secret's name.
    name: str


class SecretMatchesOut(BaseModel):
    checked: int
    matches: list[SecretMatchOut]

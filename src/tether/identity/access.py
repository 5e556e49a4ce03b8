"""Who may do what on the management API: actors, roles and permissions.

Checks live in the domain (not only in HTTP routes), so every way in — API, CLI, tests — is held
to the same rules, and a missing check fails closed: a permission no role lists is denied.

Example::

    >>> from tether.identity.models import Role
    >>> alice = Actor.operator(token_id="opt_1", name="alice", role=Role.DEVELOPER)
    >>> allowed(alice, Permission.AGENT_REGISTER)
    True
    >>> allowed(alice, Permission.AGENT_APPROVE)
    False
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from tether.errors import Forbidden
from tether.identity.models import Role

__all__ = ["Actor", "Permission", "allowed", "require"]


class Permission(StrEnum):
    AGENT_READ = "agent.read"
    AGENT_REGISTER = "agent.register"
    AGENT_UPDATE = "agent.update"
    AGENT_SUSPEND = "agent.suspend"
    AGENT_RESUME = "agent.resume"
    AGENT_QUARANTINE = "agent.quarantine"
    AGENT_RETIRE = "agent.retire"
    AGENT_APPROVE = "agent.approve"
    AGENT_KEYS = "agent.keys"
    TOKEN_CREATE = "token.create"
    TOKEN_READ = "token.read"
    TOKEN_REVOKE = "token.revoke"
    AUDIT_READ = "audit.read"
    POLICY_READ = "policy.read"
    POLICY_APPLY = "policy.apply"
    DECISION_EVALUATE = "decision.evaluate"
    SVID_REVOKE = "svid.revoke"
    ENGINE_READ = "engine.read"
    ENGINE_MANAGE = "engine.manage"
    LEASE_READ = "lease.read"
    LEASE_RENEW = "lease.renew"
    LEASE_REVOKE = "lease.revoke"
    USER_READ = "user.read"
    USER_MANAGE = "user.manage"
    GRANT_READ = "grant.read"
    GRANT_REVOKE = "grant.revoke"
    CLIENT_READ = "client.read"
    CLIENT_MANAGE = "client.manage"
    APPROVAL_READ = "approval.read"
    MCP_READ = "mcp.read"
    MCP_MANAGE = "mcp.manage"
    ALERT_READ = "alert.read"
    ALERT_MANAGE = "alert.manage"
    POSTURE_READ = "posture.read"
    POSTURE_SECRETS = "posture.secrets"


_ALL_OPERATORS = frozenset(Role)
_ADMINS = frozenset({Role.ROOT, Role.SECURITY_ADMIN, Role.PLATFORM_ADMIN})
_SECURITY = frozenset({Role.ROOT, Role.SECURITY_ADMIN})

#: Which roles hold a permission outright.
_GRANTS: dict[Permission, frozenset[Role]] = {
    Permission.AGENT_READ: _ALL_OPERATORS,
    Permission.AGENT_REGISTER: _ADMINS | {Role.DEVELOPER},
    Permission.AGENT_UPDATE: _ADMINS,
    Permission.AGENT_SUSPEND: _ADMINS,
    Permission.AGENT_RESUME: _ADMINS,
    Permission.AGENT_QUARANTINE: _SECURITY,
    Permission.AGENT_RETIRE: _SECURITY,
    Permission.AGENT_APPROVE: _SECURITY,
    Permission.AGENT_KEYS: _ADMINS,
    Permission.TOKEN_CREATE: frozenset({Role.ROOT}),
    Permission.TOKEN_READ: _SECURITY,
    Permission.TOKEN_REVOKE: _SECURITY,
    Permission.AUDIT_READ: _SECURITY | {Role.AUDITOR},
    Permission.POLICY_READ: _ALL_OPERATORS,
    Permission.POLICY_APPLY: _SECURITY,
    #: Enforcement points asking on an agent's behalf (the agent may always ask for itself).
    Permission.DECISION_EVALUATE: _ADMINS | {Role.ENFORCEMENT_POINT},
    #: Revoke agent tokens (JWT-SVIDs) before they expire.
    Permission.SVID_REVOKE: _ADMINS,
    #: Credential engines (database connections with an admin secret) are the platform's.
    Permission.ENGINE_READ: _ADMINS | {Role.AUDITOR},
    Permission.ENGINE_MANAGE: frozenset({Role.ROOT, Role.PLATFORM_ADMIN}),
    #: Leases: agents hold them; operators see and end them (an agent renews and ends its own).
    Permission.LEASE_READ: _ADMINS | {Role.AUDITOR},
    Permission.LEASE_RENEW: _ADMINS,
    Permission.LEASE_REVOKE: _ADMINS,
    #: People: security admins manage them; a user reads and ends their own grants (checked
    #: by the grants service, not by role).
    Permission.USER_READ: _SECURITY | {Role.AUDITOR},
    Permission.USER_MANAGE: _SECURITY,
    Permission.GRANT_READ: _SECURITY | {Role.AUDITOR},
    Permission.GRANT_REVOKE: _SECURITY,
    #: OAuth clients of the built-in provider (the applications people sign in to).
    Permission.CLIENT_READ: _ADMINS | {Role.AUDITOR, Role.DEVELOPER},
    Permission.CLIENT_MANAGE: _ADMINS,
    #: Approval requests (CIBA): a user reads and answers their own; only they answer.
    Permission.APPROVAL_READ: _SECURITY | {Role.AUDITOR},
    #: The MCP gateway's upstream servers and their tool pins: the platform's to manage.
    Permission.MCP_READ: _ADMINS | {Role.AUDITOR, Role.DEVELOPER},
    Permission.MCP_MANAGE: frozenset({Role.ROOT, Role.PLATFORM_ADMIN}),
    #: The monitor's alerts: security acts on them; everyone who answers for agents reads them
    #: (a developer those of the agents they own).
    Permission.ALERT_READ: _ADMINS | {Role.AUDITOR},
    Permission.ALERT_MANAGE: _SECURITY,
    #: The posture report: how security is set up, across every agent.
    Permission.POSTURE_READ: _SECURITY | {Role.AUDITOR},
    #: Asking whether a secret found in a file is one Tether manages answers whether a guess
    #: is right: security's only.
    Permission.POSTURE_SECRETS: _SECURITY,
}
#: What a developer may also do, but only on agents they own.
_OWNER_GRANTS = frozenset(
    {
        Permission.AGENT_UPDATE,
        Permission.AGENT_SUSPEND,
        Permission.AGENT_RETIRE,
        Permission.AGENT_KEYS,
        Permission.SVID_REVOKE,
        Permission.LEASE_READ,
        Permission.LEASE_REVOKE,
        Permission.ALERT_READ,
        Permission.ALERT_MANAGE,
    }
)


@dataclass(frozen=True, kw_only=True)
class Actor:
    """Whoever asks: an operator (a person with a role), an agent instance, a user (a person
    signed in through an OpenID provider, acting for themselves), or the system."""

    kind: str
    id: str
    name: str
    role: Role | None = None

    @classmethod
    def operator(cls, *, token_id: str, name: str, role: Role) -> Actor:
        return cls(kind="operator", id=token_id, name=name, role=role)

    @classmethod
    def agent(cls, *, spiffe_id: str) -> Actor:
        return cls(kind="agent", id=spiffe_id, name=spiffe_id)

    @classmethod
    def user(cls, *, name: str) -> Actor:
        return cls(kind="user", id=name, name=name)

    @classmethod
    def system(cls, name: str = "tether") -> Actor:
        return cls(kind="system", id=name, name=name)

    @property
    def label(self) -> str:
        """How audit records name the actor."""
        if self.kind == "operator":
            return f"operator:{self.name}"
        return f"{self.kind}:{self.id}" if self.kind != "agent" else self.id


def allowed(actor: Actor, permission: Permission, *, owners: Iterable[str] = ()) -> bool:
    if actor.kind == "system":
        return True
    if actor.role is None:
        return False
    if actor.role in _GRANTS.get(permission, frozenset()):
        return True
    return (
        actor.role is Role.DEVELOPER and permission in _OWNER_GRANTS and actor.name in set(owners)
    )


def require(actor: Actor, permission: Permission, *, owners: Iterable[str] = ()) -> None:
    if not allowed(actor, permission, owners=owners):
        role = actor.role or actor.kind
        raise Forbidden(
            f"{role} may not {permission}",
            details={"permission": str(permission), "role": str(role)},
        )

"""Roles and permissions: least privilege, owners, and fail-closed defaults."""

from __future__ import annotations

import pytest

from tether.errors import Forbidden
from tether.identity.access import Actor, Permission, allowed, require
from tether.identity.models import Role


def op(role: Role, name: str = "alice") -> Actor:
    return Actor.operator(token_id="opt_x", name=name, role=role)


@pytest.mark.parametrize("role", list(Role))
def test_every_role_can_read_agents(role: Role) -> None:
    assert allowed(op(role), Permission.AGENT_READ)


@pytest.mark.parametrize(
    ("role", "permission", "expected"),
    [
        (Role.AUDITOR, Permission.AGENT_REGISTER, False),
        (Role.AUDITOR, Permission.AUDIT_READ, True),
        (Role.DEVELOPER, Permission.AUDIT_READ, False),
        (Role.DEVELOPER, Permission.AGENT_APPROVE, False),
        (Role.PLATFORM_ADMIN, Permission.AGENT_APPROVE, False),
        (Role.SECURITY_ADMIN, Permission.AGENT_APPROVE, True),
        (Role.PLATFORM_ADMIN, Permission.AGENT_QUARANTINE, False),
        (Role.SECURITY_ADMIN, Permission.TOKEN_CREATE, False),
        (Role.ROOT, Permission.TOKEN_CREATE, True),
        (Role.SECURITY_ADMIN, Permission.SVID_REVOKE, True),
        (Role.PLATFORM_ADMIN, Permission.SVID_REVOKE, True),
        (Role.AUDITOR, Permission.SVID_REVOKE, False),
        (Role.DEVELOPER, Permission.SVID_REVOKE, False),
        (Role.PLATFORM_ADMIN, Permission.DECISION_EVALUATE, True),
        (Role.DEVELOPER, Permission.DECISION_EVALUATE, False),
    ],
)
def test_role_permission_table(role: Role, permission: Permission, expected: bool) -> None:
    assert allowed(op(role), permission) is expected


def test_developer_manages_only_agents_they_own() -> None:
    alice = op(Role.DEVELOPER, "alice")
    assert allowed(alice, Permission.AGENT_KEYS, owners=["alice", "bob"])
    assert not allowed(alice, Permission.AGENT_KEYS, owners=["bob"])
    assert not allowed(alice, Permission.AGENT_QUARANTINE, owners=["alice"])


def test_developer_revokes_tokens_only_of_agents_they_own() -> None:
    alice = op(Role.DEVELOPER, "alice")
    assert allowed(alice, Permission.SVID_REVOKE, owners=["alice"])
    assert not allowed(alice, Permission.SVID_REVOKE, owners=["bob"])


def test_enforcement_point_only_evaluates_decisions_and_reads_agents_and_policies() -> None:
    gateway = op(Role.ENFORCEMENT_POINT, "envoy")
    held = {p for p in Permission if allowed(gateway, p, owners=["envoy"])}
    assert held == {Permission.DECISION_EVALUATE, Permission.AGENT_READ, Permission.POLICY_READ}


def test_an_agent_has_no_operator_permissions() -> None:
    agent = Actor.agent(spiffe_id="spiffe://td/agent/a/i/1")
    assert not any(allowed(agent, p) for p in Permission)


def test_require_raises_forbidden_naming_the_permission() -> None:
    with pytest.raises(Forbidden, match=r"auditor may not agent\.register"):
        require(op(Role.AUDITOR), Permission.AGENT_REGISTER)

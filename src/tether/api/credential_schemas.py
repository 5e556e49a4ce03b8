"""Request bodies and response shapes of ``/v1/leases`` and ``/v1/engines``.

A response never carries an engine's admin secret nor a value a vault engine holds (only the
names of its secrets); an issued credential's secret appears in the one response that issues
it, and nowhere else.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from tether.api.schemas import Strict
from tether.credentials.engines import MAX_ROLES
from tether.credentials.leases import Issued
from tether.credentials.models import EngineConfig, Lease, RoleTemplate
from tether.credentials.vault import MAX_MAP_BYTES, MAX_VALUE_BYTES

__all__ = [
    "BulkRevokeIn",
    "EngineIn",
    "LeaseIn",
    "RenewIn",
    "RevokeIn",
    "RoleIn",
    "SecretIn",
    "engine_json",
    "issued_json",
    "lease_json",
]


class LeaseIn(Strict):
    engine: str = Field(max_length=63)
    role: str = Field(max_length=63)
    ttl: int | None = Field(default=None, ge=1)


class RenewIn(Strict):
    ttl: int | None = Field(default=None, ge=1)


class RevokeIn(Strict):
    reason: str | None = Field(default=None, max_length=500)


class BulkRevokeIn(Strict):
    agent: str | None = Field(default=None, max_length=63)
    instance: str | None = Field(default=None, max_length=64)
    grant_id: str | None = Field(default=None, max_length=64)
    user: str | None = Field(default=None, max_length=256)
    reason: str | None = Field(default=None, max_length=500)


class RoleIn(Strict):
    name: str = Field(max_length=63)
    group: str | None = Field(default=None, max_length=63)
    default_ttl: int = 300
    max_ttl: int = 3600
    auth: str = "password"
    scram_iterations: int = 4096
    resource: str | None = Field(default=None, max_length=255)
    data_class: str = "internal"
    options: dict[str, Any] = Field(default_factory=dict)

    def to_domain(self) -> RoleTemplate:
        return RoleTemplate(**self.model_dump())


class EngineIn(Strict):
    kind: str = Field(max_length=32)
    settings: dict[str, Any] = Field(default_factory=dict)
    roles: list[RoleIn] = Field(min_length=1, max_length=MAX_ROLES)
    #: The admin password (a vault engine's: its JSON map of secrets); omitted on an update,
    #: the sealed one is kept. Each kind has its own bound, checked by the engine.
    secret: str | None = Field(default=None, max_length=MAX_MAP_BYTES)


class SecretIn(Strict):
    """One secret of a vault engine (the bound in bytes is checked by the engine)."""

    value: str = Field(min_length=1, max_length=MAX_VALUE_BYTES)


def _iso(value: Any) -> Any:
    return value.isoformat() if value is not None else None


def lease_json(lease: Lease) -> dict[str, Any]:
    facts = lease.facts()
    return {
        "id": facts.pop("lease_id"),
        **facts,
        "ending": str(lease.ending) if lease.ending else None,
        "reason": lease.reason,
        "attempts": lease.attempts,
        "next_attempt_at": _iso(lease.next_attempt_at),
        "ended_at": _iso(lease.ended_at),
        "last_error": lease.last_error,
    }


def issued_json(issued: Issued) -> dict[str, Any]:
    credential = issued.credential
    return {
        "lease": lease_json(issued.lease),
        # The engine's facts first: none of them may stand in for the name or the secret.
        "credential": {
            **dict(credential.details),
            "name": credential.credential,
            "secret": credential.secret,
        },
        "decision_id": issued.decision_id,
    }


def engine_json(engine: EngineConfig) -> dict[str, Any]:
    return {
        "name": engine.name,
        "kind": engine.kind,
        "settings": dict(engine.settings),
        "roles": [role.to_dict() for role in engine.roles.values()],
        "secret_set": engine.sealed_secret is not None,
        "created_at": _iso(engine.created_at),
        "created_by": engine.created_by,
        "updated_at": _iso(engine.updated_at),
        "version": engine.version,
    }

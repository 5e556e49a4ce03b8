"""Leases and credential engines as values: what is stored, listed and audited.

A :class:`Lease` is a just-in-time credential: created for one agent instance (and, when it acts
for a user, that user's grant), for one role of one engine, with a TTL, renewable up to a max
TTL, and gone when it ends. Its states::

    issuing ──▶ active ──▶ revoking ──▶ revoked | expired
                                 │  ▲
                                 └──┘ retried with backoff; after N failures ──▶ irrevocable
                                                                       (alerted, retried)

``issuing`` is the lease before its credential exists: the lease service keeps it in memory
and stores the lease once the credential exists (``active``). A stored ``issuing`` lease (one
written by an earlier release, which stored it first) is ended by the reaper after the
issuing grace, its credential removed if it was created.

``credential`` is the engine's name for what it created (a PostgreSQL role name): a fact, never
a secret. Secrets (a password) are handed to the caller once, in :class:`IssuedCredential`, and
kept nowhere.

Example::

    >>> from datetime import UTC, datetime
    >>> template = RoleTemplate(name="readonly", group="app_readonly")
    >>> template.default_ttl, template.max_ttl
    (300, 3600)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

__all__ = [
    "LIVE_STATES",
    "EndKind",
    "EngineConfig",
    "IssuedCredential",
    "Lease",
    "LeaseMatch",
    "LeaseState",
    "RoleTemplate",
]


class LeaseState(StrEnum):
    ISSUING = "issuing"
    ACTIVE = "active"
    REVOKING = "revoking"
    REVOKED = "revoked"
    EXPIRED = "expired"
    IRREVOCABLE = "irrevocable"


#: States in which the engine may still hold the credential.
LIVE_STATES = frozenset(
    {LeaseState.ISSUING, LeaseState.ACTIVE, LeaseState.REVOKING, LeaseState.IRREVOCABLE}
)


class EndKind(StrEnum):
    """Why a lease ends: its TTL ran out, someone revoked it, or its issuance failed."""

    EXPIRED = "expired"
    REVOKED = "revoked"
    FAILED = "failed"


@dataclass(frozen=True, kw_only=True)
class Lease:
    id: str
    engine: str
    role: str
    credential: str
    agent: str
    instance: str
    grant_id: str | None
    user: str | None
    created_at: datetime
    expires_at: datetime
    max_expires_at: datetime
    renewals: int
    state: LeaseState
    updated_at: datetime
    #: Set once the lease starts to end.
    ending: EndKind | None = None
    reason: str | None = None
    #: Failed revocation attempts so far, and when the next one is due.
    attempts: int = 0
    next_attempt_at: datetime | None = None
    #: A replica revoking the lease holds it until then (another takes over after).
    claimed_until: datetime | None = None
    ended_at: datetime | None = None
    last_error: str | None = None
    version: int = 1

    @property
    def live(self) -> bool:
        """Whether the engine may still hold the credential."""
        return self.state in LIVE_STATES

    def usable(self, now: datetime) -> bool:
        """Whether the credential may be used: active and not past its expiry."""
        return self.state is LeaseState.ACTIVE and now < self.expires_at

    def facts(self) -> dict[str, object]:
        """What records, events and the API say of the lease: facts, never a secret."""
        return {
            "lease_id": self.id,
            "engine": self.engine,
            "role": self.role,
            "credential": self.credential,
            "agent": self.agent,
            "instance": self.instance,
            "grant_id": self.grant_id,
            "user": self.user,
            "state": str(self.state),
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
            "max_expires_at": _iso(self.max_expires_at),
            "renewals": self.renewals,
        }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


@dataclass(frozen=True, kw_only=True)
class LeaseMatch:
    """Which leases a bulk revocation or a listing covers: every given field must match."""

    agent: str | None = None
    instance: str | None = None
    grant_id: str | None = None
    user: str | None = None
    engine: str | None = None

    @property
    def empty(self) -> bool:
        return all(v is None for v in self.fields().values())

    def fields(self) -> dict[str, str | None]:
        return {
            "agent": self.agent,
            "instance": self.instance,
            "grant_id": self.grant_id,
            "user": self.user,
            "engine": self.engine,
        }

    def matches(self, lease: Lease) -> bool:
        return all(v is None or getattr(lease, k) == v for k, v in self.fields().items())


@dataclass(frozen=True, kw_only=True)
class RoleTemplate:
    """One kind of credential an engine hands out.

    For PostgreSQL, the new role joins ``group``, a role that holds the privileges (never
    per-credential grants). ``auth`` is ``password`` (a SCRAM verifier computed here, with
    ``scram_iterations``) or ``none`` (the database authenticates the role otherwise, e.g. by
    client certificate). ``resource`` names the policy entity ``use_credential`` is checked
    on (default: the engine), with its data class.
    """

    name: str
    group: str | None = None
    default_ttl: int = 300
    max_ttl: int = 3600
    auth: str = "password"
    scram_iterations: int = 4096
    resource: str | None = None
    data_class: str = "internal"
    #: Kind-specific: the secret a vault role hands out, the audience of a token role.
    options: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "group": self.group,
            "default_ttl": self.default_ttl,
            "max_ttl": self.max_ttl,
            "auth": self.auth,
            "scram_iterations": self.scram_iterations,
            "resource": self.resource,
            "data_class": self.data_class,
            "options": dict(self.options),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RoleTemplate:
        """The template :meth:`to_dict` wrote (``KeyError``/``TypeError`` if it is not one)."""
        return cls(
            name=str(data["name"]),
            group=None if data["group"] is None else str(data["group"]),
            default_ttl=int(data["default_ttl"]),
            max_ttl=int(data["max_ttl"]),
            auth=str(data["auth"]),
            scram_iterations=int(data["scram_iterations"]),
            resource=None if data["resource"] is None else str(data["resource"]),
            data_class=str(data["data_class"]),
            options=MappingProxyType(dict(data["options"])),
        )


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    """A configured credential engine: its kind (``postgres``, ``vault``, ``token``), its
    kind-specific settings (never a secret: the admin password is sealed apart), its roles."""

    name: str
    kind: str
    settings: Mapping[str, object]
    roles: Mapping[str, RoleTemplate]
    created_at: datetime
    created_by: str
    updated_at: datetime
    version: int = 1
    #: The admin secret, sealed with the key-encryption key (never in ``settings``).
    sealed_secret: bytes | None = None


@dataclass(frozen=True, kw_only=True)
class IssuedCredential:
    """What an engine created, returned to the caller once: ``secret`` (a password, a token)
    is not stored, not logged and not audited; ``details`` are the facts to connect with."""

    credential: str
    secret: str | None = field(default=None, repr=False)
    details: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))

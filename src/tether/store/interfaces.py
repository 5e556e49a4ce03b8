"""The store's interfaces: what the domain needs from persistence, and nothing more.

Two implementations satisfy them: :mod:`tether.store.memory` (the reference, used by unit tests
of the domain) and :mod:`tether.store.sql` (SQLAlchemy on SQLite or PostgreSQL). One test suite
runs against all of them (``tests/integration/test_store_contract.py``). The MCP gateway's
registry, :class:`McpStore`, is defined in :mod:`tether.store._mcp_interfaces`; the monitor's
alerts and observed use, :class:`MonitorStore`, in :mod:`tether.store._monitor_interfaces`.

Conventions: every write is atomic; ``create_*`` raises the domain's ``*Exists`` error on a
duplicate; ``update_agent`` is optimistic (``expected_version``) and raises
``VersionConflict``; times are aware UTC datetimes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime
from typing import Protocol

from tether.audit.reader import AuditReadStore
from tether.audit.stored import AuditLogStore
from tether.credentials.models import EngineConfig, Lease, LeaseMatch, LeaseState
from tether.crypto.stored import KeyPurpose, StoredKey
from tether.delegation.models import (
    Approval,
    ApprovalMatch,
    Grant,
    GrantMatch,
    OAuthClient,
    User,
)
from tether.identity.models import (
    Agent,
    AgentKey,
    AgentState,
    Instance,
    OperatorToken,
    RiskAssessment,
)
from tether.identity.revocations import Revocation
from tether.policy.models import PolicySetVersion
from tether.store._mcp_interfaces import McpStore
from tether.store._monitor_interfaces import AlertMatch, MonitorStore

__all__ = [
    "AgentStore",
    "AlertMatch",
    "ApprovalStore",
    "AuditStore",
    "ClientStore",
    "EngineStore",
    "GrantStore",
    "KeyRingStore",
    "LeaseStore",
    "McpStore",
    "MonitorStore",
    "OperatorTokenStore",
    "PolicyStore",
    "ReplayStore",
    "RevocationStore",
    "Store",
    "UserStore",
]


class AgentStore(Protocol):
    async def create_agent(self, agent: Agent, assessment: RiskAssessment) -> None:
        """Insert a new agent with its first assessment; ``AgentExists`` on a taken name."""
        ...

    async def get_agent(self, name: str) -> Agent | None: ...

    async def get_agent_with_keys(self, name: str) -> tuple[Agent, list[AgentKey]] | None:
        """The agent and its active keys (oldest first), read together in one consistent read:
        what client authentication needs, in one round trip to the store."""
        ...

    async def get_agent_by_id(self, agent_id: str) -> Agent | None: ...

    async def list_agents(
        self, *, state: AgentState | None = None, limit: int = 100, after: str | None = None
    ) -> list[Agent]:
        """Agents ordered by name; ``after`` is the last name of the previous page."""
        ...

    async def update_agent(
        self,
        agent: Agent,
        *,
        expected_version: int,
        assessment: RiskAssessment | None = None,
        revocation: Revocation | None = None,
    ) -> None:
        """Replace the agent whose version is ``expected_version`` (``agent.version`` is the new
        one); store ``assessment`` and ``revocation`` (an agent's tokens revoked as it stops) in
        the same transaction. ``VersionConflict`` otherwise; ``Conflict`` for a revocation id
        already stored; either way nothing is written."""
        ...

    async def list_assessments(self, agent_id: str) -> list[RiskAssessment]:
        """Every assessment of the agent, oldest first."""
        ...

    async def add_key(self, key: AgentKey) -> None:
        """``KeyExists`` if the agent already has a key with this kid (even a removed one)."""
        ...

    async def list_keys(
        self, agent_id: str, *, include_removed: bool = False
    ) -> list[AgentKey]: ...

    async def remove_key(self, agent_id: str, kid: str, *, at: datetime) -> AgentKey:
        """Mark the key removed; ``KeyNotFound`` if it is not an active key of the agent."""
        ...

    async def record_instance_seen(
        self,
        *,
        agent_id: str,
        instance_id: str,
        spiffe_id: str,
        kid: str | None,
        auth_method: str,
        at: datetime,
    ) -> Instance: ...

    async def record_authentication(
        self,
        *,
        replay_key: str | None,
        replay_expires_at: datetime | None,
        agent_id: str,
        instance_id: str,
        spiffe_id: str,
        kid: str | None,
        auth_method: str,
        at: datetime,
    ) -> Instance:
        """A successful client authentication, all or nothing: consume ``replay_key`` as
        :meth:`ReplayStore.consume_once` does (when given) and record the instance as
        :meth:`record_instance_seen` does. ``ReplayDetected`` and nothing written if the key
        was used already; atomic across concurrent callers and replicas."""
        ...

    async def list_instances(self, agent_id: str) -> list[Instance]: ...


class ReplayStore(Protocol):
    async def consume_once(self, key: str, *, expires_at: datetime) -> None:
        """Record ``key`` as used; ``ReplayDetected`` if it was already recorded and has not
        expired. Atomic across concurrent callers and replicas."""
        ...

    async def purge_replay_keys(self, *, before: datetime) -> int: ...


class RevocationStore(Protocol):
    """Revoked JWT-SVIDs (:mod:`tether.identity.revocations`): a handful of entries, each kept
    until every token it covers has expired."""

    async def add_revocation(self, revocation: Revocation) -> None:
        """Durably store an entry; ``Conflict`` if one with its id exists."""
        ...

    async def list_revocations(self, *, now: datetime) -> list[Revocation]:
        """The live entries (``until`` after ``now``), oldest first (by ``revoked_at``, then
        id)."""
        ...

    async def purge_revocations(self, *, before: datetime) -> int:
        """Delete the entries no longer live at ``before`` (``until`` at or before it); how
        many."""
        ...


class OperatorTokenStore(Protocol):
    async def create_operator_token(self, token: OperatorToken) -> None: ...

    async def get_operator_token(self, token_hash: str) -> OperatorToken | None: ...

    async def list_operator_tokens(self) -> list[OperatorToken]: ...

    async def revoke_operator_token(self, token_id: str, *, at: datetime) -> None:
        """``OperatorTokenNotFound`` if there is no such token."""
        ...


class KeyRingStore(Protocol):
    async def list_stored_keys(self, purpose: KeyPurpose | None = None) -> list[StoredKey]:
        """Keys oldest first."""
        ...

    async def save_stored_key(self, key: StoredKey) -> None:
        """Insert a new key or replace the one with the same kid."""
        ...


class AuditStore(AuditLogStore, AuditReadStore, Protocol):
    """The audit log's storage: what its writer needs (:class:`tether.audit.stored.AuditLogStore`)
    and what its readers need (:class:`tether.audit.reader.AuditReadStore`)."""


class PolicyStore(Protocol):
    """Versioned policy sets and which one is active. Versions are numbered 1, 2, … with no
    gaps, in the order they were added, across replicas."""

    async def add_policy_set(
        self,
        *,
        text: str,
        sha256: str,
        created_at: datetime,
        created_by: str,
        comment: str | None,
        activate: bool,
        expected_active: int | None,
    ) -> PolicySetVersion:
        """Store a new version (the next number). With ``activate``, make it the active one in
        the same transaction — but only if the active version is still ``expected_active``
        (``None``: no version is active yet), else ``VersionConflict`` and nothing written."""
        ...

    async def activate_policy_set(
        self, version: int, *, expected_active: int | None, at: datetime
    ) -> None:
        """Make ``version`` the active one if the active version is still ``expected_active``;
        ``PolicySetNotFound`` for an unknown version, ``VersionConflict`` if it moved."""
        ...

    async def get_policy_set(self, version: int) -> PolicySetVersion | None: ...

    async def active_policy_set(self) -> PolicySetVersion | None:
        """The active version, or ``None`` before the first one is applied."""
        ...

    async def active_policy_version(self) -> int | None:
        """Only the active version's number (replicas ask every second whether it moved)."""
        ...

    async def list_policy_sets(
        self, *, limit: int = 100, before: int | None = None
    ) -> list[PolicySetVersion]:
        """Newest first; ``before`` is the lowest version of the previous page."""
        ...


class LeaseStore(Protocol):
    """Leases (:mod:`tether.credentials.models`). Writes are compare-and-set on ``version``;
    the bulk changes lock what they change (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so
    several replicas never work on the same lease at once."""

    async def create_lease(self, lease: Lease) -> None:
        """Insert a new lease; ``Conflict`` if its id or its credential is taken."""
        ...

    async def get_lease(self, lease_id: str) -> Lease | None: ...

    async def save_lease(self, lease: Lease, *, expected_version: int) -> None:
        """Replace the lease whose version is ``expected_version`` (``lease.version`` is the
        new one); ``LeaseNotFound`` if there is none, ``VersionConflict`` if it moved."""
        ...

    async def list_leases(
        self,
        match: LeaseMatch,
        *,
        states: Collection[LeaseState] | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[Lease]:
        """Leases matching ``match`` (and in ``states``, when given), ordered by id; ``after``
        is the last id of the previous page."""
        ...

    async def change_leases(
        self,
        match: LeaseMatch,
        *,
        states: Collection[LeaseState],
        change: Callable[[Lease], Lease],
        limit: int,
    ) -> list[Lease]:
        """In one transaction: lock up to ``limit`` leases matching ``match`` in ``states``
        (lowest ids first; leases another transaction holds are skipped), store
        ``change(lease)`` for each, return what was stored."""
        ...

    async def change_due_leases(
        self,
        *,
        now: datetime,
        stale_before: datetime,
        change: Callable[[Lease], Lease],
        limit: int,
    ) -> list[Lease]:
        """As :meth:`change_leases`, for the leases the reaper must act on: ``active`` ones
        expired at ``now`` (``expires_at <= now``); ``issuing`` ones created before
        ``stale_before`` (an issuance that never finished); ``revoking`` and
        ``irrevocable`` ones whose next attempt is due (``next_attempt_at <= now``) and that
        no replica holds (``claimed_until`` null or ``<= now``). Soonest due first."""
        ...

    async def live_credentials(self, engine: str) -> set[str]:
        """The credentials of the engine's leases that may still exist (live states)."""
        ...

    async def next_lease_expiry(self) -> datetime | None:
        """The earliest ``expires_at`` of an active lease (the reaper's next wake-up)."""
        ...


class EngineStore(Protocol):
    """Configured credential engines (their admin secret sealed, never in clear)."""

    async def create_engine(self, engine: EngineConfig) -> None:
        """``EngineExists`` if the name is taken."""
        ...

    async def get_engine(self, name: str) -> EngineConfig | None: ...

    async def list_engines(self) -> list[EngineConfig]:
        """Every engine, by name."""
        ...

    async def update_engine(self, engine: EngineConfig, *, expected_version: int) -> None:
        """``EngineNotFound``, or ``VersionConflict`` if it moved; nothing written then."""
        ...

    async def delete_engine(self, name: str) -> None:
        """``EngineNotFound``; ``Conflict`` while a lease of the engine is live."""
        ...


class UserStore(Protocol):
    """People (:mod:`tether.delegation.models`); never deleted, only disabled."""

    async def create_user(self, user: User) -> None:
        """``UserExists`` if the name, or the (issuer, subject) pair, is taken."""
        ...

    async def get_user(self, name: str) -> User | None: ...

    async def get_user_by_subject(self, issuer: str, subject: str) -> User | None:
        """The user an OpenID provider knows as ``subject`` (federated sign-in)."""
        ...

    async def list_users(self, *, limit: int = 100, after: str | None = None) -> list[User]:
        """Users ordered by name; ``after`` is the last name of the previous page."""
        ...

    async def update_user(self, user: User, *, expected_version: int) -> None:
        """``UserNotFound``, or ``VersionConflict`` if it moved; nothing written then."""
        ...


class GrantStore(Protocol):
    """Users' consent grants. Writes are compare-and-set on ``version``."""

    async def create_grant(self, grant: Grant) -> None:
        """``Conflict`` if the id is taken."""
        ...

    async def get_grant(self, grant_id: str) -> Grant | None: ...

    async def list_grants(
        self,
        match: GrantMatch,
        *,
        in_force_at: datetime | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[Grant]:
        """Grants matching ``match`` ordered by id (``after``: the last id of the previous
        page); with ``in_force_at``, only those active and not expired at that time."""
        ...

    async def update_grant(self, grant: Grant, *, expected_version: int) -> None:
        """``GrantNotFound``, or ``VersionConflict`` if it moved; nothing written then."""
        ...

    async def revoke_grants(
        self,
        match: GrantMatch,
        *,
        at: datetime,
        by: str,
        reason: str | None,
        limit: int,
    ) -> list[Grant]:
        """In one transaction: revoke up to ``limit`` active grants matching ``match``
        (lowest ids first), and return them as stored. ``InvalidInput`` for an empty
        match."""
        ...


class ClientStore(Protocol):
    """OAuth clients of the built-in provider."""

    async def create_client(self, client: OAuthClient) -> None:
        """``Conflict`` if the id is taken."""
        ...

    async def get_client(self, client_id: str) -> OAuthClient | None: ...

    async def list_clients(self) -> list[OAuthClient]:
        """Every client, by id."""
        ...

    async def delete_client(self, client_id: str) -> None:
        """``NotFound`` if there is none."""
        ...


class ApprovalStore(Protocol):
    """CIBA approval requests. Writes are compare-and-set on ``version``."""

    async def create_approval(self, approval: Approval) -> None:
        """``Conflict`` if the id or the ``auth_req_key`` is taken."""
        ...

    async def get_approval(self, approval_id: str) -> Approval | None: ...

    async def find_approval(self, auth_req_key: str) -> Approval | None:
        """The request whose ``auth_req_id`` hashes to ``auth_req_key``."""
        ...

    async def update_approval(self, approval: Approval, *, expected_version: int) -> None:
        """Replace the request whose version is ``expected_version`` with ``approval`` as
        given: ``approval.version`` is the new version, chosen by the caller (the store does
        not bump it), as in :meth:`GrantStore.update_grant`. ``ApprovalNotFound``, or
        ``VersionConflict`` if it moved; ``Conflict`` if it takes another request's
        ``auth_req_key``; nothing written then."""
        ...

    async def list_approvals(
        self, match: ApprovalMatch, *, limit: int = 100, after: str | None = None
    ) -> list[Approval]:
        """Requests matching ``match`` ordered by id (``after``: the last id of the previous
        page)."""
        ...

    async def count_approvals(self, *, user: str, since: datetime) -> int:
        """How many requests were made to ``user`` at or after ``since`` (a rate limit)."""
        ...


class Store(
    AgentStore,
    ReplayStore,
    RevocationStore,
    OperatorTokenStore,
    KeyRingStore,
    AuditStore,
    PolicyStore,
    LeaseStore,
    EngineStore,
    UserStore,
    GrantStore,
    ClientStore,
    ApprovalStore,
    McpStore,
    MonitorStore,
    Protocol,
):
    """Everything together, as the server uses it."""

    async def close(self) -> None: ...

"""The values of delegation: users, grants, OAuth clients and approval requests.

Both are frozen; a change is a new value (``dataclasses.replace``) stored with optimistic
versioning, as agents are.

A user's ``name`` is the ``sub`` of every token Tether issues for them. Users are disabled,
never deleted, so a name is never given to someone else (OpenID Connect Core §2: a ``sub`` is
"never reassigned").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from tether.identity.models import Role

__all__ = [
    "Approval",
    "ApprovalMatch",
    "ApprovalState",
    "Grant",
    "GrantMatch",
    "GrantState",
    "OAuthClient",
    "User",
    "UserState",
]


class UserState(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


@dataclass(frozen=True, kw_only=True)
class User:
    """A person. ``password_hash`` is an Argon2id PHC string for users of the built-in
    provider; ``None`` for a user who signs in elsewhere (``issuer`` says where).

    ``role`` is what the person may do in the web console: one of the operator roles but
    ``root`` and ``enforcement-point`` (:data:`tether.delegation.users.CONSOLE_ROLES`), or
    ``None`` for an end user, who sees only their own grants and approvals."""

    id: str
    name: str
    display_name: str | None
    email: str | None
    state: UserState
    password_hash: str | None
    #: The OpenID provider that authenticates this user: Tether's own issuer for built-in
    #: users, an external issuer URL for federated ones.
    issuer: str
    #: The user's ``sub`` at ``issuer`` (for built-in users, their name).
    subject: str
    created_at: datetime
    updated_at: datetime
    disabled_at: datetime | None = None
    role: Role | None = None
    version: int = 1

    @property
    def active(self) -> bool:
        return self.state is UserState.ACTIVE


class GrantState(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"


@dataclass(frozen=True, kw_only=True)
class Grant:
    """A user's consent for one agent: the answer to "why may this agent do this".

    ``purpose`` is free text shown to the user; ``purpose_code`` is what policies read.
    ``session`` binds the grant to the sign-in session it was given in (``None``: any session
    of the user). A grant is in force while ``state`` is active and ``expires_at`` is ahead.
    """

    id: str
    user: str
    agent: str
    scopes: frozenset[str]
    purpose: str
    purpose_code: str
    session: str | None
    created_at: datetime
    expires_at: datetime
    created_by: str
    state: GrantState = GrantState.ACTIVE
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    revoke_reason: str | None = None
    version: int = 1

    def in_force(self, now: datetime) -> bool:
        return self.state is GrantState.ACTIVE and now < self.expires_at


@dataclass(frozen=True, kw_only=True)
class GrantMatch:
    """Which grants a listing or a bulk revocation is about (fields left ``None`` match any;
    at least one is required for a bulk revocation)."""

    user: str | None = None
    agent: str | None = None
    session: str | None = None

    @property
    def empty(self) -> bool:
        return self.user is None and self.agent is None and self.session is None


@dataclass(frozen=True, kw_only=True)
class OAuthClient:
    """An application people sign in to through Tether's built-in provider (authorization
    code flow with PKCE). Clients are public: they hold no secret, PKCE (S256) binds the code
    to the client that asked for it (RFC 7636, RFC 8252 for native apps).

    ``agent``, when set, is the agent the application fronts: what a user approves on the
    consent page is a grant for that agent."""

    id: str
    name: str
    redirect_uris: tuple[str, ...]
    agent: str | None
    created_at: datetime
    created_by: str
    version: int = 1


class ApprovalState(StrEnum):
    """Where an approval request is: waiting for the user, answered, or used. An expired
    request keeps its state; ``Approval.expired`` says it is past its time."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    REDEEMED = "redeemed"


@dataclass(frozen=True, kw_only=True)
class Approval:
    """A CIBA request (OpenID CIBA Core 1.0): an agent instance asks a user to approve the
    operations in ``details`` (RFC 9396 ``authorization_details`` items, each carrying the
    ``call_digest`` of the exact call), out of band.

    ``id`` is public (it names the approval in tokens and records); the client holds the
    ``auth_req_id``, of which only ``auth_req_key`` (its SHA-256) is stored. ``approved``
    holds the positions in ``details`` the user approved: some, all, or none (refused)."""

    id: str
    auth_req_key: str
    #: The agent instance (SPIFFE ID) that asked, the only client that may redeem it.
    client: str
    agent: str
    user: str
    scope: frozenset[str]
    binding_message: str | None
    details: tuple[Mapping[str, Any], ...]
    created_at: datetime
    expires_at: datetime
    #: Seconds the client waits between polls.
    interval: int
    #: The grant the request was made under (a delegated token as ``login_hint_token``).
    grant_id: str | None = None
    #: Ping mode (CIBA Core §10.2): where Tether tells the client the answer is in, and the
    #: bearer token it authenticates with there. ``None``: poll mode.
    notification_endpoint: str | None = None
    notification_token: str | None = None
    state: ApprovalState = ApprovalState.PENDING
    approved: tuple[int, ...] = ()
    decided_at: datetime | None = None
    decided_by: str | None = None
    last_polled_at: datetime | None = None
    redeemed_at: datetime | None = None
    version: int = 1

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at

    @property
    def approved_details(self) -> tuple[Mapping[str, Any], ...]:
        return tuple(self.details[i] for i in self.approved)


@dataclass(frozen=True, kw_only=True)
class ApprovalMatch:
    """Which approval requests a listing is about (``None`` matches any)."""

    user: str | None = None
    agent: str | None = None
    state: ApprovalState | None = None

"""Grants: a user's recorded consent for one agent — scopes, purpose, session, expiry.

A grant is created by the user it belongs to (at the consent page, or through the API with
their own token), never by anyone else: consent given by an administrator would not be
consent. It is listed and revoked by that user and by security admins (``grant.read``,
``grant.revoke``). Its expiry is bounded by ``grant_max_ttl_seconds``.

Revocation is immediate where it matters: the grant is forgotten by this replica's hot-path
cache the moment it is revoked (every delegated token under it is refused at the checkpoint
from the next decision), other replicas hear a change note, and the ``on_revoke`` hook ends
what was issued under it (leases bound to the grant).

Example::

    grant = await grants.create(actor=Actor.user(name="alice"), agent="shop-bot",
                                scopes={"orders:read"}, purpose="track my orders",
                                purpose_code="order-tracking", session="sid_…", ttl_seconds=3600)
    await grants.revoke(grant.id, actor=Actor.user(name="alice"), reason="done")
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from datetime import timedelta

from tether._internal.clock import Clock
from tether._internal.ids import new_id
from tether._internal.readthrough import ReadThrough
from tether.audit.records import AuditRecord
from tether.audit.sink import AuditSink, audited
from tether.delegation.models import Grant, GrantMatch, GrantState
from tether.errors import AgentNotFound, Forbidden, GrantNotFound, InvalidInput, InvalidScope
from tether.identity.access import Actor, Permission, allowed, require
from tether.identity.names import check_agent_name
from tether.store.interfaces import AgentStore, GrantStore, UserStore

__all__ = [
    "ACCOUNT_SCOPE",
    "IDENTITY_SCOPES",
    "MAX_SCOPES",
    "RESERVED_SCOPES",
    "Grants",
    "check_purpose_code",
    "parse_scopes",
]

#: RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
_SCOPE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,128}$")
_PURPOSE_CODE = re.compile(r"^[a-z][a-z0-9._-]{0,63}$")
_GRANT_ID = re.compile(r"^grt_[a-z2-7]{26}$")
MAX_SCOPES = 50
#: The scope of a person's own account (``/v1/grants``, ``/v1/users/<me>``): given only to
#: Tether's first-party clients (``tether login``), never to an agent, never in a grant.
ACCOUNT_SCOPE = "tether:account"
#: Scopes about the person themselves (OpenID Connect Core §5.4): not an agent's to hold.
IDENTITY_SCOPES = frozenset({"openid", "profile", "email"})
#: No grant may name these: an agent never holds the person's account or identity scopes.
RESERVED_SCOPES = IDENTITY_SCOPES | {ACCOUNT_SCOPE}
MAX_PURPOSE = 500
MAX_REASON = 500
#: The most grants one bulk revocation ends in one call (it says how many; call again).
REVOKE_BATCH = 1000

#: Called with every grant just revoked (ends the leases issued under it).
OnRevoke = Callable[[Grant, Actor, str | None], Awaitable[object]]


def parse_scopes(value: str | Iterable[str]) -> frozenset[str]:
    """Scopes from a space-separated string (RFC 6749 §3.3) or a list; each checked."""
    items = value.split(" ") if isinstance(value, str) else list(value)
    scopes = frozenset(s for s in items if s)
    if len(scopes) > MAX_SCOPES or not all(_SCOPE.fullmatch(s) for s in scopes):
        raise InvalidScope(
            f"at most {MAX_SCOPES} scopes of 1 to 128 printable characters (RFC 6749 §3.3)"
        )
    return scopes


def check_purpose_code(code: str) -> str:
    if not isinstance(code, str) or not _PURPOSE_CODE.fullmatch(code):
        raise InvalidInput(
            "a purpose code is 1 to 64 characters: lowercase letters, digits, '.', '_' and '-',"
            " starting with a letter",
            details={"field": "purpose_code"},
        )
    return code


class Grants:
    """Users' consent grants (see the module)."""

    def __init__(
        self,
        *,
        store: GrantStore,
        users: UserStore,
        agents: AgentStore,
        audit: AuditSink,
        clock: Clock,
        max_ttl_seconds: int,
        cache_seconds: float = 1.0,
        on_revoke: OnRevoke | None = None,
    ) -> None:
        self._store = store
        self._users = users
        self._agents = agents
        self._audit = audit
        self._clock = clock
        self._max_ttl = max_ttl_seconds
        self._on_revoke = on_revoke
        #: Grants as the hot path reads them (the checkpoint, token exchange).
        self.cache: ReadThrough[str, Grant] = ReadThrough(store.get_grant, ttl=cache_seconds)

    def on_revoke(self, hook: OnRevoke) -> None:
        self._on_revoke = hook

    async def create(
        self,
        *,
        actor: Actor,
        agent: str,
        scopes: Iterable[str] | str,
        purpose: str,
        purpose_code: str,
        session: str | None,
        ttl_seconds: int | None = None,
    ) -> Grant:
        """The signed-in user's consent for ``agent``; ``ttl_seconds`` defaults to, and may not
        exceed, ``grant_max_ttl_seconds``."""
        if actor.kind != "user":
            raise Forbidden(
                "only the user themselves can consent to an agent",
                details={"permission": "grant.create", "role": actor.role or actor.kind},
            )
        user = await self._users.get_user(actor.name)
        if user is None or not user.active:
            raise Forbidden(
                "a disabled or unknown user cannot consent",
                details={"permission": "grant.create", "role": "user"},
            )
        found = await self._agents.get_agent(check_agent_name(agent))
        if found is None:
            raise AgentNotFound(f"no agent named {agent!r}", details={"name": agent})
        if not found.can_authenticate:
            raise InvalidInput(
                f"agent {agent!r} is {found.state}: only an active agent can be granted access",
                details={"field": "agent", "state": str(found.state)},
            )
        granted = parse_scopes(scopes)
        if not granted:
            raise InvalidScope("a grant names at least one scope")
        if reserved := sorted(granted & RESERVED_SCOPES):
            raise InvalidScope(f"no grant may give an agent {', '.join(reserved)}")
        now = self._clock.now()
        grant = Grant(
            id=new_id("grt"),
            user=actor.name,
            agent=found.name,
            scopes=granted,
            purpose=_purpose(purpose),
            purpose_code=check_purpose_code(purpose_code),
            session=session,
            created_at=now,
            expires_at=now + timedelta(seconds=self._ttl(ttl_seconds)),
            created_by=actor.label,
        )
        await audited(
            self._audit,
            self._record("grant.created", actor, grant, _facts(grant)),
            lambda: self._store.create_grant(grant),
            clock=self._clock,
        )
        return grant

    async def get(self, grant_id: str, *, actor: Actor) -> Grant:
        grant = await self._load(grant_id)
        self._may(actor, Permission.GRANT_READ, grant)
        return grant

    async def list(
        self,
        match: GrantMatch,
        *,
        actor: Actor,
        in_force: bool = False,
        limit: int = 100,
        after: str | None = None,
    ) -> builtins.list[Grant]:
        """Grants matching ``match``; a user sees only their own (``match.user`` is set to
        them)."""
        match = self._scoped(actor, match, Permission.GRANT_READ)
        at = self._clock.now() if in_force else None
        return await self._store.list_grants(
            match, in_force_at=at, limit=min(max(limit, 1), 500), after=after
        )

    async def get_in_force(self, grant_id: str) -> Grant | None:
        """The grant as the hot path reads it (cached; a malformed id is none at all)."""
        return await self.cache.get(grant_id) if _GRANT_ID.fullmatch(grant_id) else None

    async def in_force(self, match: GrantMatch) -> builtins.list[Grant]:
        """The grants in force matching ``match`` (token exchange's lookup; no actor: the
        caller has proven who the user and the agent are)."""
        return await self._store.list_grants(match, in_force_at=self._clock.now(), limit=50)

    async def revoke(self, grant_id: str, *, actor: Actor, reason: str | None = None) -> Grant:
        """Revoke one grant (revoking a revoked grant returns it unchanged)."""
        grant = await self._load(grant_id)
        self._may(actor, Permission.GRANT_REVOKE, grant)
        if grant.state is GrantState.REVOKED:
            return grant
        why = _reason(reason)
        now = self._clock.now()
        revoked = replace(
            grant,
            state=GrantState.REVOKED,
            revoked_at=now,
            revoked_by=actor.label,
            revoke_reason=why,
            version=grant.version + 1,
        )
        try:
            await audited(
                self._audit,
                self._record("grant.revoked", actor, grant, {"reason": why}),
                lambda: self._store.update_grant(revoked, expected_version=grant.version),
                clock=self._clock,
            )
        finally:
            self.cache.invalidate(grant.id)
        await self._revoked(revoked, actor, why)
        return revoked

    async def revoke_all(
        self, match: GrantMatch, *, actor: Actor, reason: str | None = None
    ) -> builtins.list[Grant]:
        """Revoke up to 1,000 active grants matching ``match`` in one transaction, then record
        each. A user may revoke only their own."""
        match = self._scoped(actor, match, Permission.GRANT_REVOKE)
        if match.empty:
            raise InvalidInput("name a user, an agent or a session", details={"field": "match"})
        why = _reason(reason)
        intent = AuditRecord.new(
            type="grant.revoked", actor=actor.label, subject=None, time=self._clock.now(),
            details={"match": {k: v for k, v in vars(match).items() if v is not None},
                     "reason": why, "bulk": True},
        )  # fmt: skip
        revoked = await audited(
            self._audit,
            intent,
            lambda: self._store.revoke_grants(
                match, at=self._clock.now(), by=actor.label, reason=why, limit=REVOKE_BATCH
            ),
            clock=self._clock,
        )
        for grant in revoked:
            self.cache.invalidate(grant.id)
        for grant in revoked:
            await self._audit.append(
                self._record("grant.revoked", actor, grant, {"reason": why, "bulk": True})
            )
            await self._revoked(grant, actor, why)
        return revoked

    async def revoke_user(self, user: str, actor: Actor) -> None:
        """Every grant of ``user`` (the users service calls this when it disables them)."""
        while await self.revoke_all(GrantMatch(user=user), actor=actor, reason="user disabled"):
            pass

    async def _revoked(self, grant: Grant, actor: Actor, reason: str | None) -> None:
        if self._on_revoke is not None:
            await self._on_revoke(grant, actor, reason)

    def _ttl(self, requested: int | None) -> int:
        if requested is None:
            return self._max_ttl
        if not isinstance(requested, int) or not 60 <= requested <= self._max_ttl:
            raise InvalidInput(
                f"a grant lasts 60 s to {self._max_ttl} s", details={"field": "ttl_seconds"}
            )
        return requested

    def _may(self, actor: Actor, permission: Permission, grant: Grant) -> None:
        if actor.kind == "user" and actor.name == grant.user:
            return
        if actor.kind == "user":  # another user's grant: as if it did not exist
            raise GrantNotFound(f"no grant {grant.id!r}", details={"id": grant.id})
        require(actor, permission)

    def _scoped(self, actor: Actor, match: GrantMatch, permission: Permission) -> GrantMatch:
        if actor.kind == "user":
            return replace(match, user=actor.name)
        if not allowed(actor, permission):
            require(actor, permission)
        return match

    async def _load(self, grant_id: str) -> Grant:
        found = await self._store.get_grant(grant_id) if _GRANT_ID.fullmatch(grant_id) else None
        if found is None:
            raise GrantNotFound(f"no grant {grant_id!r}", details={"id": grant_id})
        return found

    def _record(
        self, tag: str, actor: Actor, grant: Grant, details: dict[str, object]
    ) -> AuditRecord:
        return AuditRecord.new(
            type=tag,
            actor=actor.label,
            subject=f"grant:{grant.id}",
            time=self._clock.now(),
            details={"id": grant.id, "user": grant.user, "agent": grant.agent} | details,
        )


def _facts(grant: Grant) -> dict[str, object]:
    return {
        "scopes": sorted(grant.scopes),
        "purpose": grant.purpose,
        "purpose_code": grant.purpose_code,
        "session": grant.session,
        "expires_at": grant.expires_at.isoformat(),
    }


def _purpose(text: str) -> str:
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_PURPOSE:
        raise InvalidInput(
            f"a purpose is 1 to {MAX_PURPOSE} characters", details={"field": "purpose"}
        )
    return text.strip()


def _reason(text: str | None) -> str | None:
    if text is None:
        return None
    if len(text) > MAX_REASON:
        raise InvalidInput(
            f"a reason is at most {MAX_REASON} characters", details={"field": "reason"}
        )
    return text.strip() or None

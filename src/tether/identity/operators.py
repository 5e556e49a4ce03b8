"""Operator tokens: bearer tokens for people on the management API, as Vault's tokens are.

A token is ``tto_`` followed by 256 random bits; only its SHA-256 is stored, so a copy of the
database does not hand out access. There is one root token: ``TETHER_ROOT_TOKEN``, or one
generated on first start and printed once. When ``TETHER_ROOT_TOKEN`` changes, every other root
token is revoked, so an old value stops working. The root token mints tokens for people, one
role each (never another root token); a security admin or root revokes them, and anyone may
give up their own.

Example::

    ops = OperatorTokens(store=store, audit=sink, clock=SystemClock(), default_ttl=86400)
    token, secret = await ops.create(actor=root, role=Role.DEVELOPER, display_name="alice")
    actor = await ops.authenticate(secret)       # Actor(kind="operator", name="alice", ...)
"""

from __future__ import annotations

import hmac
from dataclasses import replace
from datetime import timedelta

from tether._internal.clock import Clock
from tether._internal.ids import new_id, new_secret, sha256_hex
from tether.audit.records import AuditRecord
from tether.audit.sink import AuditSink
from tether.errors import InvalidInput, OperatorTokenNotFound, Unauthenticated
from tether.identity.access import Actor, Permission, require
from tether.identity.models import OperatorToken, Role
from tether.identity.names import check_owner
from tether.store.interfaces import OperatorTokenStore

__all__ = ["TOKEN_PREFIX", "OperatorTokens"]

TOKEN_PREFIX = "tto_"
_MAX_TOKEN_LENGTH = 128


class OperatorTokens:
    def __init__(
        self, *, store: OperatorTokenStore, audit: AuditSink, clock: Clock, default_ttl: int
    ) -> None:
        self._store = store
        self._audit = audit
        self._clock = clock
        self._default_ttl = default_ttl

    async def ensure_root(self, root_token: str | None) -> str | None:
        """Make sure a root token exists. Returns a newly generated root token (to be shown
        once) when none was given and none existed; otherwise ``None``."""
        existing = await self._store.list_operator_tokens()
        if root_token is not None:
            if len(root_token) < 16 or len(root_token) > _MAX_TOKEN_LENGTH:
                raise InvalidInput("the root token must be 16 to 128 characters long")
            kept = await self._store.get_operator_token(sha256_hex(root_token))
            if kept is None or kept.revoked_at is not None:
                kept = await self._save(
                    root_token, role=Role.ROOT, name="root", actor=Actor.system()
                )
            for token in existing:
                if token.role is Role.ROOT and token.revoked_at is None and token.id != kept.id:
                    await self._revoke(token, actor=Actor.system(), reason="root token replaced")
            return None
        if any(t.role is Role.ROOT and t.revoked_at is None for t in existing):
            return None
        secret = TOKEN_PREFIX + new_secret(32)
        await self._save(secret, role=Role.ROOT, name="root", actor=Actor.system())
        return secret

    async def authenticate(self, presented: str) -> Actor:
        if not presented or len(presented) > _MAX_TOKEN_LENGTH:
            raise Unauthenticated("a valid operator token is required")
        digest = sha256_hex(presented)
        token = await self._store.get_operator_token(digest)
        if token is None or not hmac.compare_digest(token.token_hash, digest):
            raise Unauthenticated("a valid operator token is required")
        now = self._clock.now()
        if token.revoked_at is not None or (token.expires_at and token.expires_at <= now):
            raise Unauthenticated("the operator token is revoked or expired")
        return Actor.operator(token_id=token.id, name=token.display_name, role=token.role)

    async def create(
        self, *, actor: Actor, role: Role, display_name: str, ttl_seconds: int | None = None
    ) -> tuple[OperatorToken, str]:
        require(actor, Permission.TOKEN_CREATE)
        if role is Role.ROOT:
            raise InvalidInput("there is one root token; mint a token with a role instead")
        check_owner(display_name)
        ttl = self._default_ttl if ttl_seconds is None else ttl_seconds
        if not 60 <= ttl <= 366 * 24 * 3600:
            raise InvalidInput("a token lives between 60 seconds and a year")
        secret = TOKEN_PREFIX + new_secret(32)
        token = await self._save(secret, role=role, name=display_name, actor=actor, ttl=ttl)
        return token, secret

    async def revoke(self, token_id: str, *, actor: Actor) -> OperatorToken:
        """Revoke a token at once. Root and security admins revoke any (only root revokes
        root); anyone may give up their own."""
        found = [t for t in await self._store.list_operator_tokens() if t.id == token_id]
        if not found:
            raise OperatorTokenNotFound(f"no operator token with id {token_id!r}")
        token = found[0]
        if actor.id != token.id:
            require(actor, Permission.TOKEN_REVOKE)
            if token.role is Role.ROOT:
                require(actor, Permission.TOKEN_CREATE)
        if token.revoked_at is not None:
            return token
        return await self._revoke(token, actor=actor, reason=None)

    async def _revoke(
        self, token: OperatorToken, *, actor: Actor, reason: str | None
    ) -> OperatorToken:
        now = self._clock.now()
        await self._audit.append(
            AuditRecord.new(
                type="operator.token_revoked",
                actor=actor.label,
                subject=f"operator:{token.display_name}",
                time=now,
                details={"token_id": token.id, "role": str(token.role), "reason": reason},
            )
        )
        await self._store.revoke_operator_token(token.id, at=now)
        return replace(token, revoked_at=now)

    async def list(self, *, actor: Actor) -> list[OperatorToken]:
        require(actor, Permission.TOKEN_READ)
        return await self._store.list_operator_tokens()

    async def _save(
        self, secret: str, *, role: Role, name: str, actor: Actor, ttl: int | None = None
    ) -> OperatorToken:
        now = self._clock.now()
        token = OperatorToken(
            id=new_id("opt"),
            token_hash=sha256_hex(secret),
            role=role,
            display_name=name,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl) if ttl else None,
            created_by=actor.label,
        )
        await self._audit.append(
            AuditRecord.new(
                type="operator.token_created",
                actor=actor.label,
                subject=f"operator:{name}",
                time=now,
                details={
                    "token_id": token.id,
                    "role": str(role),
                    "expires_at": str(token.expires_at),
                },
            )
        )
        await self._store.create_operator_token(token)
        return token

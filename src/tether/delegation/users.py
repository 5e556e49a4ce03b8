"""Users of the built-in OpenID provider: added, listed, disabled by security admins; signed in
with a password hashed with Argon2id (:mod:`tether.crypto.passwords`).

A person may hold a console role (:data:`CONSOLE_ROLES`: an operator role but ``root`` and
``enforcement-point``), given and taken away by security admins (:meth:`Users.set_role`,
recorded as ``user.role_changed``); without one they are an end user of the console.

Every change is recorded before it is applied, as the agent registry does. Disabling a user
ends everything derived from them at once: their grants are revoked (which, at the checkpoint,
refuses every delegated token under them) — the ``on_disable`` hook.

Example::

    users = Users(store=store, audit=sink, clock=SystemClock(), hasher=PasswordHasher(),
                  issuer="https://tether.example")
    alice = await users.add(actor=sam, name="alice", password="correct horse battery")
    await users.authenticate(name="alice", password="correct horse battery")   # the User
    await users.set_role("alice", Role.DEVELOPER, actor=sam)
"""

from __future__ import annotations

import builtins
import contextlib
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace

from tether._internal.clock import Clock
from tether._internal.ids import new_id
from tether.audit.records import AuditRecord, Outcome
from tether.audit.sink import AuditSink, audited
from tether.crypto.passwords import PasswordHasher
from tether.delegation.models import User, UserState
from tether.errors import Error, InvalidInput, InvalidName, Unauthenticated, UserNotFound
from tether.identity.access import Actor, Permission, require
from tether.identity.models import Role
from tether.store.interfaces import UserStore

__all__ = ["CONSOLE_ROLES", "NAME_RULE", "Users", "check_console_role", "check_user_name"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,126}[a-z0-9]$|^[a-z0-9]$")
NAME_RULE = (
    "1 to 128 characters: lowercase letters, digits, '.', '_', '@' and '-', starting and "
    "ending with a letter or digit"
)
MAX_DISPLAY = 200
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")
#: The roles a person may hold in the web console. Never ``root`` (there is one root, a
#: token) and never ``enforcement-point`` (a gateway's, not a person's).
CONSOLE_ROLES = frozenset(Role) - {Role.ROOT, Role.ENFORCEMENT_POINT}

#: Called with the user's name and the actor when a user is disabled (revokes their grants).
OnDisable = Callable[[str, Actor], Awaitable[object]]


def check_user_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidName(f"a user name is {NAME_RULE}", details={"field": "name"})
    return name


def check_console_role(role: Role | str | None) -> Role | None:
    """``role`` as a console role (``None``: none, an end user); ``InvalidInput`` (field
    ``role``) for ``root``, ``enforcement-point`` or anything that is not a role."""
    if role is None:
        return None
    try:
        found = Role(role)
    except ValueError:
        found = None
    if found not in CONSOLE_ROLES:
        allowed = ", ".join(sorted(CONSOLE_ROLES))
        raise InvalidInput(
            f"a person's console role is one of {allowed}, or none", details={"field": "role"}
        )
    return found


class Users:
    """The built-in provider's people (see the module)."""

    def __init__(
        self,
        *,
        store: UserStore,
        audit: AuditSink,
        clock: Clock,
        hasher: PasswordHasher,
        issuer: str,
        on_disable: OnDisable | None = None,
        on_change: Callable[[str], object] | None = None,
    ) -> None:
        #: Told the name of every user changed here (the hot path reads them afresh).
        self._on_change = on_change
        self._store = store
        self._audit = audit
        self._clock = clock
        self._hasher = hasher
        self._issuer = issuer
        self._on_disable = on_disable

    def on_disable(self, hook: OnDisable) -> None:
        self._on_disable = hook

    async def add(
        self,
        *,
        actor: Actor,
        name: str,
        password: str | None,
        display_name: str | None = None,
        email: str | None = None,
        role: Role | None = None,
    ) -> User:
        """A user of the built-in provider (``password`` None: one who cannot sign in with a
        password until one is set), with a console role or none."""
        require(actor, Permission.USER_MANAGE)
        check_user_name(name)
        role = check_console_role(role)
        now = self._clock.now()
        user = User(
            id=new_id("usr"),
            name=name,
            display_name=_display(display_name),
            email=_email(email),
            state=UserState.ACTIVE,
            password_hash=await self._hasher.hash(password) if password is not None else None,
            issuer=self._issuer,
            subject=name,
            created_at=now,
            updated_at=now,
            role=role,
        )
        facts = {"id": user.id, "name": name, "issuer": user.issuer, "email": user.email}
        facts |= {"role": _role_label(role)}
        record = self._record("user.created", actor, name, facts | {"password_set": bool(password)})
        await audited(self._audit, record, lambda: self._store.create_user(user), clock=self._clock)
        return user

    async def get(self, name: str, *, actor: Actor) -> User:
        if not (actor.kind == "user" and actor.name == name):
            require(actor, Permission.USER_READ)
        return await self._load(name)

    async def list(
        self, *, actor: Actor, limit: int = 100, after: str | None = None
    ) -> builtins.list[User]:
        require(actor, Permission.USER_READ)
        return await self._store.list_users(limit=min(max(limit, 1), 500), after=after)

    async def disable(self, name: str, *, actor: Actor, reason: str | None = None) -> User:
        """Disable the user and revoke every grant they gave; disabling twice is a no-op."""
        require(actor, Permission.USER_MANAGE)
        user = await self._load(name)
        if user.state is not UserState.DISABLED:
            now = self._clock.now()
            user = await self._change(
                user,
                actor,
                {"state": "disabled", "reason": reason},
                state=UserState.DISABLED,
                disabled_at=now,
            )
        if self._on_disable is not None:
            await self._on_disable(name, actor)
        return user

    async def enable(self, name: str, *, actor: Actor) -> User:
        require(actor, Permission.USER_MANAGE)
        user = await self._load(name)
        if user.state is UserState.ACTIVE:
            return user
        return await self._change(
            user, actor, {"state": "active"}, state=UserState.ACTIVE, disabled_at=None
        )

    async def set_role(self, name: str, role: Role | None, *, actor: Actor) -> User:
        """Give a person a console role, or take theirs away (``None``): security admins only.
        Like every change of the person's, it ends their earlier tokens and sign-in sessions
        (none outlives a role taken away); setting the role they hold changes nothing."""
        require(actor, Permission.USER_MANAGE)
        wanted = check_console_role(role)
        user = await self._load(name)
        if user.role == wanted:
            return user
        facts = {"role": _role_label(wanted), "previous": _role_label(user.role)}
        return await self._change(user, actor, facts, tag="user.role_changed", role=wanted)

    async def set_password(
        self, name: str, password: str, *, actor: Actor, current: str | None = None
    ) -> User:
        """Set the password of a user of the built-in provider: security admins, or the user
        with their current password (a stolen session alone cannot take the account). Every
        earlier session and token of the user ends (they were issued before the change)."""
        itself = actor.kind == "user" and actor.name == name
        if not itself:
            require(actor, Permission.USER_MANAGE)
        user = await self._load(name)
        if user.issuer != self._issuer:
            raise InvalidInput(
                f"{name} signs in at {user.issuer}: their password is set there",
                details={"field": "password"},
            )
        if itself:
            await self._hasher.verify(user.password_hash, current or "")
        hashed = await self._hasher.hash(password)
        return await self._change(user, actor, {"password_changed": True}, password_hash=hashed)

    async def authenticate(self, *, name: str, password: str) -> User:
        """The active user ``name`` whose password this is; ``Unauthenticated`` otherwise,
        with one message for every cause (the record says which)."""
        user = await self._store.get_user(name) if _NAME.fullmatch(name or "") else None
        stored = user.password_hash if user is not None else None
        try:
            await self._hasher.verify(stored, password)
        except Unauthenticated:
            why = "unknown" if user is None else "wrong_password"
            await self._sign_in_failed(name, why)
            raise
        if user is None:  # verify refuses a missing hash already; never reached
            raise Unauthenticated("wrong name or password")
        if user.issuer != self._issuer:  # a federated user signs in at their provider
            await self._sign_in_failed(name, "federated")
            raise Unauthenticated("wrong name or password")
        if not user.active:
            await self._sign_in_failed(name, "disabled")
            raise Unauthenticated("wrong name or password")
        if user.password_hash and self._hasher.needs_rehash(user.password_hash):
            with contextlib.suppress(Error):  # a sign-in never fails for want of a rehash
                user = await self._rehash(user, password)
        await self._audit.append(
            self._record(
                "user.signed_in", Actor.user(name=user.name), user.name, {"method": "password"}
            )
        )
        return user

    async def _rehash(self, user: User, password: str) -> User:
        """The password hashed again at today's cost (stored hashes follow a raised cost as
        people sign in). Not a change of the person's: their sessions and tokens stay."""
        updated = replace(
            user, password_hash=await self._hasher.hash(password), version=user.version + 1
        )
        record = self._record(
            "user.updated", Actor.system("passwords"), user.name, {"password_rehashed": True}
        )
        await audited(
            self._audit, record,
            lambda: self._store.update_user(updated, expected_version=user.version),
            clock=self._clock,
        )  # fmt: skip
        return updated

    async def active(self, name: str) -> User | None:
        """The user if they exist and are active (for token checks; no permission needed)."""
        user = await self._store.get_user(name)
        return user if user is not None and user.active else None

    async def _sign_in_failed(self, name: str, why: str) -> None:
        shown = name[:128] if isinstance(name, str) else ""
        await self._audit.append(
            AuditRecord.new(
                type="user.sign_in_failed",
                actor=f"user:{shown}",
                subject=f"user:{shown}",
                time=self._clock.now(),
                outcome=Outcome.FAILURE,
                details={"name": shown, "reason": why},
            )
        )

    async def _load(self, name: str) -> User:
        user = await self._store.get_user(check_user_name(name))
        if user is None:
            raise UserNotFound(f"no user named {name!r}", details={"name": name})
        return user

    async def _change(
        self,
        user: User,
        actor: Actor,
        facts: Mapping[str, object],
        *,
        tag: str = "user.updated",
        **changes: object,
    ) -> User:
        updated = replace(
            user,
            **changes,  # type: ignore[arg-type]
            updated_at=self._clock.now(),
            version=user.version + 1,
        )
        record = self._record(tag, actor, user.name, facts)
        try:
            await audited(
                self._audit,
                record,
                lambda: self._store.update_user(updated, expected_version=user.version),
                clock=self._clock,
            )
        finally:
            if self._on_change is not None:
                self._on_change(user.name)
        return updated

    def _record(
        self, tag: str, actor: Actor, name: str, details: Mapping[str, object]
    ) -> AuditRecord:
        return AuditRecord.new(
            type=tag,
            actor=actor.label,
            subject=f"user:{name}",
            time=self._clock.now(),
            details=details,
        )


def _role_label(role: Role | None) -> str | None:
    return None if role is None else str(role)


def _display(text: str | None) -> str | None:
    if text is None:
        return None
    if len(text) > MAX_DISPLAY or any(ord(c) < 32 for c in text):
        raise InvalidInput(
            f"a display name is at most {MAX_DISPLAY} printable characters",
            details={"field": "display_name"},
        )
    return text.strip() or None


def _email(text: str | None) -> str | None:
    if text is None:
        return None
    if not _EMAIL.fullmatch(text):
        raise InvalidInput("not an email address", details={"field": "email"})
    return text

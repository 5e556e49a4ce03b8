"""``MemoryStore``'s users, grants and OAuth clients: the reference for the SQL store's.

A mixin over the store's one ``asyncio.Lock``, which makes each call atomic: a bulk revocation
computes every new value before it writes any. Values come back as the SQL store returns them:
datetimes in UTC (a naive one is a ``ValueError`` before anything is written), states and a
user's role as enums, a grant's scopes as a ``frozenset``, a client's redirect URIs as a tuple.
Users are kept by id with indexes by name and by ``(issuer, subject)``, the SQL store's unique
constraints.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from tether.delegation.models import Grant, GrantMatch, GrantState, OAuthClient, User, UserState
from tether.errors import (
    ClientNotFound,
    Conflict,
    GrantNotFound,
    InvalidInput,
    UserExists,
    UserNotFound,
    VersionConflict,
)
from tether.identity.models import Role
from tether.store._memory_values import as_utc, in_utc

__all__ = ["MemoryDelegation"]

#: The most users or grants one page lists, as in the SQL store.
_MAX_PAGE = 500


def _stored_user(user: User) -> User:
    role = None if user.role is None else Role(user.role)
    return replace(in_utc(user), state=UserState(user.state), role=role)


def _stored_grant(grant: Grant) -> Grant:
    return replace(in_utc(grant), scopes=frozenset(grant.scopes), state=GrantState(grant.state))


def _stored_client(client: OAuthClient) -> OAuthClient:
    return replace(in_utc(client), redirect_uris=tuple(client.redirect_uris))


def _page(limit: int) -> int:
    return max(0, min(limit, _MAX_PAGE))


def _matches(match: GrantMatch, grant: Grant) -> bool:
    return (
        (match.user is None or grant.user == match.user)
        and (match.agent is None or grant.agent == match.agent)
        and (match.session is None or grant.session == match.session)
    )


def _user_taken(user: User) -> UserExists:
    return UserExists(
        f"a user named {user.name!r}, or known to {user.issuer!r} as {user.subject!r}, "
        "exists already"
    )


class MemoryDelegation:
    """Users, grants and OAuth clients in dictionaries, under the store's ``_lock``.

    Cooperative: its ``__init__`` calls the next one's, so the store lists it before
    :class:`~tether.store._memory_credentials.MemoryCredentials` and both are set up.
    """

    _lock: asyncio.Lock

    def __init__(self) -> None:
        super().__init__()
        self._users: dict[str, User] = {}
        self._user_ids_by_name: dict[str, str] = {}
        self._user_ids_by_subject: dict[tuple[str, str], str] = {}
        self._grants: dict[str, Grant] = {}
        self._clients: dict[str, OAuthClient] = {}

    # -- users ---------------------------------------------------------------------------

    def _check_user_free(self, user: User) -> None:
        """``UserExists`` if another user holds the name or the (issuer, subject) pair; call
        with the lock held."""
        for holder in (
            self._user_ids_by_name.get(user.name),
            self._user_ids_by_subject.get((user.issuer, user.subject)),
        ):
            if holder is not None and holder != user.id:
                raise _user_taken(user)

    def _put_user(self, user: User) -> None:
        """Store a checked user; call with the lock held."""
        old = self._users.get(user.id)
        if old is not None:
            del self._user_ids_by_name[old.name]
            del self._user_ids_by_subject[old.issuer, old.subject]
        self._users[user.id] = user
        self._user_ids_by_name[user.name] = user.id
        self._user_ids_by_subject[user.issuer, user.subject] = user.id

    async def create_user(self, user: User) -> None:
        stored = _stored_user(user)
        async with self._lock:
            if stored.id in self._users:
                raise _user_taken(stored)
            self._check_user_free(stored)
            self._put_user(stored)

    async def get_user(self, name: str) -> User | None:
        async with self._lock:
            user_id = self._user_ids_by_name.get(name)
            return None if user_id is None else self._users[user_id]

    async def get_user_by_subject(self, issuer: str, subject: str) -> User | None:
        async with self._lock:
            user_id = self._user_ids_by_subject.get((issuer, subject))
            return None if user_id is None else self._users[user_id]

    async def list_users(self, *, limit: int = 100, after: str | None = None) -> list[User]:
        async with self._lock:
            found = [u for u in self._users.values() if after is None or u.name > after]
        found.sort(key=lambda u: u.name)
        return found[: _page(limit)]

    async def update_user(self, user: User, *, expected_version: int) -> None:
        stored = _stored_user(user)
        async with self._lock:
            current = self._users.get(user.id)
            if current is None:
                raise UserNotFound(f"no user {user.name!r} with id {user.id!r}")
            if current.version != expected_version:
                raise VersionConflict(
                    f"user {user.name!r} changed since version {expected_version}"
                )
            self._check_user_free(stored)
            self._put_user(stored)

    # -- grants --------------------------------------------------------------------------

    async def create_grant(self, grant: Grant) -> None:
        stored = _stored_grant(grant)
        async with self._lock:
            if stored.id in self._grants:
                raise Conflict(f"grant {grant.id!r} exists already")
            self._grants[stored.id] = stored

    async def get_grant(self, grant_id: str) -> Grant | None:
        async with self._lock:
            return self._grants.get(grant_id)

    def _matching_grants(self, match: GrantMatch, *, active_only: bool) -> Iterable[Grant]:
        """Grants matching ``match`` (only active ones if asked), unordered; call with the
        lock held."""
        return (
            grant
            for grant in self._grants.values()
            if _matches(match, grant) and (not active_only or grant.state is GrantState.ACTIVE)
        )

    async def list_grants(
        self,
        match: GrantMatch,
        *,
        in_force_at: datetime | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[Grant]:
        moment = None if in_force_at is None else as_utc(in_force_at)
        async with self._lock:
            found = [
                grant
                for grant in self._matching_grants(match, active_only=moment is not None)
                if (after is None or grant.id > after)
                and (moment is None or grant.expires_at > moment)
            ]
        found.sort(key=lambda grant: grant.id)
        return found[: _page(limit)]

    async def update_grant(self, grant: Grant, *, expected_version: int) -> None:
        stored = _stored_grant(grant)
        async with self._lock:
            current = self._grants.get(grant.id)
            if current is None:
                raise GrantNotFound(f"no grant with id {grant.id!r}")
            if current.version != expected_version:
                raise VersionConflict(
                    f"grant {grant.id!r} changed since version {expected_version}"
                )
            self._grants[stored.id] = stored

    async def revoke_grants(
        self,
        match: GrantMatch,
        *,
        at: datetime,
        by: str,
        reason: str | None,
        limit: int,
    ) -> list[Grant]:
        if match.empty:
            raise InvalidInput("a bulk revocation of grants needs a user, an agent or a session")
        revoked_at = as_utc(at)
        async with self._lock:
            chosen = sorted(self._matching_grants(match, active_only=True), key=lambda g: g.id)
            revoked = [
                replace(
                    grant,
                    state=GrantState.REVOKED,
                    revoked_at=revoked_at,
                    revoked_by=by,
                    revoke_reason=reason,
                    version=grant.version + 1,
                )
                for grant in chosen[: max(0, limit)]
            ]
            for grant in revoked:
                self._grants[grant.id] = grant
            return revoked

    # -- OAuth clients -------------------------------------------------------------------

    async def create_client(self, client: OAuthClient) -> None:
        stored = _stored_client(client)
        async with self._lock:
            if stored.id in self._clients:
                raise Conflict(f"OAuth client {client.id!r} exists already")
            self._clients[stored.id] = stored

    async def get_client(self, client_id: str) -> OAuthClient | None:
        async with self._lock:
            return self._clients.get(client_id)

    async def list_clients(self) -> list[OAuthClient]:
        async with self._lock:
            found = list(self._clients.values())
        return sorted(found, key=lambda client: client.id)

    async def delete_client(self, client_id: str) -> None:
        async with self._lock:
            if self._clients.pop(client_id, None) is None:
                raise ClientNotFound(f"no OAuth client with id {client_id!r}")

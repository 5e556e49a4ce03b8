"""``SqlStore``'s users, grants and OAuth clients (:class:`~tether.store.interfaces.UserStore`,
:class:`~tether.store.interfaces.GrantStore`, :class:`~tether.store.interfaces.ClientStore`),
as a mixin over the store's unit runner.

Each method builds its unit of work in :mod:`._delegation` and hands it to ``_run``: reads and
single writes as one statement (autocommit on PostgreSQL), a bulk revocation in one
transaction that holds SQLite's write lock. Every write tells the other replicas what changed
(``user:<name>``, ``grant:<id>``; see :mod:`.changes`), except a client's: clients change
rarely and the provider reads them from the store each time.
"""

from __future__ import annotations

from datetime import datetime

from tether.delegation.models import Grant, GrantMatch, OAuthClient, User
from tether.store.sql import _delegation as units
from tether.store.sql import changes
from tether.store.sql._runner import Runner, rows

__all__ = ["DelegationMethods"]


class DelegationMethods:
    """The user, grant and OAuth client part of ``SqlStore``; see :mod:`._delegation`."""

    # -- users ---------------------------------------------------------------------------

    async def create_user(self: Runner, user: User) -> None:
        await self._run(
            units.create_user_unit(user),
            write=True,
            one_statement=True,
            notify=changes.user_topic(user.name),
        )

    async def get_user(self: Runner, name: str) -> User | None:
        found = await self._run(
            rows(units.USER_BY_NAME, units.user_from_row, name=name),
            write=False,
            one_statement=True,
        )
        return found[0] if found else None

    async def get_user_by_subject(self: Runner, issuer: str, subject: str) -> User | None:
        found = await self._run(
            rows(units.USER_BY_SUBJECT, units.user_from_row, issuer=issuer, subject=subject),
            write=False,
            one_statement=True,
        )
        return found[0] if found else None

    async def list_users(self: Runner, *, limit: int = 100, after: str | None = None) -> list[User]:
        query = units.users_query(limit=limit, after=after)
        return await self._run(rows(query, units.user_from_row), write=False, one_statement=True)

    async def update_user(self: Runner, user: User, *, expected_version: int) -> None:
        await self._run(
            units.update_user_unit(user, expected_version=expected_version),
            write=True,
            one_statement=True,
            notify=changes.user_topic(user.name),
        )

    # -- grants --------------------------------------------------------------------------

    async def create_grant(self: Runner, grant: Grant) -> None:
        await self._run(
            units.create_grant_unit(grant),
            write=True,
            one_statement=True,
            notify=changes.grant_topic(grant.id),
        )

    async def get_grant(self: Runner, grant_id: str) -> Grant | None:
        found = await self._run(
            rows(units.GRANT_BY_ID, units.grant_from_row, id=grant_id),
            write=False,
            one_statement=True,
        )
        return found[0] if found else None

    async def list_grants(
        self: Runner,
        match: GrantMatch,
        *,
        in_force_at: datetime | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[Grant]:
        page = min(limit, units.MAX_PAGE)
        query = units.grants_query(match, limit=page, after=after, in_force_at=in_force_at)
        return await self._run(rows(query, units.grant_from_row), write=False, one_statement=True)

    async def update_grant(self: Runner, grant: Grant, *, expected_version: int) -> None:
        await self._run(
            units.update_grant_unit(grant, expected_version=expected_version),
            write=True,
            one_statement=True,
            notify=changes.grant_topic(grant.id),
        )

    async def revoke_grants(
        self: Runner,
        match: GrantMatch,
        *,
        at: datetime,
        by: str,
        reason: str | None,
        limit: int,
    ) -> list[Grant]:
        # Built first: an empty match or a naive ``at`` is refused even with no limit.
        unit = units.revoke_grants_unit(match, at=at, by=by, reason=reason, limit=limit)
        if limit <= 0:
            return []
        return await self._run(unit, write=True)  # it sends its own note (see ._delegation)

    # -- OAuth clients -------------------------------------------------------------------

    async def create_client(self: Runner, client: OAuthClient) -> None:
        await self._run(units.create_client_unit(client), write=True, one_statement=True)

    async def get_client(self: Runner, client_id: str) -> OAuthClient | None:
        found = await self._run(
            rows(units.CLIENT_BY_ID, units.client_from_row, id=client_id),
            write=False,
            one_statement=True,
        )
        return found[0] if found else None

    async def list_clients(self: Runner) -> list[OAuthClient]:
        return await self._run(
            rows(units.ALL_CLIENTS, units.client_from_row), write=False, one_statement=True
        )

    async def delete_client(self: Runner, client_id: str) -> None:
        await self._run(units.delete_client_unit(client_id), write=True, one_statement=True)

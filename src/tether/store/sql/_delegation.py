"""Users, grants and OAuth clients in SQL: their rows, their queries and their units of work.

Duplicates are found by the tables' keys: a taken user name or ``(issuer, subject)`` pair is
``UserExists``, a taken grant or client id ``Conflict``. Updates are one compare-and-set
statement on the version; a read follows only to explain a refusal.

A bulk revocation (:func:`revoke_grants_unit`) reads, decides and writes in one transaction.
It locks the rows it selects (``FOR UPDATE`` on PostgreSQL) and, unlike the lease reaper,
does not skip rows another transaction holds: a revocation waits for a grant being written
rather than leave it in force. On SQLite the unit runs under the database's write lock
(``BEGIN IMMEDIATE``), which serialises it anyway. Which grants it revoked is known only once
it has run, so on PostgreSQL it sends its change note itself, in its transaction.

OAuth clients are created and deleted, never updated; their writes send no change note (the
provider reads a client from the store each time it needs one).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

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
from tether.store.sql import changes
from tether.store.sql._runner import insert_once, unique_violation
from tether.store.sql.tables import as_utc, grants, oauth_clients, users, utc_or_none

__all__ = [
    "ALL_CLIENTS",
    "CLIENT_BY_ID",
    "GRANT_BY_ID",
    "MAX_PAGE",
    "USER_BY_NAME",
    "USER_BY_SUBJECT",
    "client_from_row",
    "client_values",
    "create_client_unit",
    "create_grant_unit",
    "create_user_unit",
    "delete_client_unit",
    "grant_from_row",
    "grant_values",
    "grants_query",
    "revoke_grants_unit",
    "update_grant_unit",
    "update_user_unit",
    "user_from_row",
    "user_values",
    "users_query",
]

#: The most users or grants one page lists.
MAX_PAGE = 500
#: ``Grant.user`` as a column (``user`` is reserved in PostgreSQL).
_USER = "user_name"
_ACTIVE = str(GrantState.ACTIVE)


# -- rows ------------------------------------------------------------------------------------


def user_values(user: User) -> dict[str, Any]:
    """The row of ``user``; ``ValueError`` for a naive datetime, before anything is sent."""
    return {
        "id": user.id,
        "name": user.name,
        "display_name": user.display_name,
        "email": user.email,
        "state": str(UserState(user.state)),
        "password_hash": user.password_hash,
        "issuer": user.issuer,
        "subject": user.subject,
        "created_at": as_utc(user.created_at),
        "updated_at": as_utc(user.updated_at),
        "disabled_at": utc_or_none(user.disabled_at),
        "role": None if user.role is None else str(Role(user.role)),
        "version": user.version,
    }


def user_from_row(row: Mapping[Any, Any]) -> User:
    """The user of a row (or of :func:`user_values`: what reading it back gives)."""
    return User(
        id=row["id"],
        name=row["name"],
        display_name=row["display_name"],
        email=row["email"],
        state=UserState(row["state"]),
        password_hash=row["password_hash"],
        issuer=row["issuer"],
        subject=row["subject"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        disabled_at=row["disabled_at"],
        role=None if row["role"] is None else Role(row["role"]),
        version=row["version"],
    )


def grant_values(grant: Grant) -> dict[str, Any]:
    """The row of ``grant`` (scopes as a sorted list); ``ValueError`` for a naive datetime,
    before anything is sent."""
    return {
        "id": grant.id,
        _USER: grant.user,
        "agent": grant.agent,
        "scopes": sorted(grant.scopes),
        "purpose": grant.purpose,
        "purpose_code": grant.purpose_code,
        "session": grant.session,
        "created_at": as_utc(grant.created_at),
        "expires_at": as_utc(grant.expires_at),
        "created_by": grant.created_by,
        "state": str(GrantState(grant.state)),
        "revoked_at": utc_or_none(grant.revoked_at),
        "revoked_by": grant.revoked_by,
        "revoke_reason": grant.revoke_reason,
        "version": grant.version,
    }


def grant_from_row(row: Mapping[Any, Any]) -> Grant:
    """The grant of a row (or of :func:`grant_values`: what reading it back gives)."""
    return Grant(
        id=row["id"],
        user=row[_USER],
        agent=row["agent"],
        scopes=frozenset(row["scopes"]),
        purpose=row["purpose"],
        purpose_code=row["purpose_code"],
        session=row["session"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        created_by=row["created_by"],
        state=GrantState(row["state"]),
        revoked_at=row["revoked_at"],
        revoked_by=row["revoked_by"],
        revoke_reason=row["revoke_reason"],
        version=row["version"],
    )


def client_values(client: OAuthClient) -> dict[str, Any]:
    """The row of ``client`` (redirect URIs as a JSON list); ``ValueError`` for a naive
    datetime, before anything is sent."""
    return {
        "id": client.id,
        "name": client.name,
        "redirect_uris": list(client.redirect_uris),
        "agent": client.agent,
        "created_at": as_utc(client.created_at),
        "created_by": client.created_by,
        "version": client.version,
    }


def client_from_row(row: Mapping[Any, Any]) -> OAuthClient:
    """The client of a row (or of :func:`client_values`: what reading it back gives)."""
    return OAuthClient(
        id=row["id"],
        name=row["name"],
        redirect_uris=tuple(row["redirect_uris"]),
        agent=row["agent"],
        created_at=row["created_at"],
        created_by=row["created_by"],
        version=row["version"],
    )


# -- queries ---------------------------------------------------------------------------------

#: Parameter ``name``.
USER_BY_NAME = sa.select(users).where(users.c.name == sa.bindparam("name"))
#: Parameters ``issuer`` and ``subject``.
USER_BY_SUBJECT = sa.select(users).where(
    users.c.issuer == sa.bindparam("issuer"), users.c.subject == sa.bindparam("subject")
)
#: Parameter ``id``.
GRANT_BY_ID = sa.select(grants).where(grants.c.id == sa.bindparam("id"))
#: Parameter ``id``.
CLIENT_BY_ID = sa.select(oauth_clients).where(oauth_clients.c.id == sa.bindparam("id"))
#: Every client, by id.
ALL_CLIENTS = sa.select(oauth_clients).order_by(oauth_clients.c.id)
_USER_ID = sa.select(users.c.id).where(users.c.id == sa.bindparam("id"))
_GRANT_ID = sa.select(grants.c.id).where(grants.c.id == sa.bindparam("id"))
#: Parameters: every column of ``grants``, then ``old_id`` and ``old_version`` (the
#: compare-and-set); executed with one or many rows.
_SAVE_GRANT = grants.update().where(
    grants.c.id == sa.bindparam("old_id"), grants.c.version == sa.bindparam("old_version")
)
_MATCH_COLUMNS = {"user": grants.c.user_name, "agent": grants.c.agent, "session": grants.c.session}


def users_query(*, limit: int, after: str | None) -> sa.Select[Any]:
    """Users by name, after ``after``, at most ``limit`` (and :data:`MAX_PAGE`)."""
    query = sa.select(users).order_by(users.c.name).limit(max(0, min(limit, MAX_PAGE)))
    if after is not None:
        query = query.where(users.c.name > after)
    return query


def grants_query(
    match: GrantMatch,
    *,
    limit: int,
    after: str | None = None,
    in_force_at: datetime | None = None,
    active_only: bool = False,
) -> sa.Select[Any]:
    """Grants matching ``match`` by id, after ``after``; with ``in_force_at``, those active and
    expiring after it; with ``active_only``, those active. ``ValueError`` for a naive
    ``in_force_at``."""
    query = sa.select(grants).order_by(grants.c.id).limit(max(0, limit))
    for name, column in _MATCH_COLUMNS.items():
        value = getattr(match, name)
        if value is not None:
            query = query.where(column == value)
    if active_only or in_force_at is not None:
        query = query.where(grants.c.state == _ACTIVE)
    if in_force_at is not None:
        query = query.where(grants.c.expires_at > as_utc(in_force_at))
    if after is not None:
        query = query.where(grants.c.id > after)
    return query


# -- user units ------------------------------------------------------------------------------


def _user_taken(user: User) -> UserExists:
    return UserExists(
        f"a user named {user.name!r}, or known to {user.issuer!r} as {user.subject!r}, "
        "exists already"
    )


def create_user_unit(user: User) -> Callable[[Connection], None]:
    """``ValueError`` at once for a naive datetime; the unit raises ``UserExists`` for a taken
    id, name or (issuer, subject) pair."""
    values = user_values(user)

    def unit(conn: Connection) -> None:
        try:
            conn.execute(users.insert(), values)
        except IntegrityError as exc:
            unique_violation(exc)
            raise _user_taken(user) from None

    return unit


def update_user_unit(user: User, *, expected_version: int) -> Callable[[Connection], None]:
    """One update of the user with ``user.id``; the read after it only explains a refusal."""
    values = user_values(user)
    del values["id"]
    update = (
        users.update()
        .where(users.c.id == user.id, users.c.version == expected_version)
        .values(values)
    )

    def unit(conn: Connection) -> None:
        try:
            if conn.execute(update).rowcount == 1:
                return
        except IntegrityError as exc:
            unique_violation(exc)
            raise _user_taken(user) from None
        if conn.execute(_USER_ID, {"id": user.id}).first() is None:
            raise UserNotFound(f"no user {user.name!r} with id {user.id!r}")
        raise VersionConflict(f"user {user.name!r} changed since version {expected_version}")

    return unit


# -- grant units -----------------------------------------------------------------------------


def create_grant_unit(grant: Grant) -> Callable[[Connection], None]:
    """``ValueError`` at once for a naive datetime; the unit raises ``Conflict`` for a taken
    id."""
    return insert_once(
        grants, grant_values(grant), lambda: Conflict(f"grant {grant.id!r} exists already")
    )


def update_grant_unit(grant: Grant, *, expected_version: int) -> Callable[[Connection], None]:
    """One update; the read after it only explains a refusal (grants are never deleted)."""
    row = {**grant_values(grant), "old_id": grant.id, "old_version": expected_version}

    def unit(conn: Connection) -> None:
        if conn.execute(_SAVE_GRANT, [row]).rowcount == 1:
            return
        if conn.execute(_GRANT_ID, {"id": grant.id}).first() is None:
            raise GrantNotFound(f"no grant with id {grant.id!r}")
        raise VersionConflict(f"grant {grant.id!r} changed since version {expected_version}")

    return unit


def revoke_grants_unit(
    match: GrantMatch, *, at: datetime, by: str, reason: str | None, limit: int
) -> Callable[[Connection], list[Grant]]:
    """Lock up to ``limit`` active grants matching ``match`` (lowest ids first), revoke each by
    compare-and-set, note them (PostgreSQL), return them as stored. ``InvalidInput`` at once
    for an empty match, ``ValueError`` for a naive ``at``. Run with ``write=True``."""
    if match.empty:
        raise InvalidInput("a bulk revocation of grants needs a user, an agent or a session")
    revoked_at = as_utc(at)
    locked = grants_query(match, limit=limit, active_only=True).with_for_update()

    def unit(conn: Connection) -> list[Grant]:
        current = [grant_from_row(row) for row in conn.execute(locked).mappings()]
        if not current:
            return []
        rows = [
            {
                **grant_values(
                    replace(
                        old,
                        state=GrantState.REVOKED,
                        revoked_at=revoked_at,
                        revoked_by=by,
                        revoke_reason=reason,
                        version=old.version + 1,
                    )
                ),
                "old_id": old.id,
                "old_version": old.version,
            }
            for old in current
        ]
        if conn.execute(_SAVE_GRANT, rows).rowcount != len(rows):  # not while the rows are held
            raise VersionConflict("a grant changed while this transaction held it")
        if conn.dialect.name == "postgresql":
            changes.notify(conn, changes.grant_topics([row["id"] for row in rows]))
        return [grant_from_row(row) for row in rows]

    return unit


# -- client units ----------------------------------------------------------------------------


def create_client_unit(client: OAuthClient) -> Callable[[Connection], None]:
    """``ValueError`` at once for a naive datetime; the unit raises ``Conflict`` for a taken
    id."""
    return insert_once(
        oauth_clients,
        client_values(client),
        lambda: Conflict(f"OAuth client {client.id!r} exists already"),
    )


def delete_client_unit(client_id: str) -> Callable[[Connection], None]:
    """One delete; ``ClientNotFound`` if it removed nothing."""
    delete = oauth_clients.delete().where(oauth_clients.c.id == client_id)

    def unit(conn: Connection) -> None:
        if conn.execute(delete).rowcount != 1:
            raise ClientNotFound(f"no OAuth client with id {client_id!r}")

    return unit

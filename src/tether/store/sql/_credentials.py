"""Leases and credential engines in SQL: their rows, their queries and their units of work.

A lease's bulk changes (:func:`change_unit`) read, decide and write in one transaction: they
lock the rows they select and skip rows another transaction holds (``FOR UPDATE SKIP LOCKED``
on PostgreSQL), so replicas reaping or revoking together never work on the same lease; on
SQLite the unit runs under the database's write lock (``BEGIN IMMEDIATE``), which serialises
them anyway. Each new value is written back by compare-and-set on the version it was read at,
in the same transaction; anything ``change`` raises rolls the whole batch back.

An engine is deleted only while none of its leases is live, checked in the deleting
transaction. On PostgreSQL the deletion locks the engine's row first and an insert of a lease
takes a ``FOR KEY SHARE`` lock on it, so a lease committed while the engine was being deleted
is seen by the check (or the deletion commits first and the insert follows it).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import pysqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from tether.credentials.models import (
    LIVE_STATES,
    EndKind,
    EngineConfig,
    Lease,
    LeaseMatch,
    LeaseState,
    RoleTemplate,
)
from tether.errors import Conflict, EngineExists, EngineNotFound, LeaseNotFound, VersionConflict
from tether.store._sqlite_audit import CarriedWrite
from tether.store.sql._runner import unique_violation
from tether.store.sql.tables import as_utc, credential_engines, leases, utc_or_none

__all__ = [
    "ENGINES",
    "ENGINE_BY_NAME",
    "LEASE_BY_ID",
    "MAX_LEASE_PAGE",
    "carried_lease_writes",
    "change_unit",
    "create_engine_unit",
    "create_lease_unit",
    "delete_engine_unit",
    "due_leases_query",
    "engine_from_row",
    "engine_values",
    "lease_from_row",
    "lease_values",
    "leases_query",
    "live_credentials_query",
    "next_expiry_query",
    "save_lease_unit",
    "update_engine_unit",
]

#: The most leases one page lists.
MAX_LEASE_PAGE = 500
_LIVE = sorted(str(s) for s in LIVE_STATES)
_RETRIED = [str(LeaseState.REVOKING), str(LeaseState.IRREVOCABLE)]
#: ``Lease`` fields named otherwise as columns.
_USER = "user_name"
_MATCH_COLUMNS = {
    "agent": leases.c.agent,
    "instance": leases.c.instance,
    "grant_id": leases.c.grant_id,
    "user": leases.c.user_name,
    "engine": leases.c.engine,
}
_TIMES = (
    "created_at",
    "expires_at",
    "max_expires_at",
    "updated_at",
    "next_attempt_at",
    "claimed_until",
    "ended_at",
)


# -- rows ------------------------------------------------------------------------------------


def lease_values(lease: Lease) -> dict[str, Any]:
    """The row of ``lease``; ``ValueError`` for a naive datetime, before anything is sent."""
    values: dict[str, Any] = {
        "id": lease.id,
        "engine": lease.engine,
        "role": lease.role,
        "credential": lease.credential,
        "agent": lease.agent,
        "instance": lease.instance,
        "grant_id": lease.grant_id,
        _USER: lease.user,
        "renewals": lease.renewals,
        "state": str(LeaseState(lease.state)),
        "ending": None if lease.ending is None else str(EndKind(lease.ending)),
        "reason": lease.reason,
        "attempts": lease.attempts,
        "last_error": lease.last_error,
        "version": lease.version,
    }
    values.update({name: utc_or_none(getattr(lease, name)) for name in _TIMES})
    return values


def lease_from_row(row: Mapping[Any, Any]) -> Lease:
    """The lease of a row (or of :func:`lease_values`: what reading it back gives)."""
    return Lease(
        id=row["id"],
        engine=row["engine"],
        role=row["role"],
        credential=row["credential"],
        agent=row["agent"],
        instance=row["instance"],
        grant_id=row["grant_id"],
        user=row[_USER],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        max_expires_at=row["max_expires_at"],
        renewals=row["renewals"],
        state=LeaseState(row["state"]),
        updated_at=row["updated_at"],
        ending=None if row["ending"] is None else EndKind(row["ending"]),
        reason=row["reason"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        claimed_until=row["claimed_until"],
        ended_at=row["ended_at"],
        last_error=row["last_error"],
        version=row["version"],
    )


def engine_values(engine: EngineConfig) -> dict[str, Any]:
    """The row of ``engine``; ``ValueError`` for a naive datetime, before anything is sent."""
    return {
        "name": engine.name,
        "kind": engine.kind,
        "settings": dict(engine.settings),
        "roles": {name: role.to_dict() for name, role in engine.roles.items()},
        "sealed_secret": engine.sealed_secret,
        "created_at": as_utc(engine.created_at),
        "created_by": engine.created_by,
        "updated_at": as_utc(engine.updated_at),
        "version": engine.version,
    }


def engine_from_row(row: Mapping[Any, Any]) -> EngineConfig:
    sealed = row["sealed_secret"]
    return EngineConfig(
        name=row["name"],
        kind=row["kind"],
        settings=MappingProxyType(row["settings"]),
        roles=MappingProxyType(
            {name: RoleTemplate.from_dict(role) for name, role in row["roles"].items()}
        ),
        created_at=row["created_at"],
        created_by=row["created_by"],
        updated_at=row["updated_at"],
        version=row["version"],
        sealed_secret=None if sealed is None else bytes(sealed),
    )


# -- queries ---------------------------------------------------------------------------------

#: Parameter ``id``.
LEASE_BY_ID = sa.select(leases).where(leases.c.id == sa.bindparam("id"))
#: Parameter ``name``.
ENGINE_BY_NAME = sa.select(credential_engines).where(
    credential_engines.c.name == sa.bindparam("name")
)
ENGINES = sa.select(credential_engines).order_by(credential_engines.c.name)
#: Parameters: every column of ``leases``, then ``old_id`` and ``old_version`` (the
#: compare-and-set); executed with one or many rows.
_SAVE_LEASE = leases.update().where(
    leases.c.id == sa.bindparam("old_id"), leases.c.version == sa.bindparam("old_version")
)
#: Parameter ``engine``: held by an inserting lease, so a deletion of the engine waits for it.
_ENGINE_KEY_SHARE = (
    sa.select(credential_engines.c.name)
    .where(credential_engines.c.name == sa.bindparam("engine"))
    .with_for_update(read=True, key_share=True)
)


def leases_query(
    match: LeaseMatch,
    *,
    states: Collection[LeaseState] | None,
    limit: int,
    after: str | None = None,
) -> sa.Select[Any]:
    """Leases matching ``match`` (in ``states``, when given), by id, after ``after``."""
    query = sa.select(leases).order_by(leases.c.id).limit(max(0, limit))
    for name, value in match.fields().items():
        if value is not None:
            query = query.where(_MATCH_COLUMNS[name] == value)
    if states is not None:
        query = query.where(leases.c.state.in_(sorted(str(LeaseState(s)) for s in states)))
    if after is not None:
        query = query.where(leases.c.id > after)
    return query


def due_leases_query(*, now: datetime, stale_before: datetime, limit: int) -> sa.Select[Any]:
    """The leases the reaper must act on, soonest due first (see ``LeaseStore``)."""
    c = leases.c
    now, stale_before = as_utc(now), as_utc(stale_before)
    expired = sa.and_(c.state == str(LeaseState.ACTIVE), c.expires_at <= now)
    stale = sa.and_(c.state == str(LeaseState.ISSUING), c.created_at < stale_before)
    retry = sa.and_(
        c.state.in_(_RETRIED),
        c.next_attempt_at <= now,
        sa.or_(c.claimed_until.is_(None), c.claimed_until <= now),
    )
    due_at = sa.case(
        (c.state == str(LeaseState.ACTIVE), c.expires_at),
        (c.state == str(LeaseState.ISSUING), c.created_at),
        else_=c.next_attempt_at,
    )
    return (
        sa.select(leases)
        .where(sa.or_(expired, stale, retry))
        .order_by(due_at, c.id)
        .limit(max(0, limit))
    )


def live_credentials_query(engine: str) -> sa.Select[Any]:
    return sa.select(leases.c.credential).where(
        leases.c.engine == engine, leases.c.state.in_(_LIVE)
    )


def next_expiry_query() -> sa.Select[Any]:
    """The earliest expiry of an active lease, straight from the ``(state, expires_at)`` index."""
    return (
        sa.select(leases.c.expires_at)
        .where(leases.c.state == str(LeaseState.ACTIVE))
        .order_by(leases.c.expires_at)
        .limit(1)
    )


# -- lease units -----------------------------------------------------------------------------


def _credential_taken(lease_id: str) -> Conflict:
    return Conflict(f"lease {lease_id!r}: its id or its credential is taken")


def create_lease_unit(lease: Lease) -> Callable[[Connection], None]:
    """``ValueError`` at once for a naive datetime; the unit raises ``Conflict`` for a taken
    id or credential."""
    values = lease_values(lease)

    def unit(conn: Connection) -> None:
        if conn.dialect.name == "postgresql":
            conn.execute(_ENGINE_KEY_SHARE, {"engine": lease.engine}).close()
        try:
            conn.execute(leases.insert(), values)
        except IntegrityError as exc:
            unique_violation(exc)
            raise _credential_taken(lease.id) from None

    return unit


def _write_back(conn: Connection, rows: list[dict[str, Any]]) -> int:
    """Run the compare-and-set update for ``rows``; how many it wrote."""
    try:
        return conn.execute(_SAVE_LEASE, rows).rowcount
    except IntegrityError as exc:
        unique_violation(exc)
        raise _credential_taken(str(rows[0]["old_id"])) from None


def save_lease_unit(lease: Lease, *, expected_version: int) -> Callable[[Connection], None]:
    """One update; the read after it only explains a refusal (leases are never deleted)."""
    row = {**lease_values(lease), "old_id": lease.id, "old_version": expected_version}

    def unit(conn: Connection) -> None:
        if _write_back(conn, [row]) == 1:
            return
        if conn.execute(LEASE_BY_ID, {"id": lease.id}).first() is None:
            raise LeaseNotFound(f"no lease with id {lease.id!r}")
        raise VersionConflict(f"lease {lease.id!r} changed since version {expected_version}")

    return unit


def carried_lease_writes() -> tuple[
    Callable[[Lease], CarriedWrite], Callable[[Lease, int], CarriedWrite]
]:
    """Makes :class:`~tether.store._sqlite_audit.CarriedWrite` of a new lease (the insert of
    :func:`create_lease_unit`) and of a lease over its expected version (the compare-and-set
    update of :func:`save_lease_unit`): each statement compiled once for SQLite's driver, its
    values bound as SQLAlchemy binds them — each column type's conversion for this dialect (a
    datetime as SQLite's DATETIME text, not the driver's own adaptation of it)."""
    create = _compiled_for_sqlite(leases.insert())
    save = _compiled_for_sqlite(_SAVE_LEASE)
    return (
        lambda lease: create(lease_values(lease)),
        lambda lease, expected_version: save(
            {**lease_values(lease), "old_id": lease.id, "old_version": expected_version}
        ),
    )


def _compiled_for_sqlite(
    statement: sa.Insert | sa.Update,
) -> Callable[[dict[str, Any]], CarriedWrite]:
    dialect = pysqlite.dialect()
    compiled = statement.compile(dialect=dialect, column_keys=[c.name for c in leases.c])
    names = tuple(compiled.positiontup or ())  # qmark: every bind, in order
    types = (compiled.binds[name].type.dialect_impl(dialect) for name in names)
    convert = [kind.bind_processor(dialect) for kind in types]
    text = compiled.string

    def write(row: dict[str, Any]) -> CarriedWrite:
        values = (row[name] for name in names)
        params = tuple(v if c is None else c(v) for c, v in zip(convert, values, strict=True))
        return CarriedWrite(text, params)

    return write


def _changed(old: Lease, change: Callable[[Lease], Lease]) -> Lease:
    new = change(old)
    if new.id != old.id:
        raise ValueError(f"a change of lease {old.id!r} must keep its id")
    return new


def change_unit(
    query: sa.Select[Any], change: Callable[[Lease], Lease]
) -> Callable[[Connection], list[Lease]]:
    """Lock what ``query`` selects (skipping rows others hold), store ``change`` of each by
    compare-and-set, return the leases as stored. Run with ``write=True``."""
    locked = query.with_for_update(skip_locked=True)

    def unit(conn: Connection) -> list[Lease]:
        current = [lease_from_row(row) for row in conn.execute(locked).mappings()]
        if not current:
            return []
        rows = [
            {**lease_values(_changed(old, change)), "old_id": old.id, "old_version": old.version}
            for old in current
        ]
        if _write_back(conn, rows) != len(rows):  # cannot happen while the rows are locked
            raise VersionConflict("a lease changed while this transaction held it")
        return [lease_from_row(row) for row in rows]

    return unit


# -- engine units ----------------------------------------------------------------------------


def create_engine_unit(engine: EngineConfig) -> Callable[[Connection], None]:
    values = engine_values(engine)

    def unit(conn: Connection) -> None:
        try:
            conn.execute(credential_engines.insert(), values)
        except IntegrityError as exc:
            unique_violation(exc)
            raise EngineExists(f"an engine named {engine.name!r} already exists") from None

    return unit


def update_engine_unit(
    engine: EngineConfig, *, expected_version: int
) -> Callable[[Connection], None]:
    """One update; the read after it only explains a refusal."""
    values = engine_values(engine)
    del values["name"]
    update = (
        credential_engines.update()
        .where(
            credential_engines.c.name == engine.name,
            credential_engines.c.version == expected_version,
        )
        .values(values)
    )

    def unit(conn: Connection) -> None:
        if conn.execute(update).rowcount == 1:
            return
        if conn.execute(ENGINE_BY_NAME, {"name": engine.name}).first() is None:
            raise EngineNotFound(f"no engine named {engine.name!r}")
        raise VersionConflict(f"engine {engine.name!r} changed since version {expected_version}")

    return unit


def delete_engine_unit(name: str) -> Callable[[Connection], None]:
    """Lock the engine's row, refuse while a lease of it is live, delete it."""
    held = (
        sa.select(credential_engines.c.name)
        .where(credential_engines.c.name == name)
        .with_for_update()
    )
    live = sa.select(leases.c.id).where(leases.c.engine == name, leases.c.state.in_(_LIVE))

    def unit(conn: Connection) -> None:
        if conn.execute(held).first() is None:
            raise EngineNotFound(f"no engine named {name!r}")
        if conn.execute(live.limit(1)).first() is not None:
            raise Conflict(
                f"engine {name!r} still has live leases: revoke them first",
                details={"engine": name},
            )
        conn.execute(credential_engines.delete().where(credential_engines.c.name == name))

    return unit

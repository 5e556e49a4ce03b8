"""``SqlStore``'s CIBA approval requests (:class:`~tether.store.interfaces.ApprovalStore`): their
rows, their queries and their units of work, and the mixin over the store's unit runner.

A taken id or ``auth_req_key`` is found by the table's keys and is ``Conflict``. An update is
one compare-and-set statement on the version, writing the version it is given; a read follows
only to explain a refusal. Each call is one statement (autocommit on PostgreSQL). Writes send
no change note: no replica keeps requests in memory, each poll reads its request from the
store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from tether.delegation.models import Approval, ApprovalMatch, ApprovalState
from tether.errors import ApprovalNotFound, Conflict, VersionConflict
from tether.store.sql._runner import Runner, insert_once, rows, unique_violation
from tether.store.sql.tables import approvals, as_utc, utc_or_none

__all__ = [
    "APPROVAL_BY_ID",
    "APPROVAL_BY_KEY",
    "MAX_PAGE",
    "ApprovalMethods",
    "approval_from_row",
    "approval_values",
    "approvals_query",
    "count_query",
    "create_approval_unit",
    "update_approval_unit",
]

#: The most requests one page lists.
MAX_PAGE = 500
#: ``Approval.user`` as a column (``user`` is reserved in PostgreSQL).
_USER = "user_name"


# -- rows ------------------------------------------------------------------------------------


def approval_values(approval: Approval) -> dict[str, Any]:
    """The row of ``approval`` (scope as a sorted list, details and approved positions as
    lists); ``ValueError`` for a naive datetime, before anything is sent."""
    return {
        "id": approval.id,
        "auth_req_key": approval.auth_req_key,
        "client": approval.client,
        "agent": approval.agent,
        _USER: approval.user,
        "scope": sorted(approval.scope),
        "binding_message": approval.binding_message,
        "details": [dict(item) for item in approval.details],
        "created_at": as_utc(approval.created_at),
        "expires_at": as_utc(approval.expires_at),
        "interval": approval.interval,
        "grant_id": approval.grant_id,
        "notification_endpoint": approval.notification_endpoint,
        "notification_token": approval.notification_token,
        "state": str(ApprovalState(approval.state)),
        "approved": list(approval.approved),
        "decided_at": utc_or_none(approval.decided_at),
        "decided_by": approval.decided_by,
        "last_polled_at": utc_or_none(approval.last_polled_at),
        "redeemed_at": utc_or_none(approval.redeemed_at),
        "version": approval.version,
    }


def approval_from_row(row: Mapping[Any, Any]) -> Approval:
    """The request of a row read back (details as read-only mappings)."""
    return Approval(
        id=row["id"],
        auth_req_key=row["auth_req_key"],
        client=row["client"],
        agent=row["agent"],
        user=row[_USER],
        scope=frozenset(row["scope"]),
        binding_message=row["binding_message"],
        details=tuple(MappingProxyType(item) for item in row["details"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        interval=row["interval"],
        grant_id=row["grant_id"],
        notification_endpoint=row["notification_endpoint"],
        notification_token=row["notification_token"],
        state=ApprovalState(row["state"]),
        approved=tuple(row["approved"]),
        decided_at=row["decided_at"],
        decided_by=row["decided_by"],
        last_polled_at=row["last_polled_at"],
        redeemed_at=row["redeemed_at"],
        version=row["version"],
    )


# -- queries ---------------------------------------------------------------------------------

#: Parameter ``id``.
APPROVAL_BY_ID = sa.select(approvals).where(approvals.c.id == sa.bindparam("id"))
#: Parameter ``key``.
APPROVAL_BY_KEY = sa.select(approvals).where(approvals.c.auth_req_key == sa.bindparam("key"))
_APPROVAL_ID = sa.select(approvals.c.id).where(approvals.c.id == sa.bindparam("id"))
#: Parameters: every column of ``approvals``, then ``old_id`` and ``old_version`` (the
#: compare-and-set).
_SAVE_APPROVAL = approvals.update().where(
    approvals.c.id == sa.bindparam("old_id"), approvals.c.version == sa.bindparam("old_version")
)
_MATCH_COLUMNS = {
    "user": approvals.c.user_name,
    "agent": approvals.c.agent,
    "state": approvals.c.state,
}


def approvals_query(match: ApprovalMatch, *, limit: int, after: str | None) -> sa.Select[Any]:
    """Requests matching ``match`` by id, after ``after``, at most ``limit`` (and
    :data:`MAX_PAGE`)."""
    query = sa.select(approvals).order_by(approvals.c.id).limit(max(0, min(limit, MAX_PAGE)))
    for name, column in _MATCH_COLUMNS.items():
        value = getattr(match, name)
        if value is not None:
            query = query.where(column == str(value))
    if after is not None:
        query = query.where(approvals.c.id > after)
    return query


def count_query(*, user: str, since: datetime) -> sa.Select[Any]:
    """How many requests ``user`` was sent at or after ``since``, from the
    ``(user_name, created_at)`` index; ``ValueError`` for a naive ``since``."""
    return (
        sa.select(sa.func.count().label("n"))
        .select_from(approvals)
        .where(approvals.c.user_name == user, approvals.c.created_at >= as_utc(since))
    )


# -- units -----------------------------------------------------------------------------------


def _taken(approval: Approval) -> Conflict:
    return Conflict(f"approval {approval.id!r}: its id or its auth_req_key is taken")


def create_approval_unit(approval: Approval) -> Callable[[Connection], None]:
    """``ValueError`` at once for a naive datetime; the unit raises ``Conflict`` for a taken
    id or ``auth_req_key``."""
    return insert_once(approvals, approval_values(approval), lambda: _taken(approval))


def update_approval_unit(
    approval: Approval, *, expected_version: int
) -> Callable[[Connection], None]:
    """One update, writing ``approval`` (its version included) as given; the read after it
    only explains a refusal (requests are never deleted)."""
    row = {**approval_values(approval), "old_id": approval.id, "old_version": expected_version}

    def unit(conn: Connection) -> None:
        try:
            if conn.execute(_SAVE_APPROVAL, [row]).rowcount == 1:
                return
        except IntegrityError as exc:
            unique_violation(exc)
            raise _taken(approval) from None
        if conn.execute(_APPROVAL_ID, {"id": approval.id}).first() is None:
            raise ApprovalNotFound(f"no approval with id {approval.id!r}")
        raise VersionConflict(f"approval {approval.id!r} changed since version {expected_version}")

    return unit


# -- methods ---------------------------------------------------------------------------------


class ApprovalMethods:
    """The approval request part of ``SqlStore``."""

    async def create_approval(self: Runner, approval: Approval) -> None:
        await self._run(create_approval_unit(approval), write=True, one_statement=True)

    async def get_approval(self: Runner, approval_id: str) -> Approval | None:
        found = await self._run(
            rows(APPROVAL_BY_ID, approval_from_row, id=approval_id),
            write=False,
            one_statement=True,
        )
        return found[0] if found else None

    async def find_approval(self: Runner, auth_req_key: str) -> Approval | None:
        found = await self._run(
            rows(APPROVAL_BY_KEY, approval_from_row, key=auth_req_key),
            write=False,
            one_statement=True,
        )
        return found[0] if found else None

    async def update_approval(self: Runner, approval: Approval, *, expected_version: int) -> None:
        unit = update_approval_unit(approval, expected_version=expected_version)
        await self._run(unit, write=True, one_statement=True)

    async def list_approvals(
        self: Runner, match: ApprovalMatch, *, limit: int = 100, after: str | None = None
    ) -> list[Approval]:
        query = approvals_query(match, limit=limit, after=after)
        return await self._run(rows(query, approval_from_row), write=False, one_statement=True)

    async def count_approvals(self: Runner, *, user: str, since: datetime) -> int:
        query = count_query(user=user, since=since)
        found: list[int] = await self._run(
            rows(query, lambda row: int(row["n"])), write=False, one_statement=True
        )
        return found[0]

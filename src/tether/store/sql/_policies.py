"""Units of work for versioned policy sets: add a version, move the active pointer.

Both writes read, decide and write, so they run one at a time across replicas: on SQLite the
unit's ``BEGIN IMMEDIATE`` holds the database's write lock; on PostgreSQL the unit first takes a
transaction-scoped advisory lock, so the next version is ``max + 1`` with no gaps (a sequence
would burn numbers on a refused write) and the compare-and-set of the active version reads what
the previous writer committed. Everything that can be refused (a naive time, an unknown version,
a moved active version) is refused before the first write or rolls back with the unit, so a
refused call writes nothing and consumes no version number.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tether.errors import PolicySetNotFound, VersionConflict
from tether.policy.models import PolicySetVersion
from tether.store.sql import _codec as codec
from tether.store.sql import _statements as statements
from tether.store.sql.tables import as_utc

__all__ = ["activate_unit", "add_unit"]

#: An arbitrary constant naming the policy sets' write lock among PostgreSQL advisory locks.
_PG_POLICY_LOCK_KEY = 0x7E7E_0003


def _lock(conn: Connection) -> None:
    """Serialise policy writes across replicas (SQLite's ``BEGIN IMMEDIATE`` does already)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_POLICY_LOCK_KEY)))


def _name(version: int | None) -> str:
    return "none" if version is None else f"version {version}"


def _check_active(conn: Connection, expected: int | None) -> None:
    """``VersionConflict`` unless the active version is ``expected`` (``None``: none yet)."""
    active = conn.execute(statements.ACTIVE_POLICY_VERSION).scalar_one_or_none()
    if active != expected:
        raise VersionConflict(
            f"the active policy set is {_name(active)}, not {_name(expected)} as expected"
        )


def _set_active(conn: Connection, version: int, at: datetime) -> None:
    upsert = statements.set_active_policy(postgres=conn.dialect.name == "postgresql")
    values = {"id": statements.POLICY_STATE_ID, "active_version": version, "updated_at": at}
    conn.execute(upsert, values)


def add_unit(
    *,
    text: str,
    sha256: str,
    created_at: datetime,
    created_by: str,
    comment: str | None,
    activate: bool,
    expected_active: int | None,
) -> Callable[[Connection], PolicySetVersion]:
    """The unit that stores the next version and, with ``activate``, makes it the active one.
    ``ValueError`` at once for a naive ``created_at``."""
    created_at = as_utc(created_at)
    values = {
        "text": text,
        "sha256": sha256,
        "created_at": created_at,
        "created_by": created_by,
        "comment": comment,
    }

    def unit(conn: Connection) -> PolicySetVersion:
        _lock(conn)
        if activate:
            _check_active(conn, expected_active)
        added = codec.policy_set_from_row(
            conn.execute(statements.ADD_POLICY_SET, values).mappings().one()
        )
        if activate:
            _set_active(conn, added.version, created_at)
        return added

    return unit


def activate_unit(
    version: int, *, expected_active: int | None, at: datetime
) -> Callable[[Connection], None]:
    """The unit that makes ``version`` the active one if ``expected_active`` still is.
    ``ValueError`` at once for a naive ``at``."""
    at = as_utc(at)

    def unit(conn: Connection) -> None:
        _lock(conn)
        if conn.execute(statements.POLICY_SET, {"version": version}).first() is None:
            raise PolicySetNotFound(f"no policy set with version {version}")
        _check_active(conn, expected_active)
        _set_active(conn, version, at)

    return unit

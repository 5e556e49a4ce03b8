"""The store's statements that need a dialect (upserts) or run on every token, built once.

Building a SQLAlchemy statement costs more than running it: 50–230 µs for an upsert, against
about 30 µs to execute a cached one on SQLite. So the statements of the token path are built
once per dialect with their values left as parameters, and each call only binds them
(``conn.execute(statement, {...})``). The rest are built per call in ``store.py``.

Single use is ``INSERT … ON CONFLICT DO UPDATE … WHERE expired … RETURNING``: a row comes back
only when the key was free or expired, atomically, on both databases.
"""

from __future__ import annotations

import functools

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from tether.store.sql.tables import (
    UtcDateTime,
    agent_instances,
    agent_keys,
    agents,
    audit_records,
    replay_keys,
)

__all__ = [
    "AGENT_BY_ID",
    "AGENT_BY_NAME",
    "AGENT_WITH_KEYS",
    "KEY_PREFIX",
    "append_audit",
    "consume",
    "see_instance",
    "upsert",
]

#: Key columns joined to their agent are labelled with this prefix.
KEY_PREFIX = "key_"

#: Parameter ``name``.
AGENT_BY_NAME = sa.select(agents).where(agents.c.name == sa.bindparam("name"))
#: Parameter ``id``.
AGENT_BY_ID = sa.select(agents).where(agents.c.id == sa.bindparam("id"))
#: Parameter ``name``: the agent joined to its active keys, oldest first. One statement, so
#: one snapshot on either database; no row if there is no such agent, one row with null key
#: columns if it has no active key.
AGENT_WITH_KEYS = (
    sa.select(agents, *(c.label(f"{KEY_PREFIX}{c.name}") for c in agent_keys.c))
    .select_from(
        agents.outerjoin(
            agent_keys,
            sa.and_(agent_keys.c.agent_id == agents.c.id, agent_keys.c.removed_at.is_(None)),
        )
    )
    .where(agents.c.name == sa.bindparam("name"))
    .order_by(agent_keys.c.created_at, agent_keys.c.kid)
)


def upsert(
    table: sa.Table,
    *,
    postgres: bool,
    keys: list[str],
    update: list[str] | None = None,
    where: sa.ColumnElement[bool] | None = None,
) -> sa.Insert:
    """``INSERT … ON CONFLICT (keys) DO UPDATE`` the ``update`` columns (default: all others);
    the values are the parameters it is executed with."""
    if update is None:
        update = [c.name for c in table.c if c.name not in keys]
    if postgres:
        pg = postgresql.insert(table)
        set_pg = {name: pg.excluded[name] for name in update}
        return pg.on_conflict_do_update(index_elements=keys, set_=set_pg, where=where)
    lite = sqlite.insert(table)
    set_lite = {name: lite.excluded[name] for name in update}
    return lite.on_conflict_do_update(index_elements=keys, set_=set_lite, where=where)


@functools.cache
def consume(*, postgres: bool) -> sa.Insert:
    """Parameters ``key``, ``expires_at`` and ``now``; returns the key if it took it."""
    expired = replay_keys.c.expires_at <= sa.bindparam("now", type_=UtcDateTime())
    statement = upsert(replay_keys, postgres=postgres, keys=["key"], where=expired)
    return statement.returning(replay_keys.c.key)


@functools.cache
def see_instance(*, postgres: bool) -> sa.Insert:
    """Parameters: every column of ``agent_instances``; returns the row. ``first_seen`` is
    kept when the instance is known."""
    statement = upsert(
        agent_instances,
        postgres=postgres,
        keys=["agent_id", "instance_id"],
        update=["spiffe_id", "last_seen", "last_kid", "last_auth_method"],
    )
    return statement.returning(*agent_instances.c)


@functools.cache
def append_audit(*, postgres: bool) -> sa.Insert:
    """Parameters: the record's columns; returns its sequence number. On PostgreSQL the number
    is ``max + 1``, under the advisory lock the caller holds (see ``store.py``)."""
    insert = audit_records.insert()
    if postgres:
        last = sa.select(sa.func.coalesce(sa.func.max(audit_records.c.sequence), 0))
        insert = insert.values(sequence=last.scalar_subquery() + 1)
    return insert.returning(audit_records.c.sequence)

"""The store's statements that need a dialect (upserts) or run on every token, built once.

Building a SQLAlchemy statement costs more than running it: 50–230 µs for an upsert, against
about 30 µs to execute a cached one on SQLite. So the statements of the token path are built
once per dialect with their values left as parameters, and each call only binds them
(``conn.execute(statement, {...})``). The policy-set statements live here too, shared by
``_policies.py`` and ``store.py``. The rest are built per call in ``store.py``.

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
    policy_sets,
    policy_state,
    replay_keys,
    svid_revocations,
)

__all__ = [
    "ACTIVE_POLICY_SET",
    "ACTIVE_POLICY_VERSION",
    "ADD_POLICY_SET",
    "AGENT_BY_ID",
    "AGENT_BY_NAME",
    "AGENT_WITH_KEYS",
    "KEY_PREFIX",
    "LIVE_REVOCATIONS",
    "POLICY_SET",
    "POLICY_STATE_ID",
    "consume",
    "see_instance",
    "set_active_policy",
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

#: Parameter ``now``: the live token revocations, oldest first. Read every second by every
#: replica (the revocation list's refresh), so built once.
LIVE_REVOCATIONS = (
    sa.select(svid_revocations)
    .where(svid_revocations.c.until > sa.bindparam("now", type_=UtcDateTime()))
    .order_by(svid_revocations.c.revoked_at, svid_revocations.c.id)
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


#: The id of the one row of ``policy_state``.
POLICY_STATE_ID = 1
#: Parameter ``version``.
POLICY_SET = sa.select(policy_sets).where(policy_sets.c.version == sa.bindparam("version"))
#: The active version's number; no row before the first activation.
ACTIVE_POLICY_VERSION = sa.select(policy_state.c.active_version).where(
    policy_state.c.id == POLICY_STATE_ID
)
#: The active version, in one statement.
ACTIVE_POLICY_SET = (
    sa.select(policy_sets)
    .join(policy_state, policy_state.c.active_version == policy_sets.c.version)
    .where(policy_state.c.id == POLICY_STATE_ID)
)
#: Parameters: every column of ``policy_sets`` but ``version``, which is ``max + 1`` (the
#: caller holds the write lock, see ``_policies.py``); returns the row.
_LAST_POLICY_VERSION = sa.select(sa.func.coalesce(sa.func.max(policy_sets.c.version), 0))
ADD_POLICY_SET = (
    policy_sets.insert()
    .values(version=_LAST_POLICY_VERSION.scalar_subquery() + 1)
    .returning(*policy_sets.c)
)


@functools.cache
def set_active_policy(*, postgres: bool) -> sa.Insert:
    """Parameters ``id`` (:data:`POLICY_STATE_ID`), ``active_version`` and ``updated_at``."""
    return upsert(policy_state, postgres=postgres, keys=["id"])

"""``SqlStore``: the :class:`~tether.store.interfaces.Store` on SQLAlchemy Core, async.

Written for the token path, which calls ``consume_once``, ``record_instance_seen`` and
``append_audit`` for every token it issues: each of those is one statement (an upsert or an
insert with ``RETURNING``), and on PostgreSQL single statements run in autocommit, so each costs
one round trip with no ``BEGIN``/``COMMIT``. Operations of several statements run in one short
transaction.

Duplicates are found by primary keys and unique constraints (an ``IntegrityError`` becomes the
domain's error), and single use by ``INSERT … ON CONFLICT DO UPDATE … WHERE expired``, so both
hold across concurrent callers and replicas. A lost connection, an exhausted pool or a locked
database becomes :class:`~tether.errors.StoreUnavailable`; a value the columns refuse (a naive
datetime) is the caller's ``ValueError``, as in the memory store.

Audit sequence numbers have no gaps and become visible in order, so a reader that pages with
``after_sequence`` never skips a record that commits late. SQLite gets that from its single
writer. PostgreSQL's sequences give neither (a refused insert burns a number; a later number can
commit first), so there an append takes a transaction-scoped advisory lock and numbers the
record ``max + 1``: appends from every replica go one at a time, each in a few round trips.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from types import TracebackType
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    StatementError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tether._internal.clock import Clock
from tether.audit.records import AuditRecord
from tether.crypto.stored import KeyPurpose, StoredKey
from tether.errors import (
    AgentExists,
    AgentNotFound,
    Conflict,
    KeyExists,
    KeyNotFound,
    OperatorTokenNotFound,
    ReplayDetected,
    VersionConflict,
)
from tether.identity.models import (
    Agent,
    AgentKey,
    AgentState,
    Instance,
    OperatorToken,
    RiskAssessment,
)
from tether.store.sql import _codec as codec
from tether.store.sql.engine import SQLITE_BEGIN, unavailable
from tether.store.sql.tables import (
    UtcDateTime,
    agent_instances,
    agent_keys,
    agents,
    audit_records,
    operator_tokens,
    replay_keys,
    risk_assessments,
    stored_keys,
)

__all__ = ["SqlStore"]

_Violation = Literal["unique", "foreign_key"]
#: An arbitrary constant naming the audit log's append lock among PostgreSQL advisory locks.
_PG_AUDIT_LOCK_KEY = 0x7E7E_0002


def _violation(exc: IntegrityError) -> _Violation:
    """Which constraint an ``IntegrityError`` broke; re-raise anything unexpected."""
    sqlstate = getattr(exc.orig, "sqlstate", None)
    text = str(exc.orig)
    if sqlstate == "23505" or "UNIQUE constraint failed" in text:
        return "unique"
    if sqlstate == "23503" or "FOREIGN KEY constraint failed" in text:
        return "foreign_key"
    raise exc


class SqlStore:
    """The store on SQLite or PostgreSQL; open it with :func:`tether.store.sql.open_sql_store`."""

    def __init__(self, engine: AsyncEngine, *, url: URL, clock: Clock) -> None:
        self._engine = engine
        self._url = url
        self._clock = clock
        self._postgres = engine.dialect.name == "postgresql"
        # A single statement needs no BEGIN/COMMIT: on PostgreSQL that saves two round trips,
        # on SQLite two hops to the driver's thread.
        self._autocommit = engine.execution_options(
            **({"isolation_level": "AUTOCOMMIT"} if self._postgres else {SQLITE_BEGIN: "NONE"})
        )

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def close(self) -> None:
        await self._engine.dispose()

    async def __aenter__(self) -> SqlStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- plumbing ------------------------------------------------------------------------

    @asynccontextmanager
    async def _begin(self, engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
        try:
            async with engine.begin() as conn:
                yield conn
        except (OperationalError, InterfaceError, PoolTimeout) as exc:
            raise unavailable(exc, self._url) from None
        except StatementError as exc:
            # Refused while binding parameters, before the database saw anything.
            if isinstance(exc.orig, ValueError) and not isinstance(exc, DBAPIError):
                raise exc.orig from None
            raise

    def _transaction(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """Several statements, all or nothing."""
        return self._begin(self._engine)

    def _statement(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """One statement, atomic by itself: no BEGIN/COMMIT around it."""
        return self._begin(self._autocommit)

    async def _rows(self, query: sa.Select[Any]) -> list[sa.RowMapping]:
        async with self._statement() as conn:
            return list((await conn.execute(query)).mappings())

    async def _row(self, query: sa.Select[Any]) -> sa.RowMapping | None:
        async with self._statement() as conn:
            row: sa.RowMapping | None = (await conn.execute(query)).mappings().first()
        return row

    def _upsert(
        self,
        table: sa.Table,
        values: Mapping[str, Any],
        *,
        keys: list[str],
        update: list[str] | None = None,
        where: sa.ColumnElement[bool] | None = None,
    ) -> sa.Insert:
        """``INSERT … ON CONFLICT (keys) DO UPDATE`` the ``update`` columns (default: all)."""
        if update is None:
            update = [name for name in values if name not in keys]
        if self._postgres:
            pg = postgresql.insert(table).values(values)
            set_pg = {name: pg.excluded[name] for name in update}
            return pg.on_conflict_do_update(index_elements=keys, set_=set_pg, where=where)
        lite = sqlite.insert(table).values(values)
        set_lite = {name: lite.excluded[name] for name in update}
        return lite.on_conflict_do_update(index_elements=keys, set_=set_lite, where=where)

    # -- agents --------------------------------------------------------------------------

    async def create_agent(self, agent: Agent, assessment: RiskAssessment) -> None:
        async with self._transaction() as conn:
            try:
                await conn.execute(agents.insert(), codec.agent_values(agent))
                await conn.execute(risk_assessments.insert(), codec.assessment_values(assessment))
            except IntegrityError as exc:
                if _violation(exc) == "foreign_key":
                    raise AgentNotFound("the assessment names an unknown agent") from None
                raise AgentExists(f"an agent named {agent.name!r} already exists") from None

    async def get_agent(self, name: str) -> Agent | None:
        row = await self._row(sa.select(agents).where(agents.c.name == name))
        return None if row is None else codec.agent_from_row(row)

    async def get_agent_by_id(self, agent_id: str) -> Agent | None:
        row = await self._row(sa.select(agents).where(agents.c.id == agent_id))
        return None if row is None else codec.agent_from_row(row)

    async def list_agents(
        self, *, state: AgentState | None = None, limit: int = 100, after: str | None = None
    ) -> list[Agent]:
        query = sa.select(agents).order_by(agents.c.name).limit(max(0, limit))
        if state is not None:
            query = query.where(agents.c.state == str(state))
        if after is not None:
            query = query.where(agents.c.name > after)
        return [codec.agent_from_row(row) for row in await self._rows(query)]

    async def update_agent(
        self, agent: Agent, *, expected_version: int, assessment: RiskAssessment | None = None
    ) -> None:
        values = codec.agent_values(agent)
        del values["id"]
        update = (
            agents.update()
            .where(agents.c.id == agent.id, agents.c.version == expected_version)
            .values(values)
        )
        async with self._transaction() as conn:
            try:
                if (await conn.execute(update)).rowcount != 1:
                    raise VersionConflict(
                        f"agent {agent.name!r} changed since version {expected_version}"
                    )
                if assessment is not None:
                    await conn.execute(
                        risk_assessments.insert(), codec.assessment_values(assessment)
                    )
            except IntegrityError as exc:
                if _violation(exc) == "foreign_key":
                    raise AgentNotFound("the assessment names an unknown agent") from None
                raise AgentExists(f"an agent named {agent.name!r} already exists") from None

    async def list_assessments(self, agent_id: str) -> list[RiskAssessment]:
        query = (
            sa.select(risk_assessments)
            .where(risk_assessments.c.agent_id == agent_id)
            .order_by(risk_assessments.c.assessed_at, risk_assessments.c.seq)
        )
        return [codec.assessment_from_row(row) for row in await self._rows(query)]

    # -- keys and instances --------------------------------------------------------------

    async def add_key(self, key: AgentKey) -> None:
        async with self._statement() as conn:
            try:
                await conn.execute(agent_keys.insert(), codec.key_values(key))
            except IntegrityError as exc:
                if _violation(exc) == "foreign_key":
                    raise AgentNotFound("no agent with this id") from None
                raise KeyExists(f"the agent already has a key with kid {key.kid!r}") from None

    async def list_keys(self, agent_id: str, *, include_removed: bool = False) -> list[AgentKey]:
        query = (
            sa.select(agent_keys)
            .where(agent_keys.c.agent_id == agent_id)
            .order_by(agent_keys.c.created_at, agent_keys.c.kid)
        )
        if not include_removed:
            query = query.where(agent_keys.c.removed_at.is_(None))
        return [codec.key_from_row(row) for row in await self._rows(query)]

    async def remove_key(self, agent_id: str, kid: str, *, at: datetime) -> AgentKey:
        update = (
            agent_keys.update()
            .where(
                agent_keys.c.agent_id == agent_id,
                agent_keys.c.kid == kid,
                agent_keys.c.removed_at.is_(None),
            )
            .values(removed_at=at)
            .returning(*agent_keys.c)
        )
        async with self._statement() as conn:
            row = (await conn.execute(update)).mappings().first()
        if row is None:
            raise KeyNotFound(f"the agent has no active key with kid {kid!r}")
        return codec.key_from_row(row)

    async def record_instance_seen(
        self,
        *,
        agent_id: str,
        instance_id: str,
        spiffe_id: str,
        kid: str | None,
        auth_method: str,
        at: datetime,
    ) -> Instance:
        values = {
            "agent_id": agent_id,
            "instance_id": instance_id,
            "spiffe_id": spiffe_id,
            "first_seen": at,
            "last_seen": at,
            "last_kid": kid,
            "last_auth_method": auth_method,
        }
        upsert = self._upsert(
            agent_instances,
            values,
            keys=["agent_id", "instance_id"],
            update=["spiffe_id", "last_seen", "last_kid", "last_auth_method"],  # not first_seen
        ).returning(*agent_instances.c)
        async with self._statement() as conn:
            try:
                row = (await conn.execute(upsert)).mappings().one()
            except IntegrityError as exc:
                _violation(exc)
                raise AgentNotFound("no agent with this id") from None
        return codec.instance_from_row(row)

    async def list_instances(self, agent_id: str) -> list[Instance]:
        query = (
            sa.select(agent_instances)
            .where(agent_instances.c.agent_id == agent_id)
            .order_by(agent_instances.c.first_seen, agent_instances.c.instance_id)
        )
        return [codec.instance_from_row(row) for row in await self._rows(query)]

    # -- replay --------------------------------------------------------------------------

    async def consume_once(self, key: str, *, expires_at: datetime) -> None:
        upsert = self._upsert(
            replay_keys,
            {"key": key, "expires_at": expires_at},
            keys=["key"],
            where=replay_keys.c.expires_at <= self._clock.now(),
        ).returning(replay_keys.c.key)
        async with self._statement() as conn:
            consumed = (await conn.execute(upsert)).first()
        if consumed is None:
            raise ReplayDetected("this single-use value has been used already")

    async def purge_replay_keys(self, *, before: datetime) -> int:
        delete = replay_keys.delete().where(replay_keys.c.expires_at < before)
        async with self._statement() as conn:
            return (await conn.execute(delete)).rowcount

    # -- operator tokens -----------------------------------------------------------------

    async def create_operator_token(self, token: OperatorToken) -> None:
        async with self._statement() as conn:
            try:
                await conn.execute(operator_tokens.insert(), codec.operator_token_values(token))
            except IntegrityError as exc:
                _violation(exc)
                raise Conflict("an operator token with this id or hash exists") from None

    async def get_operator_token(self, token_hash: str) -> OperatorToken | None:
        query = sa.select(operator_tokens).where(operator_tokens.c.token_hash == token_hash)
        row = await self._row(query)
        return None if row is None else codec.operator_token_from_row(row)

    async def list_operator_tokens(self) -> list[OperatorToken]:
        query = sa.select(operator_tokens).order_by(
            operator_tokens.c.created_at, operator_tokens.c.id
        )
        return [codec.operator_token_from_row(row) for row in await self._rows(query)]

    async def revoke_operator_token(self, token_id: str, *, at: datetime) -> None:
        # A second revocation keeps the time of the first.
        revoked_at = sa.func.coalesce(
            operator_tokens.c.revoked_at, sa.bindparam("at", at, type_=UtcDateTime())
        )
        update = (
            operator_tokens.update()
            .where(operator_tokens.c.id == token_id)
            .values(revoked_at=revoked_at)
        )
        async with self._statement() as conn:
            if (await conn.execute(update)).rowcount != 1:
                raise OperatorTokenNotFound(f"no operator token with id {token_id!r}")

    # -- key ring ------------------------------------------------------------------------

    async def list_stored_keys(self, purpose: KeyPurpose | None = None) -> list[StoredKey]:
        query = sa.select(stored_keys).order_by(stored_keys.c.created_at, stored_keys.c.kid)
        if purpose is not None:
            query = query.where(stored_keys.c.purpose == str(purpose))
        return [codec.stored_key_from_row(row) for row in await self._rows(query)]

    async def save_stored_key(self, key: StoredKey) -> None:
        upsert = self._upsert(stored_keys, codec.stored_key_values(key), keys=["kid"])
        async with self._statement() as conn:
            await conn.execute(upsert)

    # -- audit ---------------------------------------------------------------------------

    async def append_audit(self, record: AuditRecord) -> int:
        values = codec.audit_values(record)
        if self._postgres:
            last = sa.select(sa.func.coalesce(sa.func.max(audit_records.c.sequence), 0))
            values["sequence"] = last.scalar_subquery() + 1
        insert = audit_records.insert().values(values).returning(audit_records.c.sequence)
        async with self._transaction() if self._postgres else self._statement() as conn:
            if self._postgres:
                lock = sa.select(sa.func.pg_advisory_xact_lock(_PG_AUDIT_LOCK_KEY))
                await conn.execute(lock)
            try:
                sequence: int = (await conn.execute(insert)).scalar_one()
            except IntegrityError as exc:
                _violation(exc)
                raise Conflict(f"audit record {record.id!r} was appended already") from None
        return sequence

    async def list_audit(
        self, *, after_sequence: int = 0, limit: int = 100, type_prefix: str | None = None
    ) -> list[tuple[int, AuditRecord]]:
        query = (
            sa.select(audit_records)
            .where(audit_records.c.sequence > after_sequence)
            .order_by(audit_records.c.sequence)
            .limit(max(0, limit))
        )
        if type_prefix is not None:
            # substr, not LIKE: LIKE ignores case on SQLite and treats '_' and '%' as wildcards.
            prefix = sa.func.substr(audit_records.c.type, 1, len(type_prefix))
            query = query.where(prefix == type_prefix)
        rows = await self._rows(query)
        return [(row["sequence"], codec.audit_from_row(row)) for row in rows]

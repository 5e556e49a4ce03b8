"""``SqlStore``: the :class:`~tether.store.interfaces.Store` on SQLAlchemy Core.

Each operation is one *unit of work*: a synchronous function over a SQLAlchemy ``Connection``
that runs all of its statements, handed in one go to the backend's runner (:mod:`._units`).
SQLite runs on the synchronous pysqlite engine in one worker thread owned by the store: the
asyncio adapter over aiosqlite hopped between threads four or five times per statement (about
90 µs a hop on a 2-vCPU host, 1.1–1.7 ms a call), whereas one hop per unit costs 0.3 ms for a
read of two SELECTs and 0.9 ms for a durable write. PostgreSQL stays on the asyncio engine
(psycopg), which waits on the network, not on threads, and runs the same unit with
``run_sync``; there a unit of one statement runs in autocommit (one round trip, no
``BEGIN``/``COMMIT``) and a unit of several in one short transaction. The token path is three
units per token: ``get_agent_with_keys`` (one join), ``record_authentication`` and
``append_audit_entries`` (the audit log's, :mod:`._audit`).

Duplicates are found by primary keys and unique constraints (an ``IntegrityError`` becomes the
domain's error), and single use by ``INSERT … ON CONFLICT DO UPDATE … WHERE expired``, so both
hold across concurrent callers and replicas. A lost connection, an exhausted pool, a locked
database or a closed store becomes :class:`~tether.errors.StoreUnavailable`; a value the columns
refuse (a naive datetime) is the caller's ``ValueError``, as in the memory store.

Audit sequence numbers have no gaps and become visible in order, so a reader that pages with
``after_sequence`` never skips a record that commits late. SQLite gets that from its single
writer. PostgreSQL's sequences give neither (a refused insert burns a number; a later number can
commit first), so there an append takes a transaction-scoped advisory lock and numbers the
record ``max + 1``: appends from every replica go one at a time, each in a few round trips.
Policy-set versions are numbered the same way, and the active version is moved by
compare-and-set under the same kind of lock (:mod:`._policies`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    StatementError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

from tether._internal.clock import Clock
from tether.crypto.stored import KeyPurpose, StoredKey
from tether.errors import (
    AgentExists,
    AgentNotFound,
    Conflict,
    KeyExists,
    KeyNotFound,
    OperatorTokenNotFound,
    ReplayDetected,
    StoreUnavailable,
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
from tether.identity.revocations import Revocation
from tether.policy.models import PolicySetVersion
from tether.store.sql import _codec as codec
from tether.store.sql import _policies as policies
from tether.store.sql import _statements as statements
from tether.store.sql import changes
from tether.store.sql._approvals import ApprovalMethods
from tether.store.sql._audit_methods import AuditMethods, LeaseWrites
from tether.store.sql._audit_writer import AuditWriter
from tether.store.sql._credential_methods import CredentialMethods
from tether.store.sql._delegation_methods import DelegationMethods
from tether.store.sql._mcp import McpMethods
from tether.store.sql._monitor import MonitorMethods
from tether.store.sql._point_reads import NOT_NOW, PointQuery, PointReader
from tether.store.sql._units import open_units
from tether.store.sql.engine import unavailable
from tether.store.sql.tables import (
    UtcDateTime,
    agent_instances,
    agent_keys,
    agents,
    operator_tokens,
    policy_sets,
    replay_keys,
    risk_assessments,
    stored_keys,
    svid_revocations,
)

__all__ = ["SqlStore"]

_T = TypeVar("_T")
_Violation = Literal["unique", "foreign_key"]
#: The most policy sets one page lists.
_MAX_POLICY_PAGE = 500
#: An agent by name, read on the event loop's thread (see :mod:`._point_reads`): a lease's
#: issuance reads its agent again once the lease is stored.
_AGENT_NOW = PointQuery(statements.AGENT_BY_NAME)


def _violation(exc: IntegrityError) -> _Violation:
    """Which constraint an ``IntegrityError`` broke; re-raise anything unexpected."""
    sqlstate = getattr(exc.orig, "sqlstate", None)
    text = str(exc.orig)
    if sqlstate == "23505" or "UNIQUE constraint failed" in text:
        return "unique"
    if sqlstate == "23503" or "FOREIGN KEY constraint failed" in text:
        return "foreign_key"
    raise exc


def _consume(conn: Connection, params: Mapping[str, Any]) -> None:
    """Take a replay key (``key``, ``expires_at``, ``now``); ``ReplayDetected`` if in use."""
    consume = statements.consume(postgres=conn.dialect.name == "postgresql")
    if conn.execute(consume, params).first() is None:
        raise ReplayDetected("this single-use value has been used already")


def _see_instance(conn: Connection, values: Mapping[str, Any]) -> Instance:
    see = statements.see_instance(postgres=conn.dialect.name == "postgresql")
    try:
        row = conn.execute(see, values).mappings().one()
    except IntegrityError as exc:
        _violation(exc)
        raise AgentNotFound("no agent with this id") from None
    return codec.instance_from_row(row)


def _instance_values(
    *,
    agent_id: str,
    instance_id: str,
    spiffe_id: str,
    kid: str | None,
    auth_method: str,
    at: datetime,
) -> dict[str, Any]:
    return {
        "agent_id": agent_id,
        "instance_id": instance_id,
        "spiffe_id": spiffe_id,
        "first_seen": at,
        "last_seen": at,
        "last_kid": kid,
        "last_auth_method": auth_method,
    }


def _insert_revocation(conn: Connection, values: Mapping[str, Any]) -> None:
    try:
        conn.execute(svid_revocations.insert(), values)
    except IntegrityError as exc:
        _violation(exc)
        raise Conflict(f"revocation {values['id']!r} exists already") from None


def _agent_write_refused(exc: IntegrityError, agent: Agent) -> AgentNotFound | AgentExists:
    """The domain error for an agent row (and its assessment) the constraints refused."""
    if _violation(exc) == "foreign_key":
        return AgentNotFound("the assessment names an unknown agent")
    return AgentExists(f"an agent named {agent.name!r} already exists")


class SqlStore(
    AuditMethods, CredentialMethods, DelegationMethods, ApprovalMethods, McpMethods, MonitorMethods
):
    """The store on SQLite or PostgreSQL; open it with :func:`tether.store.sql.open_sql_store`.
    Leases and credential engines come from :class:`._credential_methods.CredentialMethods`,
    users and grants from :class:`._delegation_methods.DelegationMethods`, approval requests
    from :class:`._approvals.ApprovalMethods`, the MCP gateway's upstreams and tool pins from
    :class:`._mcp.McpMethods`, alerts and observed use from :class:`._monitor.MonitorMethods`."""

    def __init__(self, url: URL, *, clock: Clock) -> None:
        """Set up the engine (and, for SQLite, the worker thread) for ``url`` from
        :func:`~tether.store.sql.engine.parse_url`; nothing connects until the first unit."""
        self._units = open_units(url)
        self._url = url
        self._clock = clock
        self._postgres = url.get_backend_name() == "postgresql"
        self._closed = False
        self._audit_writer: AuditWriter | None = None
        self._reader: PointReader | None = None
        self._carried_writes: LeaseWrites | None = None

    @property
    def url(self) -> URL:
        """The database's URL, with the driver the store runs it on."""
        return self._url

    async def run_sync(self, fn: Callable[[Connection], _T], *, write: bool = False) -> _T:
        """Run ``fn(connection)`` as one unit of work, in one transaction, for tests and tools.

        ``write`` takes SQLite's write lock before the first statement (``BEGIN IMMEDIATE``).
        Failures are mapped as for every operation (``StoreUnavailable``, ``ValueError``).
        """
        return await self._run(fn, write=write)

    async def start_audit_writer(self) -> bool:
        """On SQLite, hand audit appends from now on to a process of their own
        (:mod:`._audit_writer`), so the event loop builds the next batch while one commits,
        and read some rows by key on the event loop's thread (:mod:`._point_reads`); whether
        it did (not on PostgreSQL, whose server is that process already)."""
        database = self._url.database or ""
        in_memory = not database or database == ":memory:" or database.startswith("file:")
        if self._postgres or in_memory or self._closed:
            return False  # (a file: URI may name a shared in-memory database: kept in-process)
        if self._audit_writer is None:
            writer = AuditWriter(database)
            await writer.start()
            self._audit_writer = writer
            self._reader = PointReader(database)
        return True

    async def close(self) -> None:
        """Wait for running units, then give back the connections, the worker thread and
        the audit writer process."""
        if not self._closed:
            self._closed = True
            if self._reader is not None:
                self._reader.close()
            if self._audit_writer is not None:
                await self._audit_writer.close()
            await self._units.close()

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

    async def _run(
        self,
        unit: Callable[[Connection], _T],
        *,
        write: bool,
        one_statement: bool = False,
        notify: str | None = None,
    ) -> _T:
        """Run ``unit``. With ``notify`` (on PostgreSQL), the unit also sends that change
        note to the other replicas, in its transaction: sent on commit, and only then."""
        if notify is not None and self._postgres:
            unit, one_statement = changes.notifying(unit, notify), False
        if self._closed:
            where = self._url.render_as_string(hide_password=True)
            raise StoreUnavailable(f"the store for {where} is closed")
        try:
            return await self._units.run(unit, write=write, one_statement=one_statement)
        except (OperationalError, InterfaceError, PoolTimeout) as exc:
            raise unavailable(exc, self._url) from None
        except DBAPIError as exc:
            if exc.connection_invalidated:  # the connection broke; the next unit gets another
                raise unavailable(exc, self._url) from None
            raise
        except StatementError as exc:
            # Refused while binding parameters, before the database saw anything.
            if isinstance(exc.orig, ValueError):
                raise exc.orig from None
            raise

    def _read_now(self, query: PointQuery, values: Mapping[str, Any]) -> Any:
        if self._reader is None or self._closed:
            return NOT_NOW
        return self._reader.one(query, values)

    async def _all(
        self,
        query: sa.Select[Any],
        convert: Callable[[sa.RowMapping], _T],
        params: Mapping[str, Any] | None = None,
    ) -> list[_T]:
        def unit(conn: Connection) -> list[_T]:
            return [convert(row) for row in conn.execute(query, params).mappings()]

        return await self._run(unit, write=False, one_statement=True)

    async def _first(
        self,
        query: sa.Select[Any],
        convert: Callable[[sa.RowMapping], _T],
        params: Mapping[str, Any] | None = None,
    ) -> _T | None:
        def unit(conn: Connection) -> _T | None:
            row = conn.execute(query, params).mappings().first()
            return None if row is None else convert(row)

        return await self._run(unit, write=False, one_statement=True)

    async def _rowcount(self, statement: sa.Update | sa.Delete) -> int:
        def unit(conn: Connection) -> int:
            return conn.execute(statement).rowcount

        return await self._run(unit, write=True, one_statement=True)

    # -- agents --------------------------------------------------------------------------

    async def create_agent(self, agent: Agent, assessment: RiskAssessment) -> None:
        agent_row, assessment_row = codec.agent_values(agent), codec.assessment_values(assessment)

        def unit(conn: Connection) -> None:
            try:
                conn.execute(agents.insert(), agent_row)
                conn.execute(risk_assessments.insert(), assessment_row)
            except IntegrityError as exc:
                raise _agent_write_refused(exc, agent) from None

        await self._run(unit, write=True, notify=changes.agent_topic(agent.name))

    async def get_agent(self, name: str) -> Agent | None:
        now = self._read_now(_AGENT_NOW, {"name": name})
        if now is not NOT_NOW:
            return None if now is None else codec.agent_from_row(now)
        return await self._first(statements.AGENT_BY_NAME, codec.agent_from_row, {"name": name})

    async def get_agent_with_keys(self, name: str) -> tuple[Agent, list[AgentKey]] | None:
        def unit(conn: Connection) -> tuple[Agent, list[AgentKey]] | None:
            rows = conn.execute(statements.AGENT_WITH_KEYS, {"name": name}).mappings().all()
            if not rows:
                return None
            prefix = statements.KEY_PREFIX
            keys = [
                codec.key_from_row(row, prefix=prefix)
                for row in rows
                if row[f"{prefix}kid"] is not None
            ]
            return codec.agent_from_row(rows[0]), keys

        return await self._run(unit, write=False, one_statement=True)

    async def get_agent_by_id(self, agent_id: str) -> Agent | None:
        return await self._first(statements.AGENT_BY_ID, codec.agent_from_row, {"id": agent_id})

    async def list_agents(
        self, *, state: AgentState | None = None, limit: int = 100, after: str | None = None
    ) -> list[Agent]:
        query = sa.select(agents).order_by(agents.c.name).limit(max(0, limit))
        if state is not None:
            query = query.where(agents.c.state == str(state))
        if after is not None:
            query = query.where(agents.c.name > after)
        return await self._all(query, codec.agent_from_row)

    async def update_agent(
        self,
        agent: Agent,
        *,
        expected_version: int,
        assessment: RiskAssessment | None = None,
        revocation: Revocation | None = None,
    ) -> None:
        values = codec.agent_values(agent)
        del values["id"]
        update = (
            agents.update()
            .where(agents.c.id == agent.id, agents.c.version == expected_version)
            .values(values)
        )
        assessment_row = None if assessment is None else codec.assessment_values(assessment)
        revocation_row = None if revocation is None else codec.revocation_values(revocation)

        def unit(conn: Connection) -> None:
            try:
                if conn.execute(update).rowcount != 1:
                    raise VersionConflict(
                        f"agent {agent.name!r} changed since version {expected_version}"
                    )
                if assessment_row is not None:
                    conn.execute(risk_assessments.insert(), assessment_row)
            except IntegrityError as exc:
                raise _agent_write_refused(exc, agent) from None
            if revocation_row is not None:
                _insert_revocation(conn, revocation_row)

        topic = changes.agent_topic(agent.name)
        if revocation is not None:
            topic = changes.both(topic, changes.REVOCATIONS)
        await self._run(unit, write=True, notify=topic)

    async def list_assessments(self, agent_id: str) -> list[RiskAssessment]:
        query = (
            sa.select(risk_assessments)
            .where(risk_assessments.c.agent_id == agent_id)
            .order_by(risk_assessments.c.assessed_at, risk_assessments.c.seq)
        )
        return await self._all(query, codec.assessment_from_row)

    # -- keys and instances --------------------------------------------------------------

    async def add_key(self, key: AgentKey) -> None:
        values = codec.key_values(key)

        def unit(conn: Connection) -> None:
            try:
                conn.execute(agent_keys.insert(), values)
            except IntegrityError as exc:
                if _violation(exc) == "foreign_key":
                    raise AgentNotFound("no agent with this id") from None
                raise KeyExists(f"the agent already has a key with kid {key.kid!r}") from None

        await self._run(unit, write=True, one_statement=True)

    async def list_keys(self, agent_id: str, *, include_removed: bool = False) -> list[AgentKey]:
        query = (
            sa.select(agent_keys)
            .where(agent_keys.c.agent_id == agent_id)
            .order_by(agent_keys.c.created_at, agent_keys.c.kid)
        )
        if not include_removed:
            query = query.where(agent_keys.c.removed_at.is_(None))
        return await self._all(query, codec.key_from_row)

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

        def unit(conn: Connection) -> AgentKey | None:
            row = conn.execute(update).mappings().first()
            return None if row is None else codec.key_from_row(row)

        removed = await self._run(unit, write=True, one_statement=True)
        if removed is None:
            raise KeyNotFound(f"the agent has no active key with kid {kid!r}")
        return removed

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
        values = _instance_values(
            agent_id=agent_id,
            instance_id=instance_id,
            spiffe_id=spiffe_id,
            kid=kid,
            auth_method=auth_method,
            at=at,
        )
        return await self._run(
            lambda conn: _see_instance(conn, values), write=True, one_statement=True
        )

    async def record_authentication(
        self,
        *,
        replay_key: str | None,
        replay_expires_at: datetime | None,
        agent_id: str,
        instance_id: str,
        spiffe_id: str,
        kid: str | None,
        auth_method: str,
        at: datetime,
    ) -> Instance:
        replay = None
        if replay_key is not None:
            if replay_expires_at is None:
                raise ValueError("a replay key needs the time it expires")
            replay = {"key": replay_key, "expires_at": replay_expires_at, "now": self._clock.now()}
        values = _instance_values(
            agent_id=agent_id,
            instance_id=instance_id,
            spiffe_id=spiffe_id,
            kid=kid,
            auth_method=auth_method,
            at=at,
        )

        def unit(conn: Connection) -> Instance:
            if replay is not None:
                _consume(conn, replay)  # first: a replay writes nothing
            return _see_instance(conn, values)

        return await self._run(unit, write=True, one_statement=replay is None)

    async def list_instances(self, agent_id: str) -> list[Instance]:
        query = (
            sa.select(agent_instances)
            .where(agent_instances.c.agent_id == agent_id)
            .order_by(agent_instances.c.first_seen, agent_instances.c.instance_id)
        )
        return await self._all(query, codec.instance_from_row)

    # -- replay --------------------------------------------------------------------------

    async def consume_once(self, key: str, *, expires_at: datetime) -> None:
        params = {"key": key, "expires_at": expires_at, "now": self._clock.now()}
        await self._run(lambda conn: _consume(conn, params), write=True, one_statement=True)

    async def purge_replay_keys(self, *, before: datetime) -> int:
        return await self._rowcount(replay_keys.delete().where(replay_keys.c.expires_at < before))

    # -- token revocations ---------------------------------------------------------------

    async def add_revocation(self, revocation: Revocation) -> None:
        values = codec.revocation_values(revocation)
        await self._run(
            lambda conn: _insert_revocation(conn, values),
            write=True,
            one_statement=True,
            notify=changes.REVOCATIONS,
        )

    async def list_revocations(self, *, now: datetime) -> list[Revocation]:
        return await self._all(statements.LIVE_REVOCATIONS, codec.revocation_from_row, {"now": now})

    async def purge_revocations(self, *, before: datetime) -> int:
        expired = svid_revocations.c.until <= sa.bindparam("before", before, type_=UtcDateTime())
        return await self._rowcount(svid_revocations.delete().where(expired))

    # -- operator tokens -----------------------------------------------------------------

    async def create_operator_token(self, token: OperatorToken) -> None:
        values = codec.operator_token_values(token)

        def unit(conn: Connection) -> None:
            try:
                conn.execute(operator_tokens.insert(), values)
            except IntegrityError as exc:
                _violation(exc)
                raise Conflict("an operator token with this id or hash exists") from None

        await self._run(unit, write=True, one_statement=True)

    async def get_operator_token(self, token_hash: str) -> OperatorToken | None:
        query = sa.select(operator_tokens).where(operator_tokens.c.token_hash == token_hash)
        return await self._first(query, codec.operator_token_from_row)

    async def list_operator_tokens(self) -> list[OperatorToken]:
        query = sa.select(operator_tokens).order_by(
            operator_tokens.c.created_at, operator_tokens.c.id
        )
        return await self._all(query, codec.operator_token_from_row)

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
        if await self._rowcount(update) != 1:
            raise OperatorTokenNotFound(f"no operator token with id {token_id!r}")

    # -- key ring ------------------------------------------------------------------------

    async def list_stored_keys(self, purpose: KeyPurpose | None = None) -> list[StoredKey]:
        query = sa.select(stored_keys).order_by(stored_keys.c.created_at, stored_keys.c.kid)
        if purpose is not None:
            query = query.where(stored_keys.c.purpose == str(purpose))
        return await self._all(query, codec.stored_key_from_row)

    async def save_stored_key(self, key: StoredKey) -> None:
        upsert = statements.upsert(stored_keys, postgres=self._postgres, keys=["kid"])
        values = codec.stored_key_values(key)
        await self._run(
            lambda conn: conn.execute(upsert, values).close(), write=True, one_statement=True
        )

    # -- policy sets ---------------------------------------------------------------------

    async def add_policy_set(
        self,
        *,
        text: str,
        sha256: str,
        created_at: datetime,
        created_by: str,
        comment: str | None,
        activate: bool,
        expected_active: int | None,
    ) -> PolicySetVersion:
        unit = policies.add_unit(
            text=text,
            sha256=sha256,
            created_at=created_at,
            created_by=created_by,
            comment=comment,
            activate=activate,
            expected_active=expected_active,
        )
        return await self._run(unit, write=True, notify=changes.POLICIES if activate else None)

    async def activate_policy_set(
        self, version: int, *, expected_active: int | None, at: datetime
    ) -> None:
        unit = policies.activate_unit(version, expected_active=expected_active, at=at)
        await self._run(unit, write=True, notify=changes.POLICIES)

    async def get_policy_set(self, version: int) -> PolicySetVersion | None:
        return await self._first(
            statements.POLICY_SET, codec.policy_set_from_row, {"version": version}
        )

    async def active_policy_set(self) -> PolicySetVersion | None:
        return await self._first(statements.ACTIVE_POLICY_SET, codec.policy_set_from_row)

    async def active_policy_version(self) -> int | None:
        return await self._first(
            statements.ACTIVE_POLICY_VERSION, lambda row: int(row["active_version"])
        )

    async def list_policy_sets(
        self, *, limit: int = 100, before: int | None = None
    ) -> list[PolicySetVersion]:
        query = (
            sa.select(policy_sets)
            .order_by(policy_sets.c.version.desc())
            .limit(min(max(1, limit), _MAX_POLICY_PAGE))
        )
        if before is not None:
            query = query.where(policy_sets.c.version < before)
        return await self._all(query, codec.policy_set_from_row)

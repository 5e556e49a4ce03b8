"""The PostgreSQL credential engine against a real cluster: JIT roles, revocation, inventory.

Each test gets a fresh database with one table (``t``) that a fresh group role may read, and
its own role prefix, so tests never see each other's roles in the shared cluster. The cluster
enforces SCRAM over TCP, so every login here is a real password check.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.conftest import PgCluster
from tether.credentials._postgres import PostgresEngine, open_postgres_engine
from tether.credentials.engine import CredentialEngine
from tether.credentials.models import EngineConfig, RoleTemplate
from tether.errors import EngineUnavailable, InvalidInput

pytestmark = pytest.mark.postgres

_NUMBERS = itertools.count(1)


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


@dataclass
class Db:
    """A database with table ``t``, a group that may read it, and a role prefix of its own."""

    cluster: PgCluster
    name: str
    group: str
    prefix: str
    extra_roles: list[str] = field(default_factory=list)

    def admin(self, dbname: str | None = None) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(
            host=self.cluster.host,
            port=self.cluster.port,
            user=self.cluster.user,
            password=self.cluster.password,
            dbname=dbname or self.name,
            autocommit=True,
        )

    def query(self, query: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        with self.admin() as conn:
            return conn.execute(query, params).fetchall()

    async def login(
        self, user: str, password: str | None, dbname: str | None = None
    ) -> psycopg.AsyncConnection[tuple[Any, ...]]:
        return await psycopg.AsyncConnection.connect(
            host=self.cluster.host,
            port=self.cluster.port,
            user=user,
            password=password or "",
            dbname=dbname or self.name,
            autocommit=True,
            connect_timeout=5,
        )

    def config(
        self, *, roles: Mapping[str, RoleTemplate] | None = None, **settings: object
    ) -> EngineConfig:
        now = datetime.now(UTC)
        base: dict[str, object] = {
            "host": self.cluster.host,
            "port": self.cluster.port,
            "database": self.name,
            "admin_user": self.cluster.user,
            "role_prefix": self.prefix,
        }
        return EngineConfig(
            name="pg-test",
            kind="postgres",
            settings=base | settings,
            roles=roles or {"ro": self.template()},
            created_at=now,
            created_by="test",
            updated_at=now,
        )

    def template(self, **kwargs: Any) -> RoleTemplate:
        return RoleTemplate(**({"name": "ro", "group": self.group} | kwargs))

    def lease_id(self) -> str:
        return f"lea_{next(_NUMBERS):026d}"


def _drop_roles(db: Db) -> None:
    with db.cluster.admin() as conn:
        rows = conn.execute(
            "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", (db.prefix,)
        ).fetchall()
        for name in [str(r[0]) for r in rows] + db.extra_roles + [db.group]:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(_ident(name)))


def _make_database(cluster: PgCluster, group: str) -> str:
    name = cluster.create_database()
    with psycopg.connect(
        host=cluster.host,
        port=cluster.port,
        user=cluster.user,
        password=cluster.password,
        dbname=name,
        autocommit=True,
    ) as conn:
        conn.execute("CREATE TABLE t (id int)")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(_ident(name), _ident(group))
        )
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(_ident(group)))
        conn.execute(sql.SQL("GRANT SELECT ON t TO {}").format(_ident(group)))
    return name


@pytest.fixture
def db(pg_cluster: PgCluster) -> Iterator[Db]:
    n = next(_NUMBERS)
    group = f"grp_{n}"
    with pg_cluster.admin() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(_ident(group)))
    made = Db(
        cluster=pg_cluster, name=_make_database(pg_cluster, group), group=group, prefix=f"tt{n}_"
    )
    yield made
    pg_cluster.drop_database(made.name)
    _drop_roles(made)


@pytest.fixture
async def engine(db: Db) -> AsyncIterator[PostgresEngine]:
    opened = await open_postgres_engine(db.config(), db.cluster.password)
    try:
        yield opened
    finally:
        await opened.close()


def _soon(seconds: int = 300) -> datetime:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).replace(microsecond=0)


# -- issuance -----------------------------------------------------------------------------


async def test_engine_is_a_credential_engine(engine: PostgresEngine, db: Db) -> None:
    typed: CredentialEngine = engine
    assert typed.kind == "postgres"
    lease_id = "lea_" + "a" * 26
    assert engine.credential_name(lease_id) == db.prefix + lease_id


async def test_issued_password_logs_in_and_reads_through_the_group_only(
    engine: PostgresEngine, db: Db
) -> None:
    name = engine.credential_name(db.lease_id())
    issued = await engine.create(credential=name, role=db.template(), expires_at=_soon())
    assert issued.credential == name
    assert issued.secret is not None
    assert len(issued.secret) >= 43  # 32 random bytes, base64url
    assert dict(issued.details) == {
        "username": name,
        "host": db.cluster.host,
        "port": db.cluster.port,
        "database": db.name,
    }
    async with await db.login(name, issued.secret) as conn:
        assert await (await conn.execute("SELECT id FROM t")).fetchall() == [(1,)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("INSERT INTO t VALUES (2)")
    # No per-credential grant: the role reaches the table through the group alone.
    assert db.query("SELECT count(*) FROM pg_class WHERE relacl::text LIKE %s", (f"%{name}%",)) == [
        (0,)
    ]
    assert db.query(
        "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
        "JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = %s",
        (name,),
    ) == [(db.group,)]


async def test_server_gets_only_a_scram_verifier_never_the_password(
    engine: PostgresEngine, db: Db
) -> None:
    """The verifier carries the template's iteration count, and neither the catalog, the
    activity view nor the server's statement log ever holds the plaintext."""
    log = _server_log(db)
    _set_log_statement(db, "ddl")
    try:
        start = log.stat().st_size
        name = engine.credential_name(db.lease_id())
        role = db.template(scram_iterations=4321)
        issued = await engine.create(credential=name, role=role, expires_at=_soon())
        assert issued.secret is not None
        written = log.read_bytes()[start:].decode(errors="replace")
    finally:
        _set_log_statement(db, "none")
    [(stored,)] = db.query("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (name,))
    assert stored.startswith("SCRAM-SHA-256$4321:")
    assert issued.secret not in stored
    assert f'CREATE ROLE "{name}" LOGIN PASSWORD \'SCRAM-SHA-256$4321:' in written
    assert issued.secret not in written
    everywhere = db.query(
        "SELECT coalesce(string_agg(query, ' '), '') FROM pg_stat_activity "
        "UNION ALL SELECT coalesce(string_agg(rolpassword, ' '), '') FROM pg_authid"
    )
    assert all(issued.secret not in text for (text,) in everywhere)
    async with await db.login(name, issued.secret) as conn:
        assert await (await conn.execute("SELECT current_user")).fetchone() == (name,)


def _set_log_statement(db: Db, value: str) -> None:
    """Set ``log_statement`` cluster-wide and wait until the server has taken it.

    ``pg_reload_conf()`` only signals the postmaster. Once a new session sees the value, the
    postmaster has re-read its configuration and signalled every running backend, so the
    engine's pooled sessions apply it before their next statement.
    """
    with db.cluster.admin() as conn:
        conn.execute(sql.SQL("ALTER SYSTEM SET log_statement = {}").format(sql.Literal(value)))
        conn.execute("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 10
    while db.query("SHOW log_statement") != [(value,)]:
        if time.monotonic() > deadline:
            pytest.fail(f"the server did not take log_statement = {value!r} within 10 s")
        time.sleep(0.02)


def _server_log(db: Db) -> Path:
    """The cluster's log file: ``pg_ctl -l <data dir>/../log`` (see ``tests/conftest.py``)."""
    [(data,)] = db.query("SHOW data_directory")
    log = Path(data).parent / "log"
    if not log.exists():
        pytest.fail(f"the server log is not at {log}")
    return log


async def test_valid_until_is_the_lease_expiry_and_moves_with_a_renewal(
    engine: PostgresEngine, db: Db
) -> None:
    name = engine.credential_name(db.lease_id())
    expires = datetime.now(UTC) + timedelta(seconds=300)
    await engine.create(credential=name, role=db.template(auth="none"), expires_at=expires)
    query = "SELECT rolvaliduntil FROM pg_roles WHERE rolname = %s"
    assert db.query(query, (name,)) == [(expires,)]
    later = expires + timedelta(seconds=600)
    await engine.extend(credential=name, role=db.template(auth="none"), expires_at=later)
    assert db.query(query, (name,)) == [(later,)]


async def test_expiry_must_carry_a_timezone(engine: PostgresEngine, db: Db) -> None:
    name = engine.credential_name(db.lease_id())
    with pytest.raises(InvalidInput, match="timezone"):
        await engine.create(credential=name, role=db.template(), expires_at=datetime(2030, 1, 1))


async def test_auth_none_creates_a_role_without_a_password(engine: PostgresEngine, db: Db) -> None:
    name = engine.credential_name(db.lease_id())
    issued = await engine.create(credential=name, role=db.template(auth="none"), expires_at=_soon())
    assert issued.secret is None
    assert db.query("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (name,)) == [(None,)]
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        await db.login(name, "anything")


async def test_many_credentials_are_created_concurrently_and_each_logs_in(
    engine: PostgresEngine, db: Db
) -> None:
    names = [engine.credential_name(db.lease_id()) for _ in range(16)]
    issued = await asyncio.gather(
        *(engine.create(credential=n, role=db.template(), expires_at=_soon()) for n in names)
    )
    for credential in issued:
        async with await db.login(credential.credential, credential.secret) as conn:
            assert await (await conn.execute("SELECT count(*) FROM t")).fetchone() == (1,)
    await asyncio.gather(*(engine.revoke(credential=n, role=db.template()) for n in names))
    assert await engine.managed() == set()


# -- revocation ---------------------------------------------------------------------------


async def test_revoked_credential_cannot_log_in_and_is_gone(engine: PostgresEngine, db: Db) -> None:
    name = engine.credential_name(db.lease_id())
    issued = await engine.create(credential=name, role=db.template(), expires_at=_soon())
    await engine.revoke(credential=name, role=db.template())
    assert db.query("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)) == []
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        await db.login(name, issued.secret)
    await engine.revoke(credential=name, role=db.template())  # again: a no-op
    never = engine.credential_name(db.lease_id())
    await engine.revoke(credential=never, role=db.template())  # never created: a no-op


async def test_revoke_terminates_open_sessions_within_a_second(
    engine: PostgresEngine, db: Db
) -> None:
    """VALID UNTIL ends no session: revocation must, including one that did SET ROLE to the
    group and one idle in a transaction."""
    name = engine.credential_name(db.lease_id())
    issued = await engine.create(credential=name, role=db.template(), expires_at=_soon())
    plain = await db.login(name, issued.secret)
    switched = await db.login(name, issued.secret)
    await switched.execute(sql.SQL("SET ROLE {}").format(_ident(db.group)))
    in_transaction = await db.login(name, issued.secret)
    await in_transaction.set_autocommit(False)
    await in_transaction.execute("SELECT * FROM t")
    try:
        await engine.revoke(credential=name, role=db.template())
        revoked = time.monotonic()
        for conn in (plain, switched, in_transaction):
            with pytest.raises(psycopg.OperationalError):
                await conn.execute("SELECT 1")
            assert time.monotonic() - revoked < 1.0
    finally:
        for conn in (plain, switched, in_transaction):
            await conn.close()
    assert db.query("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (name,)) == [(0,)]


async def test_a_role_with_sessions_is_blocked_by_a_commit_before_they_are_terminated(
    engine: PostgresEngine, db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A role with no session is revoked in one transaction; one with sessions gets NOLOGIN
    committed first (the steps one at a time), so that no new login can replace a session
    while they are terminated."""
    blocked: list[str] = []
    block = engine._block

    async def spied(name: str) -> int | None:
        blocked.append(name)
        return await block(name)

    monkeypatch.setattr(engine, "_block", spied)
    idle = engine.credential_name(db.lease_id())
    await engine.create(credential=idle, role=db.template(), expires_at=_soon())
    await engine.revoke(credential=idle, role=db.template())
    name = engine.credential_name(db.lease_id())
    issued = await engine.create(credential=name, role=db.template(), expires_at=_soon())
    sessions = [await db.login(name, issued.secret) for _ in range(2)]
    try:
        await engine.revoke(credential=name, role=db.template())
        for conn in sessions:
            with pytest.raises(psycopg.OperationalError):
                await conn.execute("SELECT 1")
    finally:
        for conn in sessions:
            await conn.close()
    assert db.query("SELECT 1 FROM pg_roles WHERE rolname = ANY(%s)", ([idle, name],)) == []
    assert blocked == [name]


async def test_a_session_locking_what_its_role_owns_cannot_hold_up_revocation(
    engine: PostgresEngine, db: Db
) -> None:
    """A session of the role holding a lock on something the role owns cannot make the drop
    wait: its sessions are ended before what it owns is dropped."""
    with db.admin() as conn:
        conn.execute("CREATE SCHEMA work")
        conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA work TO {}").format(_ident(db.group)))
    name = engine.credential_name(db.lease_id())
    issued = await engine.create(credential=name, role=db.template(), expires_at=_soon())
    holder = await db.login(name, issued.secret)
    await holder.execute("CREATE TABLE work.mine (x int)")
    await holder.set_autocommit(False)
    await holder.execute("LOCK TABLE work.mine IN ACCESS EXCLUSIVE MODE")
    try:
        await asyncio.wait_for(engine.revoke(credential=name, role=db.template()), 10)
        with pytest.raises(psycopg.OperationalError):
            await holder.execute("SELECT 1")
    finally:
        await holder.close()
    assert db.query("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)) == []
    owner = db.query("SELECT tableowner FROM pg_tables WHERE tablename = 'mine'")
    assert owner == [(db.cluster.user,)]


async def test_role_that_owns_objects_in_every_database_is_still_dropped(
    db: Db, pg_cluster: PgCluster
) -> None:
    """REASSIGN OWNED and DROP OWNED act in one database: the engine runs them in each."""
    other = _make_database(pg_cluster, db.group)
    for database in (db.name, other):
        with db.admin(database) as conn:
            conn.execute("CREATE SCHEMA work")
            conn.execute(
                sql.SQL("GRANT USAGE, CREATE ON SCHEMA work TO {}").format(_ident(db.group))
            )
    engine = await open_postgres_engine(db.config(databases=[db.name, other]), pg_cluster.password)
    try:
        name = engine.credential_name(db.lease_id())
        issued = await engine.create(credential=name, role=db.template(), expires_at=_soon())
        for database in (db.name, other):
            async with await db.login(name, issued.secret, database) as conn:
                await conn.execute("CREATE TABLE work.mine (x int)")
        await engine.revoke(credential=name, role=db.template())
    finally:
        await engine.close()
    assert db.query("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)) == []
    for database in (db.name, other):
        with db.admin(database) as conn:
            owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'mine'")
            assert owner.fetchall() == [(pg_cluster.user,)]
    pg_cluster.drop_database(other)


async def test_role_outside_the_prefix_is_never_touched(engine: PostgresEngine, db: Db) -> None:
    for credential in (db.cluster.user, db.group, db.prefix, f"{db.prefix}X", f"{db.prefix}a;b"):
        with pytest.raises(InvalidInput, match="not a credential of this engine"):
            await engine.revoke(credential=credential, role=db.template())
    with pytest.raises(InvalidInput, match="lease id"):
        engine.credential_name('lea_ab"; DROP ROLE postgres; --')
    with pytest.raises(InvalidInput):
        engine.credential_name("lea_" + "a" * 60)  # past 63 bytes
    assert db.query("SELECT 1 FROM pg_roles WHERE rolname = %s", (db.cluster.user,)) == [(1,)]


# -- inventory ----------------------------------------------------------------------------


async def test_managed_lists_only_prefixed_roles_and_unmanaged_logins_reports_hand_made_ones(
    db: Db,
) -> None:
    hand, known, root = (
        f"{db.prefix[:-1]}x_hand",
        f"{db.prefix[:-1]}x_known",
        f"{db.prefix[:-1]}x_su",
    )
    db.extra_roles += [hand, known, root]
    with db.cluster.admin() as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN VALID UNTIL '2031-01-01 00:00:00+00'").format(
                _ident(hand)
            )
        )
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(_ident(known)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER CREATEROLE").format(_ident(root)))
    engine = await open_postgres_engine(db.config(known_logins=[known]), db.cluster.password)
    try:
        name = engine.credential_name(db.lease_id())
        await engine.create(credential=name, role=db.template(auth="none"), expires_at=_soon())
        assert await engine.managed() == {name}
        reported = {login.name: dict(login.details) for login in await engine.unmanaged_logins()}
    finally:
        await engine.close()
    assert hand in reported
    assert root in reported
    assert reported[hand] == {
        "superuser": False,
        "createrole": False,
        "valid_until": "2031-01-01T00:00:00+00:00",
    }
    assert reported[root] == {"superuser": True, "createrole": True, "valid_until": None}
    assert not {known, name, db.cluster.user} & set(reported)


async def test_five_thousand_live_credentials_join_the_group_without_per_role_grants(
    db: Db,
) -> None:
    """Per-credential GRANTs grow pg_class.relacl until "row is too big" (~2,450 roles);
    group membership does not."""
    acl = "SELECT relacl::text FROM pg_class WHERE relname = 't'"
    before = db.query(acl)
    engine = await open_postgres_engine(db.config(pool_size=8), db.cluster.password)
    role = db.template(auth="none")
    gate = asyncio.Semaphore(16)

    async def create(name: str) -> None:
        async with gate:
            await engine.create(credential=name, role=role, expires_at=_soon())

    async def revoke(name: str) -> None:
        async with gate:
            await engine.revoke(credential=name, role=role)

    names = [engine.credential_name(db.lease_id()) for _ in range(5000)]
    try:
        await asyncio.gather(*(create(n) for n in names))
        assert await engine.managed() == set(names)
        assert db.query(acl) == before
        members = db.query(
            "SELECT count(*) FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
            "WHERE g.rolname = %s",
            (db.group,),
        )
        assert members == [(5000,)]
        await asyncio.gather(*(revoke(n) for n in names))
        assert await engine.managed() == set()
    finally:
        await engine.close()


# -- failures -----------------------------------------------------------------------------


class _Proxy:
    """A TCP relay to the cluster that a test can cut, as a network or a server failure."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._writers += [writer, up_writer]
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def test_server_lost_after_opening_fails_within_the_connect_timeout(
    db: Db,
) -> None:
    proxy = _Proxy(db.cluster.host, db.cluster.port)
    port = await proxy.start()
    engine = await open_postgres_engine(
        db.config(port=port, connect_timeout=1), db.cluster.password
    )
    try:
        await proxy.cut()
        for _ in range(2):  # the pooled connection is dead; then no new one can be made
            started = time.monotonic()
            with pytest.raises(EngineUnavailable) as caught:
                await engine.managed()
            assert time.monotonic() - started < 1.5
            assert db.cluster.password not in str(caught.value)
    finally:
        await engine.close()


async def test_pool_replaces_connections_the_server_ended(engine: PostgresEngine, db: Db) -> None:
    db.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'tether-credentials' AND datname = %s",
        (db.name,),
    )
    with contextlib.suppress(EngineUnavailable):  # a dead pooled connection fails one call
        await engine.managed()
    assert await engine.managed() == set()


async def test_wrong_admin_password_is_engine_unavailable_without_the_password(db: Db) -> None:
    wrong = "not-the-admin-password-7f3a"
    with pytest.raises(EngineUnavailable, match="password authentication failed") as caught:
        await open_postgres_engine(db.config(), wrong)
    assert wrong not in str(caught.value)
    assert wrong not in repr(caught.value.details)


async def test_unreachable_server_fails_within_the_connect_timeout(db: Db) -> None:
    """A server that accepts the TCP connection and then says nothing."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(EngineUnavailable, match=r"no answer within 0\.5 s"):
            await open_postgres_engine(db.config(port=port, connect_timeout=0.5), "secret")
        assert time.monotonic() - started < 2.0


async def test_missing_group_is_reported_clearly(engine: PostgresEngine, db: Db) -> None:
    name = engine.credential_name(db.lease_id())
    missing = db.template(group=f"{db.group}_missing")
    with pytest.raises(EngineUnavailable, match=r"group '.*_missing'.*does not exist"):
        await engine.create(credential=name, role=missing, expires_at=_soon())
    with pytest.raises(InvalidInput, match="names no group role"):
        await engine.create(credential=name, role=db.template(group=None), expires_at=_soon())
    assert await engine.managed() == set()


async def test_group_with_more_than_table_privileges_is_refused(db: Db) -> None:
    """A credential in a group that is (or is in) a CREATEROLE or SUPERUSER role, or one that
    reads the server's files, could SET ROLE to it; other templates still issue."""
    powerful, inner, files = f"{db.group}_admin", f"{db.group}_inner", f"{db.group}_files"
    db.extra_roles += [inner, powerful, files]
    with db.cluster.admin() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN CREATEROLE").format(_ident(powerful)))
        conn.execute(
            sql.SQL("CREATE ROLE {} NOLOGIN IN ROLE {}").format(_ident(inner), _ident(powerful))
        )
        conn.execute(
            sql.SQL("CREATE ROLE {} NOLOGIN IN ROLE pg_read_server_files").format(_ident(files))
        )
    groups = {"a": powerful, "b": inner, "c": files, "d": db.cluster.user, "ok": db.group}
    roles = {n: db.template(name=n, group=g) for n, g in groups.items()}
    engine = await open_postgres_engine(db.config(roles=roles), db.cluster.password)
    try:
        for role in roles.values():
            name = engine.credential_name(db.lease_id())
            if role.name == "ok":
                await engine.create(credential=name, role=role, expires_at=_soon())
                assert await engine.managed() == {name}
                continue
            with pytest.raises(InvalidInput, match="is the admin, a managed role, or"):
                await engine.create(credential=name, role=role, expires_at=_soon())
    finally:
        await engine.close()

"""The PostgreSQL credential engine: one just-in-time LOGIN role per lease.

Why it is built this way (``shared/notes/ecosystem.md`` §5.2, ``performance.md`` B2):

* A credential is ``CREATE ROLE <prefix><lease id> LOGIN [PASSWORD <verifier>] VALID UNTIL
  <expiry> IN ROLE <group>``, one statement. Privileges come from the template's group role,
  never from per-credential ``GRANT``\\ s: those grow ``pg_class.relacl`` until PostgreSQL
  fails with "row is too big" after about 2,450 live roles, and slow down long before.
* Passwords are 32 random bytes; the server is sent only their SCRAM-SHA-256 verifier
  (RFC 7677), computed in :mod:`tether.credentials._scram` with the template's iterations.
  A plaintext ``PASSWORD`` could end up in the server's log or statistics.
* ``VALID UNTIL`` only refuses new logins; it ends no session. Revocation therefore (1) commits
  ``NOLOGIN`` first, (2) terminates the role's sessions (``pg_stat_activity.usesysid`` is the
  session user, so a session that did ``SET ROLE <group>`` is caught too) and waits for them
  to end, (3) runs ``REASSIGN OWNED`` and ``DROP OWNED`` in every configured database (both act
  in the current database only), (4) drops the role, then sweeps once more for a session that
  logged in while (1) committed: two commits, in two round trips with one database, three
  with more. A role with no session in a single database (the usual case) is revoked in one
  round trip and one commit instead: ``NOLOGIN``, the check that no session exists, (3) and
  (4) in one transaction — a login between the check and the commit is caught by (4)'s sweep,
  as one during (1)'s commit is. If the role has a session or the drop fails, the server rolls
  it all back and the steps run one at a time, so that ``NOLOGIN`` is committed before any
  session is terminated and holds whatever happens next.
* ``CREATE ROLE`` and friends take no bind parameters: statements are composed with
  :mod:`psycopg.sql` (``Identifier``/``Literal``), over names checked first (here, and in
  :mod:`tether.credentials._postgres_settings` for the settings, which need no driver).

This is the only module of :mod:`tether.credentials` that imports psycopg (an import-linter
contract). The admin role must be a superuser, or (PostgreSQL 16+) hold ``CREATEROLE``, ADMIN
OPTION on the groups and ``pg_signal_backend``. PostgreSQL 14+ (``pg_terminate_backend`` with
a timeout).

Example::

    >>> validate_postgres_settings({"host": "db", "port": 5432, "database": "app",
    ...                             "admin_user": "tether"})["databases"]
    ['app']
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from tether.credentials._postgres_settings import (
    MAX_IDENTIFIER,
    PostgresSettings,
    parse_postgres_settings,
    validate_postgres_settings,
)
from tether.credentials._scram import scram_verifier_async
from tether.credentials.engine import UnmanagedLogin
from tether.credentials.models import EngineConfig, IssuedCredential, RoleTemplate
from tether.errors import EngineUnavailable, InvalidInput

__all__ = ["PostgresEngine", "PostgresLogin", "open_postgres_engine", "validate_postgres_settings"]

_Pool = AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]]
_Conn = psycopg.AsyncConnection[TupleRow]

#: A lease id exactly (``lea_`` and 26 base32 characters): only such names under the prefix
#: are ours, so the sweep never touches a role such as ``<prefix>admin``.
_LEASE_ID = re.compile(r"lea_[a-z0-9]{26}")
#: How long revocation waits for each terminated session to end.
_TERMINATE_WAIT_MS = 2000
#: Server-side bounds, so that no statement of the engine hangs (a lock held elsewhere).
_SERVER_OPTIONS = "-c lock_timeout=10s -c statement_timeout=30s"
_PASSWORD_BYTES = 32


# -- errors -------------------------------------------------------------------------------


def _reason(exc: BaseException) -> str:
    """What the server or libpq said, without the statement (which may carry a verifier)."""
    if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
        return exc.diag.message_primary
    return " ".join(str(exc).split()) or type(exc).__name__


def _unavailable(what: str, exc: BaseException, hidden: Iterable[str | None]) -> EngineUnavailable:
    message = f"PostgreSQL: {what}: {_reason(exc)}"
    for secret in filter(None, hidden):
        message = message.replace(secret, "[redacted]")
    sqlstate = exc.sqlstate if isinstance(exc, psycopg.Error) else None
    return EngineUnavailable(message, details={"sqlstate": sqlstate} if sqlstate else None)


# -- the engine ---------------------------------------------------------------------------


@dataclass(slots=True)
class PostgresLogin:
    """A LOGIN role outside the managed prefix. Not frozen only because ``UnmanagedLogin``
    declares its members as plain (settable) attributes; ``details`` is read-only."""

    name: str
    details: Mapping[str, object]


async def _execute(
    conn: _Conn, statement: sql.SQL | sql.Composed, params: tuple[object, ...] | None
) -> list[list[tuple[Any, ...]]]:
    """Every result set's rows. A failed ``BEGIN … COMMIT`` is rolled back, so the connection
    goes back to its pool clean."""
    try:
        cur = await conn.execute(statement, params)
        results: list[list[tuple[Any, ...]]] = []
        while True:
            if cur.description is not None:
                results.append(await cur.fetchall())
            if not cur.nextset():
                return results
    except psycopg.Error:
        if conn.info.transaction_status is TransactionStatus.INERROR:
            with contextlib.suppress(psycopg.Error):
                await conn.rollback()
        raise


class PostgresEngine:
    """Creates, extends and revokes LOGIN roles in one PostgreSQL cluster; see the module."""

    def __init__(
        self,
        *,
        settings: PostgresSettings,
        pools: Mapping[str, _Pool],
        secret: str | None,
        unsafe_groups: frozenset[str] = frozenset(),
    ) -> None:
        self._settings = settings
        self._pools = MappingProxyType(dict(pools))
        self._secret = secret
        self._unsafe_groups = unsafe_groups

    @property
    def kind(self) -> str:
        return "postgres"

    def credential_name(self, lease_id: str) -> str:
        if not isinstance(lease_id, str) or not _LEASE_ID.fullmatch(lease_id):
            raise InvalidInput("not a lease id (lea_ and 26 of a-z, 0-9)", details={"rule": "id"})
        return self._check_credential(self._settings.role_prefix + lease_id)

    def _check_credential(self, credential: str) -> str:
        """``credential`` if it is one of ours: never alter a role outside the prefix."""
        prefix = self._settings.role_prefix
        if (
            not isinstance(credential, str)
            or not credential.startswith(prefix)
            or not _LEASE_ID.fullmatch(credential[len(prefix) :])
            or len(credential) > MAX_IDENTIFIER
        ):
            rule = f"{prefix}<lease id>, at most {MAX_IDENTIFIER} bytes"
            raise InvalidInput("not a credential of this engine", details={"rule": rule})
        return credential

    def _group(self, role: RoleTemplate) -> str:
        """The template's group, if it is one a credential may join."""
        group = role.group
        if not isinstance(group, str) or not group or len(group.encode("utf-8")) > MAX_IDENTIFIER:
            raise InvalidInput(
                f"role template {role.name!r} names no group role (PostgreSQL needs one)",
                details={"role": role.name},
            )
        s = self._settings
        if group in self._unsafe_groups or group == s.admin_user or group.startswith(s.role_prefix):
            raise InvalidInput(
                f"role template {role.name!r}: group {group!r} is the admin, a managed role, or "
                "is or is in a role with SUPERUSER, CREATEROLE, CREATEDB, REPLICATION, BYPASSRLS "
                "or access to the server's files or programs",
                details={"role": role.name, "group": group},
            )
        return group

    async def _run(
        self,
        what: str,
        statement: sql.SQL | sql.Composed,
        params: tuple[object, ...] | None = None,
        *,
        database: str | None = None,
        hidden: tuple[str | None, ...] = (),
        missing_ok: bool = False,
    ) -> list[tuple[Any, ...]] | None:
        """The last result set's rows (``[]`` if none); ``None`` if a role it names is missing
        and ``missing_ok``. Every failure is ``EngineUnavailable``, with no secret in it."""
        pool = self._pools[database or self._settings.database]
        try:
            async with pool.connection() as conn:
                results = await _execute(conn, statement, params)
        except PoolTimeout:
            wait = self._settings.connect_timeout
            raise EngineUnavailable(
                f"PostgreSQL: {what}: no connection to {pool.name!r} within {wait:g} s"
            ) from None
        except psycopg.Error as exc:
            if missing_ok and isinstance(exc, psycopg.errors.UndefinedObject):
                return None
            raise _unavailable(what, exc, (self._secret, *hidden)) from None
        return results[-1] if results else []

    # -- create / extend ------------------------------------------------------------------

    async def create(
        self,
        *,
        credential: str,
        role: RoleTemplate,
        expires_at: datetime,
        holder: str = "",
        user: str | None = None,
    ) -> IssuedCredential:
        """A LOGIN role in the template's group (``holder`` and ``user`` are not used)."""
        name = self._check_credential(credential)
        group = self._group(role)
        until = sql.Literal(_timestamp(expires_at))
        password, verifier = await _password(role)
        statement = sql.SQL("CREATE ROLE {} LOGIN {} VALID UNTIL {} IN ROLE {}").format(
            sql.Identifier(name),
            sql.SQL("PASSWORD {}").format(sql.Literal(verifier)) if verifier else sql.SQL(""),
            until,
            sql.Identifier(group),
        )
        what = f"create {name!r} in group {group!r} of role template {role.name!r}"
        await self._run(what, statement, hidden=(password, verifier))
        s = self._settings
        details = {"username": name, "host": s.host, "port": s.port, "database": s.database}
        return IssuedCredential(credential=name, secret=password, details=MappingProxyType(details))

    async def extend(self, *, credential: str, role: RoleTemplate, expires_at: datetime) -> None:
        name = self._check_credential(credential)
        statement = sql.SQL("ALTER ROLE {} VALID UNTIL {}").format(
            sql.Identifier(name), sql.Literal(_timestamp(expires_at))
        )
        await self._run(f"extend {name!r}", statement)

    # -- revoke ---------------------------------------------------------------------------

    async def revoke(self, *, credential: str, role: RoleTemplate) -> None:
        name = self._check_credential(credential)
        s = self._settings
        if set(s.databases) <= {s.database} and await self._revoke_at_once(name):
            return
        oid = await self._block(name)
        if oid is None:
            return  # never created, or already removed
        ident, admin = sql.Identifier(name), sql.Identifier(s.admin_user)
        disown = _DISOWN.format(role=ident, admin=admin)
        others = [db for db in s.databases if db != s.database]
        disowning = (
            self._run(f"disown {name!r} in {db!r}", disown, database=db, missing_ok=True)
            for db in others
        )
        await asyncio.gather(*disowning)
        here = disown if s.database in s.databases else sql.SQL("")
        of_role = sql.SQL("{}::oid").format(sql.Literal(str(oid)))
        drop = _DROP.format(disown=here, role=ident, oid=of_role)
        await self._run(f"drop {name!r}", drop, missing_ok=True)

    async def _revoke_at_once(self, name: str) -> bool:
        """One round trip, one commit (:data:`_AT_ONCE`), for a role with no session in the one
        database. Whether it is done (the role is gone, or never was); ``False`` if the server
        refused — the role has a session, or the drop failed — and rolled it all back: the
        steps then run one at a time, ``NOLOGIN`` committed before anything else."""
        statement = at_once(name, admin=self._settings.admin_user)
        try:
            await self._run(f"revoke {name!r}", statement, missing_ok=True)
        except EngineUnavailable as exc:
            if not exc.details.get("sqlstate"):
                raise  # no answer from the server: the steps one at a time fare no better
            return False
        return True

    async def _block(self, name: str) -> int | None:
        """Commit ``NOLOGIN``, then terminate the role's sessions and wait for them to end;
        the role's oid, or ``None`` if it does not exist."""
        wait = sql.Literal(_TERMINATE_WAIT_MS)
        block = _BLOCK.format(role=sql.Identifier(name), name=sql.Literal(name), wait=wait)
        rows = await self._run(f"block {name!r}", block, missing_ok=True)
        if not rows:
            return None  # missing, or dropped by a concurrent revocation since
        oid, survivors = rows[0]
        # pg_terminate_backend says false for a session still running after the wait, and for
        # one that ended on its own meanwhile: tell them apart in a new snapshot.
        if survivors and (await self._run(f"check {name!r}", _RUNNING, (oid, survivors))):
            raise EngineUnavailable(
                f"PostgreSQL: a session of {name!r} did not end within {_TERMINATE_WAIT_MS} ms "
                "of being terminated; it can no longer log in",
                details={"credential": name},
            )
        return int(oid)

    # -- inventory ------------------------------------------------------------------------

    async def managed(self) -> set[str]:
        query = sql.SQL("SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)")
        prefix = self._settings.role_prefix
        rows = await self._run("list managed roles", query, (prefix,))
        names = (str(row[0]) for row in rows or ())
        return {n for n in names if _LEASE_ID.fullmatch(n[len(prefix) :])}

    async def unmanaged_logins(self) -> list[UnmanagedLogin]:
        s = self._settings
        expected = sorted({s.admin_user, *s.known_logins})
        rows = await self._run("list unmanaged logins", _UNMANAGED, (s.role_prefix, expected))
        return [_login(*row) for row in rows or ()]

    async def close(self) -> None:
        await asyncio.gather(*(pool.close() for pool in self._pools.values()))


#: One round trip: commit NOLOGIN (new logins fail from here on), then terminate every session
#: of the role and wait for each to end; the oid and the pids not confirmed ended. Sessions are
#: found with the backend-status functions (``userid`` is the session user), not through the
#: ``pg_stat_activity`` view: planning the view's joins tripled a revocation's time.
_BLOCK = sql.SQL(
    "BEGIN; ALTER ROLE {role} NOLOGIN; COMMIT; "
    "SELECT r.oid, (SELECT coalesce(array_agg(s.pid) FILTER "
    "(WHERE NOT pg_terminate_backend(s.pid, {wait})), '{{}}') "
    "FROM (SELECT pg_stat_get_backend_pid(b) AS pid FROM pg_stat_get_backend_idset() AS b "
    "WHERE pg_stat_get_backend_userid(b) = r.oid) AS s) "
    "FROM pg_roles AS r WHERE r.rolname = {name}"
)
#: The sessions of the role whose oid is ``{oid}``, and the last sweep that terminates them.
_SESSIONS_OF = "pg_stat_get_backend_idset() AS b WHERE pg_stat_get_backend_userid(b) = {oid}"
_SWEEP = "SELECT count(pg_terminate_backend(pg_stat_get_backend_pid(b))) FROM " + _SESSIONS_OF  # noqa: S608 - constants
#: One round trip, one commit, for a role with no session: NOLOGIN, its oid kept in a setting
#: of this session (:data:`_REVOKING`), the check for sessions (``object_in_use`` if there is
#: one: all is rolled back), what it owns, the role, then the sweep for a login between the
#: check and the commit.
_AT_ONCE = sql.SQL(  # constants only: names go in by format, as Identifier and Literal
    "BEGIN; ALTER ROLE {role} NOLOGIN; "  # noqa: S608
    "SELECT set_config('tether.revoking', r.oid::text, false) FROM pg_roles AS r "
    "WHERE r.rolname = {name}; "
    "DO $$BEGIN IF EXISTS (SELECT FROM " + _SESSIONS_OF + ") "
    "THEN RAISE EXCEPTION USING ERRCODE = 'object_in_use'; END IF; END$$; "
    "{disown}DROP ROLE {role}; COMMIT; " + _SWEEP
)
_REVOKING = sql.SQL("current_setting('tether.revoking')::oid")
_DISOWN = sql.SQL("REASSIGN OWNED BY {role} TO {admin}; DROP OWNED BY {role}; ")
#: One round trip: what the role owns in this database, the role, then a last sweep for a
#: session that logged in while NOLOGIN committed.
_DROP = sql.SQL("BEGIN; {disown}DROP ROLE {role}; COMMIT; " + _SWEEP)


def at_once(name: str, *, admin: str) -> sql.Composed:
    """The statement that revokes ``name`` (a role with no session) in one round trip
    (:data:`_AT_ONCE`), ``admin`` taking over what it owns; ``bench/bench_leases.py`` sends
    it bare as its floor."""
    ident = sql.Identifier(name)
    disown = _DISOWN.format(role=ident, admin=sql.Identifier(admin))
    return _AT_ONCE.format(role=ident, name=sql.Literal(name), disown=disown, oid=_REVOKING)


_RUNNING = sql.SQL("SELECT pid FROM pg_stat_activity WHERE usesysid = %s::oid AND pid = ANY(%s)")
#: Groups that are, or are members of, a role with powers beyond table privileges (the
#: ``pg_*_server_*`` roles reach the server's files and programs, as a superuser does).
_UNSAFE = sql.SQL(
    "SELECT g.rolname FROM pg_roles g WHERE g.rolname = ANY(%s) AND EXISTS (SELECT FROM pg_roles p "
    "WHERE (p.rolsuper OR p.rolcreaterole OR p.rolcreatedb OR p.rolreplication OR p.rolbypassrls "
    "OR p.rolname IN ('pg_execute_server_program', 'pg_read_server_files', "
    "'pg_write_server_files')) AND pg_has_role(g.oid, p.oid, 'MEMBER'))"
)
_UNMANAGED = sql.SQL(
    "SELECT rolname, rolsuper, rolcreaterole, "
    "CASE WHEN isfinite(rolvaliduntil) THEN rolvaliduntil END, "
    "CASE WHEN NOT isfinite(rolvaliduntil) THEN rolvaliduntil::text END "
    "FROM pg_roles WHERE rolcanlogin AND NOT starts_with(rolname, %s) "
    "AND rolname <> ALL(%s) ORDER BY rolname"
)


def _login(
    name: str, superuser: bool, createrole: bool, until: datetime | None, infinite: str | None
) -> PostgresLogin:
    """``valid_until``: ISO 8601, ``infinity``/``-infinity``, or ``None`` (never expires)."""
    valid_until = until.isoformat() if until is not None else infinite
    facts = {"superuser": superuser, "createrole": createrole, "valid_until": valid_until}
    return PostgresLogin(name=name, details=MappingProxyType(facts))


def _timestamp(at: datetime) -> str:
    if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
        raise InvalidInput("an expiry is a timezone-aware datetime", details={"rule": "expires_at"})
    return at.astimezone(UTC).isoformat()


async def _password(role: RoleTemplate) -> tuple[str | None, str | None]:
    """A new password and its verifier, or ``(None, None)`` for ``auth = "none"``."""
    if role.auth == "none":
        return None, None
    if role.auth != "password":
        raise InvalidInput(f"role template {role.name!r}: auth is 'password' or 'none'")
    password = secrets.token_urlsafe(_PASSWORD_BYTES)
    return password, await scram_verifier_async(password, iterations=role.scram_iterations)


# -- opening ------------------------------------------------------------------------------


def _connect_kwargs(s: PostgresSettings, secret: str | None, database: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "host": s.host,
        "port": s.port,
        "dbname": database,
        "user": s.admin_user,
        "autocommit": True,
        # libpq counts whole seconds and takes at least 2; asyncio.timeout bounds it exactly.
        "connect_timeout": max(2, math.ceil(s.connect_timeout)),
        "application_name": "tether-credentials",
        "options": _SERVER_OPTIONS,
    }
    if secret is not None:
        kwargs["password"] = secret
    return kwargs


async def _probe(s: PostgresSettings, secret: str | None, database: str) -> _Conn:
    """A direct connection, so a wrong password or a missing database is told clearly (a
    pool only says it timed out)."""
    what = f"connect to {database!r} at {s.host}:{s.port} as {s.admin_user!r}"
    try:
        async with asyncio.timeout(s.connect_timeout):
            conn = await psycopg.AsyncConnection.connect(**_connect_kwargs(s, secret, database))
    except TimeoutError:
        raise EngineUnavailable(
            f"PostgreSQL: {what}: no answer within {s.connect_timeout:g} s"
        ) from None
    except psycopg.Error as exc:
        raise _unavailable(what, exc, (secret,)) from None
    return conn


async def _unsafe_groups(conn: _Conn, config: EngineConfig) -> frozenset[str]:
    """The template groups a credential must not join: it could ``SET ROLE`` to a role with
    powers beyond table privileges. Checked when the engine opens (and reopens on a change of
    its configuration), not on each issuance."""
    groups = sorted({r.group for r in config.roles.values() if r.group})
    try:
        rows = (await _execute(conn, _UNSAFE, (groups,)))[-1]
    except psycopg.Error as exc:
        raise _unavailable("check the template groups", exc, ()) from None
    return frozenset(str(row[0]) for row in rows)


def _pool(s: PostgresSettings, secret: str | None, database: str) -> _Pool:
    return AsyncConnectionPool(
        kwargs=_connect_kwargs(s, secret, database),
        min_size=1,
        max_size=s.pool_size,
        open=False,
        name=database,
        timeout=s.connect_timeout,
    )


async def open_postgres_engine(config: EngineConfig, secret: str | None) -> PostgresEngine:
    """The engine of ``config`` (an :data:`~tether.credentials.engine.EngineFactory`):
    ``InvalidInput`` for bad settings, ``EngineUnavailable`` if PostgreSQL cannot be reached
    within ``connect_timeout`` or refuses the admin."""
    if config.kind != "postgres":
        raise InvalidInput(f"engine {config.name!r} is not a postgres engine")
    s = parse_postgres_settings(config.settings)
    databases = sorted({s.database, *s.databases})
    probes = await asyncio.gather(
        *(_probe(s, secret, db) for db in databases), return_exceptions=True
    )
    try:
        for probe in probes:
            if isinstance(probe, BaseException):
                raise probe
        main = probes[databases.index(s.database)]
        assert isinstance(main, psycopg.AsyncConnection)  # narrowing: no exception above
        unsafe = await _unsafe_groups(main, config)
    finally:
        await asyncio.gather(*(p.close() for p in probes if isinstance(p, psycopg.AsyncConnection)))
    pools = {db: _pool(s, secret, db) for db in databases}
    try:
        await asyncio.gather(
            *(p.open(wait=True, timeout=s.connect_timeout) for p in pools.values())
        )
    except PoolTimeout:
        await asyncio.gather(*(pool.close() for pool in pools.values()))
        raise EngineUnavailable(
            f"PostgreSQL: no pooled connection within {s.connect_timeout:g} s"
        ) from None
    return PostgresEngine(settings=s, pools=pools, secret=secret, unsafe_groups=unsafe)

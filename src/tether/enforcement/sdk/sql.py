"""The SQL guard's glue: a psycopg 3 connection whose every statement is asked about first.

:func:`guarded_connection` wraps a connection (typically one made from a lease's credential
with :func:`connect`). Before a text is sent, it is read as the server will read it — the
placeholders converted as psycopg converts them (``%s`` → ``$1``, ``%%`` → ``%``), or, on a
``ClientCursor``, with the values merged in as psycopg merges them — and analysed
(:func:`~tether.enforcement.sdk.sqlguard.analyse`). Each *(action, table)* of each statement is
then one decision at the checkpoint: ``action`` = ``select``/``insert``/``update``/``delete``,
resource = ``Table::"<database>/<schema>.<table>"`` (parent ``Database::"<database>"``,
attributes ``name`` and ``data_class``); a statement without a table is decided on the
``Database`` itself. All must allow; the first deny raises
:class:`~tether.errors.StatementDenied` with its decision id and nothing is sent. A text the
analysis refuses is refused all the same, and still recorded: the SDK asks the checkpoint with
the refusal (AuthZEN ``context.refusal``), which writes it as a deny without asking a policy.

What reaches the checkpoint (and its record) is each statement's text, never the parameter
values: they are often personal data, and a parameterised query keeps them out of the log. The
database role's own privileges stay the hard boundary — a statement the guard lets through
still fails if the role may not run it.

This is the only module of the SDK that imports psycopg (the ``sql`` extra).

Example::

    with client, client.lease("shop-db", "reader") as lease:
        with tether.sql.connect(client, lease) as conn:
            rows = conn.execute("select id from orders where customer = %s", [7]).fetchall()
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType
from typing import Any, Generic, Self

import psycopg
from psycopg import sql as pgsql
from psycopg.abc import Params
from psycopg.rows import Row, TupleRow

from tether.enforcement.sdk._flows import Lease
from tether.enforcement.sdk._sqlplan import (
    Check,
    Guard,
    converted,
    denial,
    refusal_reason,
    refused,
    unreadable,
)
from tether.enforcement.sdk.aio import AsyncClient
from tether.enforcement.sdk.client import Client
from tether.enforcement.sdk.sqlguard import DEFAULT_RULES, Rules, analyse
from tether.errors import Error, InvalidInput, StatementDenied

__all__ = [
    "Check",
    "Guard",
    "GuardedAsyncConnection",
    "GuardedAsyncCursor",
    "GuardedConnection",
    "GuardedCursor",
    "connect",
    "connect_async",
    "guarded_async_connection",
    "guarded_connection",
]

#: What a guarded cursor runs: text, or psycopg's composed SQL (no template strings).
Query = str | bytes | pgsql.SQL | pgsql.Composed
_PLAIN_SCHEMA = re.compile(r"[a-z_][a-z0-9_]*\Z")


def server_text(
    query: Query, params: Params | None, cursor: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]
) -> str:
    """The text the server will parse for ``cursor.execute(query, params)``. Only with
    ``standard_conforming_strings`` on (PostgreSQL's default, which the guard reads by):
    off, ``'\\'`` would open a string the analysis read as closed."""
    if cursor.connection.info.parameter_status("standard_conforming_strings") != "on":
        raise unreadable("standard_conforming_strings is off: strings would be misread")
    text = query_text(query, cursor.connection)
    if params is None or isinstance(cursor, psycopg.RawCursor | psycopg.AsyncRawCursor):
        return text
    if isinstance(cursor, psycopg.ClientCursor | psycopg.AsyncClientCursor):
        return cursor.mogrify(query, params)
    return converted(text)


def _shown(query: Query) -> str:
    """The query as its refusal's record shows it (composed SQL by its kind only)."""
    return query if isinstance(query, str) else f"<{type(query).__name__}>"


def query_text(query: Query, conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> str:
    if isinstance(query, str):
        return query
    if isinstance(query, bytes):
        try:
            return query.decode(conn.info.encoding)
        except (UnicodeDecodeError, LookupError):
            raise unreadable("the query is not text in the connection's encoding") from None
    if isinstance(query, pgsql.Composable):
        return query.as_string(conn)
    raise unreadable("the query is neither text, bytes nor psycopg.sql")


class GuardedCursor(Generic[Row]):
    """A psycopg cursor whose ``execute``/``executemany`` are checked first. Only what reads
    results is passed through: ``copy``, ``stream`` and server-side cursors are not offered."""

    def __init__(self, cursor: psycopg.Cursor[Row], owner: GuardedConnection[Any]) -> None:
        self._cursor = cursor
        self._owner = owner

    def execute(self, query: Query, params: Params | None = None) -> Self:
        self._owner.authorise(self._owner.text_of(query, params, self._cursor))
        self._cursor.execute(query, params)
        return self

    def executemany(
        self, query: Query, params_seq: Iterable[Params], *, returning: bool = False
    ) -> None:
        """Every distinct text is checked (one, unless values are merged client-side)."""
        rows = list(params_seq)
        for text in dict.fromkeys(self._owner.text_of(query, p, self._cursor) for p in rows):
            self._owner.authorise(text)
        self._cursor.executemany(query, rows, returning=returning)

    def fetchone(self) -> Row | None:
        return self._cursor.fetchone()

    def fetchmany(self, size: int = 0) -> list[Row]:
        return self._cursor.fetchmany(size)

    def fetchall(self) -> list[Row]:
        return self._cursor.fetchall()

    def __iter__(self) -> Iterator[Row]:
        return iter(self._cursor)

    def nextset(self) -> bool | None:
        return self._cursor.nextset()

    @property
    def description(self) -> list[psycopg.Column] | None:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def statusmessage(self) -> str | None:
        return self._cursor.statusmessage

    def close(self) -> None:
        self._cursor.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class GuardedConnection(Generic[Row]):
    """A psycopg connection that runs only what the analysis and the checkpoint allow;
    transactions are the driver's (``commit``, ``rollback``, ``transaction``)."""

    def __init__(self, conn: psycopg.Connection[Row], *, client: Client, guard: Guard) -> None:
        self._conn = conn
        self._client = client
        self.guard = guard

    def authorise(self, text: str) -> None:
        """Analyse ``text`` and ask the checkpoint about every statement of it; raises
        :class:`~tether.errors.StatementDenied` (or the client's error) unless all allow."""
        try:
            statements = analyse(text, rules=self.guard.rules)
        except StatementDenied as denied:
            raise refused(denied, self._record(text, denied)) from None
        for check in self.guard.checks(statements):
            decision = self._client.check(
                check.action, check.resource, arguments=check.arguments,
                context=self.guard.send_context(), entities=check.entities,
            )  # fmt: skip
            if not decision.allowed:
                raise denial(check, decision)

    def text_of(self, query: Query, params: Params | None, cursor: psycopg.Cursor[Any]) -> str:
        """What the server would read; a query that cannot be read so is refused, recorded."""
        try:
            return server_text(query, params, cursor)
        except StatementDenied as denied:
            raise refused(denied, self._record(_shown(query), denied)) from None

    def _record(self, text: str, denied: StatementDenied) -> str | None:
        check = self.guard.refusal(text)
        try:
            decision = self._client.check(
                check.action, check.resource, arguments=check.arguments,
                context=self.guard.send_context(refusal_reason(denied)),
            )  # fmt: skip
        except Error:
            return None  # refused all the same; the record could not be written
        return decision.decision_id or None

    def cursor(self) -> GuardedCursor[Row]:
        return GuardedCursor(self._conn.cursor(), self)

    def execute(self, query: Query, params: Params | None = None) -> GuardedCursor[Row]:
        return self.cursor().execute(query, params)

    def commit(self) -> None:
        self._conn.commit()

    def rollback(self) -> None:
        self._conn.rollback()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._conn.transaction():
            yield

    @property
    def closed(self) -> bool:
        return self._conn.closed

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """As psycopg's: commit on success, roll back on an error, then close."""
        try:
            if not self._conn.closed:
                self._conn.rollback() if kind is not None else self._conn.commit()
        finally:
            self.close()


class GuardedAsyncCursor(Generic[Row]):
    """:class:`GuardedCursor` on an event loop."""

    def __init__(self, cursor: psycopg.AsyncCursor[Row], owner: GuardedAsyncConnection[Any]):
        self._cursor = cursor
        self._owner = owner

    async def execute(self, query: Query, params: Params | None = None) -> Self:
        await self._owner.authorise(await self._owner.text_of(query, params, self._cursor))
        await self._cursor.execute(query, params)
        return self

    async def executemany(
        self, query: Query, params_seq: Iterable[Params], *, returning: bool = False
    ) -> None:
        rows = list(params_seq)
        texts = [await self._owner.text_of(query, p, self._cursor) for p in rows]
        for text in dict.fromkeys(texts):
            await self._owner.authorise(text)
        await self._cursor.executemany(query, rows, returning=returning)

    async def fetchone(self) -> Row | None:
        return await self._cursor.fetchone()

    async def fetchmany(self, size: int = 0) -> list[Row]:
        return await self._cursor.fetchmany(size)

    async def fetchall(self) -> list[Row]:
        return await self._cursor.fetchall()

    def __aiter__(self) -> AsyncIterator[Row]:
        return aiter(self._cursor)

    @property
    def description(self) -> list[psycopg.Column] | None:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    async def close(self) -> None:
        await self._cursor.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class GuardedAsyncConnection(Generic[Row]):
    """:class:`GuardedConnection` on an event loop, asking with an :class:`AsyncClient`."""

    def __init__(
        self, conn: psycopg.AsyncConnection[Row], *, client: AsyncClient, guard: Guard
    ) -> None:
        self._conn = conn
        self._client = client
        self.guard = guard

    async def authorise(self, text: str) -> None:
        try:
            statements = analyse(text, rules=self.guard.rules)
        except StatementDenied as denied:
            raise refused(denied, await self._record(text, denied)) from None
        for check in self.guard.checks(statements):
            decision = await self._client.check(
                check.action, check.resource, arguments=check.arguments,
                context=self.guard.send_context(), entities=check.entities,
            )  # fmt: skip
            if not decision.allowed:
                raise denial(check, decision)

    async def text_of(
        self, query: Query, params: Params | None, cursor: psycopg.AsyncCursor[Any]
    ) -> str:
        try:
            return server_text(query, params, cursor)
        except StatementDenied as denied:
            raise refused(denied, await self._record(_shown(query), denied)) from None

    async def _record(self, text: str, denied: StatementDenied) -> str | None:
        check = self.guard.refusal(text)
        try:
            decision = await self._client.check(
                check.action, check.resource, arguments=check.arguments,
                context=self.guard.send_context(refusal_reason(denied)),
            )  # fmt: skip
        except Error:
            return None
        return decision.decision_id or None

    def cursor(self) -> GuardedAsyncCursor[Row]:
        return GuardedAsyncCursor(self._conn.cursor(), self)

    async def execute(self, query: Query, params: Params | None = None) -> GuardedAsyncCursor[Row]:
        return await self.cursor().execute(query, params)

    async def commit(self) -> None:
        await self._conn.commit()

    async def rollback(self) -> None:
        await self._conn.rollback()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        async with self._conn.transaction():
            yield

    async def close(self) -> None:
        await self._conn.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if not self._conn.closed:
                await (self._conn.rollback() if kind is not None else self._conn.commit())
        finally:
            await self.close()


def guarded_connection(
    conn: psycopg.Connection[Row],
    *,
    client: Client,
    database: str,
    rules: Rules = DEFAULT_RULES,
    data_classes: Mapping[str, str] | None = None,
    default_class: str = "internal",
    context: Mapping[str, Any] | None = None,
) -> GuardedConnection[Row]:
    """``conn``, guarded: ``database`` is its name in policies (``Database::"<database>"``,
    tables ``Table::"<database>/<schema>.<table>"``)."""
    guard = Guard(database=database, rules=rules, data_classes=data_classes,
                  default_class=default_class, context=context)  # fmt: skip
    return GuardedConnection(conn, client=client, guard=guard)


def connection_kwargs(lease: Lease, *, rules: Rules = DEFAULT_RULES) -> dict[str, Any]:
    """psycopg's connection arguments for a PostgreSQL lease: its host, port, database, role
    and password; the ``search_path`` pinned to the schema the analysis assumes for
    unqualified names (so a schema named after the role cannot shadow it), and strings read
    as the analysis reads them (``standard_conforming_strings``)."""
    credential = lease.credential
    missing = [k for k in ("host", "port", "database", "name", "secret") if k not in credential]
    if missing:
        raise InvalidInput(f"not a PostgreSQL lease: its credential lacks {', '.join(missing)}")
    if not _PLAIN_SCHEMA.match(rules.default_schema):
        raise InvalidInput("the default schema is a plain lower-case name here")
    return {
        "host": credential["host"],
        "port": int(credential["port"]),
        "dbname": credential["database"],
        "user": credential["name"],
        "password": credential["secret"],
        "options": f"-c search_path={rules.default_schema} -c standard_conforming_strings=on",
    }


def connect(
    client: Client,
    lease: Lease,
    *,
    database: str | None = None,
    rules: Rules = DEFAULT_RULES,
    data_classes: Mapping[str, str] | None = None,
    default_class: str = "internal",
    context: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> GuardedConnection[TupleRow]:
    """A guarded connection made with ``lease``'s credential. In policies the database is
    named ``database``, by default the lease's engine (what ``use_credential`` was decided
    on); ``kwargs`` go to :func:`psycopg.connect`."""
    conn = psycopg.connect(**(connection_kwargs(lease, rules=rules) | kwargs))
    return guarded_connection(
        conn, client=client, database=database or lease.engine, rules=rules,
        data_classes=data_classes, default_class=default_class, context=context,
    )  # fmt: skip


def guarded_async_connection(
    conn: psycopg.AsyncConnection[Row], *, client: AsyncClient, database: str, **options: Any
) -> GuardedAsyncConnection[Row]:
    """:func:`guarded_connection` for an ``AsyncConnection``; ``options`` are :class:`Guard`'s
    (``rules``, ``data_classes``, ``default_class``, ``context``)."""
    return GuardedAsyncConnection(conn, client=client, guard=Guard(database=database, **options))


async def connect_async(
    client: AsyncClient, lease: Lease, *, database: str | None = None,
    rules: Rules = DEFAULT_RULES, guard_options: Mapping[str, Any] | None = None, **kwargs: Any,
) -> GuardedAsyncConnection[TupleRow]:  # fmt: skip
    """:func:`connect` on an event loop; ``guard_options`` as in
    :func:`guarded_async_connection`."""
    conn = await psycopg.AsyncConnection.connect(**(connection_kwargs(lease, rules=rules) | kwargs))
    guard = Guard(database=database or lease.engine, rules=rules, **(guard_options or {}))
    return GuardedAsyncConnection(conn, client=client, guard=guard)

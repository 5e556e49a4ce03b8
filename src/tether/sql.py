"""The SQL guard: a psycopg 3 connection, obtained with a lease, that runs only the statements
the checkpoint allows, table by table.

Every text is parsed (sqlglot, PostgreSQL dialect) before it is sent: stacked statements are
each seen, statement classes are allow-listed (``select``, ``insert``, ``update``, ``delete``,
``merge``), opaque commands, ``COPY``, DDL, session settings and functions that reach outside
the tables (``pg_read_file``, ``dblink``, ``query_to_xml`` …) are refused, and each
*(action, table)* is one decision — so a policy can say "this agent may read ``orders`` for
Alice's purpose, never ``payroll``"::

    permit (principal == Tether::Agent::"shop-bot", action == Tether::Action::"select",
            resource == Tether::Table::"shop-db/public.orders");

On an event loop: :func:`connect_async` with a :class:`tether.AsyncClient`. The database
role's own privileges stay the hard boundary. Needs the ``sql`` extra
(``pip install 'tether[sql]'``). See ``docs/sql-guard.md``.

Example::

    with tether.Client(addr, agent=spiffe_id, key=pem) as client:
        with client.lease("shop-db", "reader") as lease, tether.sql.connect(client, lease) as db:
            db.execute("select id, total from orders where customer = %s", [7]).fetchall()
            db.execute("select * from payroll")   # raises tether.StatementDenied

    >>> from tether.sql import analyse
    >>> [(a.action, a.table) for a in analyse("delete from orders where id = $1")[0].accesses]
    [('delete', 'public.orders')]
"""

from tether.enforcement.sdk.sql import (
    GuardedAsyncConnection,
    GuardedAsyncCursor,
    GuardedConnection,
    GuardedCursor,
    connect,
    connect_async,
    guarded_async_connection,
    guarded_connection,
)
from tether.enforcement.sdk.sqlguard import (
    DEFAULT_RULES,
    FORBIDDEN_FUNCTIONS,
    Access,
    Rules,
    Statement,
    analyse,
)

__all__ = [
    "DEFAULT_RULES",
    "FORBIDDEN_FUNCTIONS",
    "Access",
    "GuardedAsyncConnection",
    "GuardedAsyncCursor",
    "GuardedConnection",
    "GuardedCursor",
    "Rules",
    "Statement",
    "analyse",
    "connect",
    "connect_async",
    "guarded_async_connection",
    "guarded_connection",
]

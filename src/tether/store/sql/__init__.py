"""The SQL store: SQLite (embedded default) or PostgreSQL (production), one schema, one code path.

:func:`open_sql_store` connects, applies the packaged Alembic migrations (``migrate=True``)
and returns a :class:`SqlStore` that implements :class:`tether.store.interfaces.Store`.
A database that cannot be reached raises :class:`~tether.errors.StoreUnavailable`.

Each store operation is one unit of work that reaches the database in one hop. SQLite runs on
SQLAlchemy's synchronous pysqlite engine in one worker thread owned by the store: the asyncio
adapter over aiosqlite hopped between threads four or five times per statement (1.1–1.7 ms a
call on a 2-vCPU host, against about 0.3 ms for a read unit and 0.9 ms for a durable write unit
in one hop). PostgreSQL runs on the asyncio engine (psycopg), whose waits are network round
trips. ``sqlite+aiosqlite://`` URLs are still accepted and run on pysqlite.

Example::

    store = await open_sql_store("sqlite:///var/lib/tether/tether.db")
    try:
        agents = await store.list_agents()
    finally:
        await store.close()

or, as a context manager, ``async with await open_sql_store(url) as store: ...``.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from tether._internal.clock import Clock, SystemClock
from tether.store.sql.engine import parse_url, unavailable
from tether.store.sql.migrate import upgrade
from tether.store.sql.store import SqlStore

__all__ = ["SqlStore", "open_sql_store"]


def _ping(connection: Connection) -> None:
    connection.execute(text("SELECT 1"))


async def open_sql_store(url: str, *, migrate: bool = True, clock: Clock | None = None) -> SqlStore:
    """Open the store at ``url``, upgrading its schema first unless ``migrate`` is false.

    ``clock`` decides when a replay key has expired (default: the system clock); pass the
    clock the rest of the server uses.
    """
    parsed = parse_url(url)
    store = SqlStore(parsed, clock=clock or SystemClock())
    try:
        if migrate:
            await upgrade(store)
        else:
            await store.run_sync(_ping)
    except (DBAPIError, OSError) as exc:
        await store.close()
        raise unavailable(exc, parsed) from None
    except BaseException:
        await store.close()
        raise
    return store

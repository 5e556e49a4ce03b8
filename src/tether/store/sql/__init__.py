"""The SQL store: SQLite (embedded default) or PostgreSQL (production), one schema, one code path.

:func:`open_sql_store` connects, applies the packaged Alembic migrations (``migrate=True``)
and returns a :class:`SqlStore` that implements :class:`tether.store.interfaces.Store`.
A database that cannot be reached raises :class:`~tether.errors.StoreUnavailable`.

Example::

    store = await open_sql_store("sqlite+aiosqlite:///var/lib/tether/tether.db")
    try:
        seq = await store.append_audit(record)
    finally:
        await store.close()

or, as a context manager, ``async with await open_sql_store(url) as store: ...``.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tether._internal.clock import Clock, SystemClock
from tether.store.sql.engine import create_engine, parse_url, unavailable
from tether.store.sql.migrate import upgrade
from tether.store.sql.store import SqlStore

__all__ = ["SqlStore", "open_sql_store"]


async def open_sql_store(url: str, *, migrate: bool = True, clock: Clock | None = None) -> SqlStore:
    """Open the store at ``url``, upgrading its schema first unless ``migrate`` is false.

    ``clock`` decides when a replay key has expired (default: the system clock); pass the
    clock the rest of the server uses.
    """
    parsed = parse_url(url)
    engine = create_engine(parsed)
    try:
        if migrate:
            await upgrade(engine)
        else:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    except (DBAPIError, OSError) as exc:
        await engine.dispose()
        raise unavailable(exc, parsed) from None
    except BaseException:
        await engine.dispose()
        raise
    return SqlStore(engine, url=parsed, clock=clock or SystemClock())

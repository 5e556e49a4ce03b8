"""Alembic environment for Tether's schema, run from the package by ``open_sql_store``.

The store hands Alembic a live synchronous connection (``config.attributes["connection"]``,
from one of the store's units of work, ``SqlStore.run_sync``), already inside the transaction
that holds the migration lock, so a schema upgrade commits all together or not at all.
Offline mode (``--sql``) renders the SQL for a database administrator from ``sqlalchemy.url``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from tether.store.sql.tables import VERSION_TABLE, metadata


def _run_online(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_offline() -> None:
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    if context.is_offline_mode():
        _run_offline()
        return
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise TypeError(
            "Tether's migrations run on a connection handed over by "
            "tether.store.sql.migrate.alembic_config(connection)"
        )
    _run_online(connection)


_main()

"""Schema migrations, applied from the installed package with Alembic.

The scripts live in ``tether/store/sql/migrations`` (package data), so an installed Tether
upgrades its own database on start without an ``alembic.ini`` or a checkout. The upgrade is one
unit of work of the store, in one transaction, DDL included, so a failed upgrade leaves the
schema as it was. Upgraders that start together go one after the other instead of racing on
``CREATE TABLE``: on PostgreSQL behind a transaction-scoped advisory lock, on SQLite behind
``BEGIN IMMEDIATE``.

A new revision is written by hand or generated against a migrated database::

    from alembic import command
    with engine.begin() as conn:  # a synchronous engine on a database at head
        command.revision(alembic_config(conn), message="add leases", autogenerate=True)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection

if TYPE_CHECKING:
    from tether.store.sql.store import SqlStore

__all__ = ["HEAD", "SCRIPT_LOCATION", "alembic_config", "upgrade"]

SCRIPT_LOCATION = "tether.store.sql:migrations"
HEAD = "head"
#: An arbitrary constant naming Tether's migration lock among PostgreSQL advisory locks.
_PG_LOCK_KEY = 0x7E7E_0001


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration that finds the packaged scripts and uses ``connection``."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    command.upgrade(alembic_config(connection), HEAD)


async def upgrade(store: SqlStore) -> None:
    """Bring the database up to the newest revision (a no-op when it is there already)."""
    await store.run_sync(_upgrade, write=True)

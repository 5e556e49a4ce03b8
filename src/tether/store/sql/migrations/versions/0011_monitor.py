"""The monitor's store: alerts and the use agents were seen to make of what they may do.

Revision ID: 0011
Revises: 0010
Create Date: 2027-03-01

``alerts`` holds one row per alert (:class:`tether.monitor.models.Alert`), keyed by id and
listed newest first by ``(first_seen, id)``; ids sort byte by byte (collation ``C`` on
PostgreSQL). Owners are a JSON list, details a JSON object. At most one alert per
``(kind, key)`` may be active (open or acknowledged): a partial unique index over the rows not
resolved enforces it in the database, so two replicas opening the same alert at once cannot
both succeed (PostgreSQL and SQLite both have partial indexes). Alerts are listed by state and
first seen, and by agent, through their own indexes.

``monitor_usage`` holds one row per ``(agent, action, resource)`` an agent was allowed
(:class:`~tether.monitor.models.Usage`): how many times, and when last. Types are spelled out,
as in ``0001``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIME = sa.DateTime(timezone=True)
_ID = sa.String(64).with_variant(sa.String(64, collation="C"), "postgresql")
_KEY = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")
_ACTIVE = sa.text("state <> 'resolved'")
_ACTIVE_INDEX = "ix_alerts_active_kind_key"
_STATE_INDEX = "ix_alerts_state_first_seen"
_AGENT_INDEX = "ix_alerts_agent"


def _create_alerts() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", _ID, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("agent", sa.Text(), nullable=True),
        sa.Column("owners", sa.Text(), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("first_seen", _TIME, nullable=False),
        sa.Column("last_seen", _TIME, nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("acknowledged_by", sa.Text(), nullable=True),
        sa.Column("acknowledged_at", _TIME, nullable=True),
        sa.Column("resolved_by", sa.Text(), nullable=True),
        sa.Column("resolved_at", _TIME, nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
    )
    op.create_index(
        _ACTIVE_INDEX,
        "alerts",
        ["kind", "key"],
        unique=True,
        postgresql_where=_ACTIVE,
        sqlite_where=_ACTIVE,
    )
    op.create_index(_STATE_INDEX, "alerts", ["state", "first_seen"])
    op.create_index(_AGENT_INDEX, "alerts", ["agent"])


def upgrade() -> None:
    _create_alerts()
    op.create_table(
        "monitor_usage",
        sa.Column("agent", _KEY, nullable=False),
        sa.Column("action", _KEY, nullable=False),
        sa.Column("resource", _KEY, nullable=False),
        sa.Column("last_used", _TIME, nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("agent", "action", "resource", name="pk_monitor_usage"),
    )


def downgrade() -> None:
    op.drop_table("monitor_usage")
    op.drop_index(_AGENT_INDEX, table_name="alerts")
    op.drop_index(_STATE_INDEX, table_name="alerts")
    op.drop_index(_ACTIVE_INDEX, table_name="alerts")
    op.drop_table("alerts")

"""Policy sets: every stored version of the operators' policy set, and which one is active.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

``policy_sets.version`` is numbered by the store (``max + 1`` under its write lock), so it has
no sequence behind it. ``policy_state`` holds at most one row (``id = 1``), written when a
version is first activated. Types are spelled out, as in ``0001``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "policy_sets",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("version", name="pk_policy_sets"),
    )
    op.create_table(
        "policy_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("active_version", sa.Integer(), nullable=True),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.CheckConstraint("id = 1", name="ck_policy_state_single_row"),
        sa.ForeignKeyConstraint(
            ["active_version"],
            ["policy_sets.version"],
            name="fk_policy_state_active_version_policy_sets",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_policy_state"),
    )


def downgrade() -> None:
    op.drop_table("policy_state")
    op.drop_table("policy_sets")

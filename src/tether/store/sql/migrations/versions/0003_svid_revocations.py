"""SVID revocations: the deny list of agent tokens (JWT-SVIDs) revoked before they expire.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-09

An entry lives only until every token it covers has expired (``until``: minutes), so the
table stays small; the maintenance round deletes expired rows, by the index on ``until``.
Types are spelled out, as in ``0001``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "svid_revocations",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("revoked_at", _TIME, nullable=False),
        sa.Column("until", _TIME, nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_svid_revocations"),
    )
    op.create_index("ix_svid_revocations_until", "svid_revocations", ["until"])


def downgrade() -> None:
    op.drop_table("svid_revocations")  # its index goes with it

"""The tamper-evident audit log: entries and chain heads, signed checkpoints, subtree hashes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

``audit_records`` gains the record's place in its replica's log (``log``, ``log_index``,
unique together), the exact bytes hashed (``entry``) and the chain head after them
(``chain``). Records written before this revision keep nulls there until a replica adopts
them into its log at start (``tether.audit.log``): nothing is rewritten here, because the
entry format needs the replica's log name, which only the server knows.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIME = sa.DateTime(timezone=True)
_LOG = sa.String(255)


def upgrade() -> None:
    # Plain ADD COLUMN and a unique index: SQLite does both without rebuilding the table.
    op.add_column("audit_records", sa.Column("log", _LOG, nullable=True))
    op.add_column("audit_records", sa.Column("log_index", sa.BigInteger(), nullable=True))
    op.add_column("audit_records", sa.Column("entry", sa.LargeBinary(), nullable=True))
    op.add_column("audit_records", sa.Column("chain", sa.LargeBinary(), nullable=True))
    op.create_index(
        "ix_audit_records_log_log_index", "audit_records", ["log", "log_index"], unique=True
    )
    op.create_index("ix_audit_records_correlation_id", "audit_records", ["correlation_id"])
    op.create_table(
        "audit_checkpoints",
        sa.Column("log", _LOG, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("root", sa.LargeBinary(), nullable=False),
        sa.Column("note", sa.LargeBinary(), nullable=False),
        sa.Column("signed_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("log", "size", name="pk_audit_checkpoints"),
    )
    op.create_table(
        "audit_tree_nodes",
        sa.Column("log", _LOG, nullable=False),
        sa.Column("level", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("log", "level", "idx", name="pk_audit_tree_nodes"),
    )


def downgrade() -> None:
    op.drop_table("audit_tree_nodes")
    op.drop_table("audit_checkpoints")
    op.drop_index("ix_audit_records_correlation_id", table_name="audit_records")
    op.drop_index("ix_audit_records_log_log_index", table_name="audit_records")
    for column in ("chain", "entry", "log_index", "log"):
        op.drop_column("audit_records", column)

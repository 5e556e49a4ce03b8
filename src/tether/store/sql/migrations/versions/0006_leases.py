"""Leases and credential engines: just-in-time credentials and the engines that issue them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-15

``leases`` holds one row per lease (:class:`tether.credentials.models.Lease`); ``credential``
is unique (an engine never hands one name out twice) and ``Lease.user`` is ``user_name``
(``user`` is reserved in PostgreSQL). The reaper finds its work by the ``(state, expires_at)``
and ``(state, next_attempt_at)`` indexes; bulk revocations by agent, instance, grant, user or
engine by one index each. ``credential_engines`` holds each engine's configuration, its admin
secret sealed (never in ``settings``). Lease ids and engine names sort byte by byte (collation
``C`` on PostgreSQL), as agent names do. Types are spelled out, as in ``0001``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIME = sa.DateTime(timezone=True)
_LEASE_INDEXES = (
    ("agent",),
    ("engine",),
    ("grant_id",),
    ("instance",),
    ("state", "expires_at"),
    ("state", "next_attempt_at"),
    ("user_name",),
)


def _binary_string(length: int) -> sa.types.TypeEngine[str]:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("id", _binary_string(64), nullable=False),
        sa.Column("engine", sa.String(63), nullable=False),
        sa.Column("role", sa.String(63), nullable=False),
        sa.Column("credential", sa.String(255), nullable=False),
        sa.Column("agent", sa.Text(), nullable=False),
        sa.Column("instance", sa.Text(), nullable=False),
        sa.Column("grant_id", sa.Text(), nullable=True),
        sa.Column("user_name", sa.Text(), nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.Column("max_expires_at", _TIME, nullable=False),
        sa.Column("renewals", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.Column("ending", sa.String(16), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _TIME, nullable=True),
        sa.Column("claimed_until", _TIME, nullable=True),
        sa.Column("ended_at", _TIME, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_leases"),
        sa.UniqueConstraint("credential", name="uq_leases_credential"),
    )
    for columns in _LEASE_INDEXES:
        op.create_index(f"ix_leases_{'_'.join(columns)}", "leases", list(columns))
    op.create_table(
        "credential_engines",
        sa.Column("name", _binary_string(63), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("settings", sa.Text(), nullable=False),
        sa.Column("roles", sa.Text(), nullable=False),
        sa.Column("sealed_secret", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_credential_engines"),
    )


def downgrade() -> None:
    op.drop_table("credential_engines")
    op.drop_table("leases")  # its indexes go with it

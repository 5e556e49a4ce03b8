"""Users and grants: the people agents act for, and their consent.

Revision ID: 0007
Revises: 0006
Create Date: 2027-01-05

``users`` holds one row per user (:class:`tether.delegation.models.User`). Names are unique
(they are the ``sub`` of the user's tokens and never reassigned: users are disabled, not
deleted), and so is ``(issuer, subject)``, which federated sign-in looks users up by.
``grants`` holds one row per consent grant; ``Grant.user`` is ``user_name`` (``user`` is
reserved in PostgreSQL) and the scopes are a sorted JSON list. Grants are found by user,
agent and session (listings and bulk revocations) and, when in force, by the
``(state, expires_at)`` index. User names and grant ids sort byte by byte (collation ``C`` on
PostgreSQL), as agent names and lease ids do. Types are spelled out, as in ``0001``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIME = sa.DateTime(timezone=True)
_GRANT_INDEXES = (
    ("agent",),
    ("session",),
    ("state", "expires_at"),
    ("user_name",),
)


def _binary_string(length: int) -> sa.types.TypeEngine[str]:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", _binary_string(255), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=True),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=True),
        sa.Column("issuer", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.Column("disabled_at", _TIME, nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("name", name="uq_users_name"),
        sa.UniqueConstraint("issuer", "subject", name="uq_users_issuer_subject"),
    )
    op.create_table(
        "grants",
        sa.Column("id", _binary_string(64), nullable=False),
        sa.Column("user_name", sa.Text(), nullable=False),
        sa.Column("agent", sa.Text(), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("purpose_code", sa.Text(), nullable=False),
        sa.Column("session", sa.Text(), nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("revoked_at", _TIME, nullable=True),
        sa.Column("revoked_by", sa.Text(), nullable=True),
        sa.Column("revoke_reason", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_grants"),
    )
    for columns in _GRANT_INDEXES:
        op.create_index(f"ix_grants_{'_'.join(columns)}", "grants", list(columns))


def downgrade() -> None:
    op.drop_table("grants")  # its indexes go with it
    op.drop_table("users")

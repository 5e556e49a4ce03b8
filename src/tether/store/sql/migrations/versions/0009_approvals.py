"""Approval requests: what agents ask users to approve out of band (OpenID CIBA Core 1.0).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

``approvals`` holds one row per request (:class:`tether.delegation.models.Approval`). Only
the SHA-256 of the ``auth_req_id`` the client holds is stored, as ``auth_req_key``, unique: a
poll finds its request by it. ``Approval.user`` is ``user_name`` (``user`` is reserved in
PostgreSQL); the scope is a sorted JSON list, the authorization details a JSON list in the
order given, and the approved positions a JSON list. Requests are listed by id, which sorts
byte by byte (collation ``C`` on PostgreSQL) as grant ids do, found by agent, and counted by
``(user_name, created_at)`` for the rate limit. Types are spelled out, as in ``0001``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIME = sa.DateTime(timezone=True)
_INDEXES = (
    ("agent",),
    ("user_name", "created_at"),
)


def _binary_string(length: int) -> sa.types.TypeEngine[str]:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def _index_name(columns: tuple[str, ...]) -> str:
    return f"ix_approvals_{'_'.join(columns)}"


def upgrade() -> None:
    op.create_table(
        "approvals",
        sa.Column("id", _binary_string(64), nullable=False),
        sa.Column("auth_req_key", sa.String(64), nullable=False),
        sa.Column("client", sa.Text(), nullable=False),
        sa.Column("agent", sa.Text(), nullable=False),
        sa.Column("user_name", sa.Text(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("binding_message", sa.Text(), nullable=True),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.Column("interval", sa.Integer(), nullable=False),
        sa.Column("grant_id", sa.Text(), nullable=True),
        sa.Column("notification_endpoint", sa.Text(), nullable=True),
        sa.Column("notification_token", sa.Text(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("approved", sa.Text(), nullable=False),
        sa.Column("decided_at", _TIME, nullable=True),
        sa.Column("decided_by", sa.Text(), nullable=True),
        sa.Column("last_polled_at", _TIME, nullable=True),
        sa.Column("redeemed_at", _TIME, nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_approvals"),
        sa.UniqueConstraint("auth_req_key", name="uq_approvals_auth_req_key"),
    )
    for columns in _INDEXES:
        op.create_index(_index_name(columns), "approvals", list(columns))


def downgrade() -> None:
    for columns in _INDEXES:
        op.drop_index(_index_name(columns), table_name="approvals")
    op.drop_table("approvals")

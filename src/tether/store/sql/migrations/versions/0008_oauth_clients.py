"""OAuth clients: the applications people sign in to through the built-in provider.

Revision ID: 0008
Revises: 0007
Create Date: 2027-01-12

``oauth_clients`` holds one row per client (:class:`tether.delegation.models.OAuthClient`).
Clients are public (PKCE binds a code to the client that asked for it), so a row holds no
secret. The redirect URIs are a JSON list in the order given; ``agent`` is the agent the
application fronts, if any. Clients are listed by id, which sorts byte by byte (collation
``C`` on PostgreSQL), as grant ids do. Types are spelled out, as in ``0001``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIME = sa.DateTime(timezone=True)


def _binary_string(length: int) -> sa.types.TypeEngine[str]:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "oauth_clients",
        sa.Column("id", _binary_string(255), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("redirect_uris", sa.Text(), nullable=False),
        sa.Column("agent", sa.Text(), nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_oauth_clients"),
    )


def downgrade() -> None:
    op.drop_table("oauth_clients")

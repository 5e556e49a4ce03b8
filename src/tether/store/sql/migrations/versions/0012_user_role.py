"""A person's console role, stored on the user.

Revision ID: 0012
Revises: 0011
Create Date: 2027-03-15

``users`` gains ``role``: the operator role (``tether.identity.models.Role``) the person holds
in the web console, or null for an end user, who sees only their own grants and approvals.
Every user there is before this revision is an end user: nothing is rewritten. The column is a
plain nullable ``ADD COLUMN``, which SQLite does without rebuilding the table.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("role", sa.String(32), nullable=True))


def downgrade() -> None:
    op.drop_column("users", "role")

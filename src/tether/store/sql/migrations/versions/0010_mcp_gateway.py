"""The MCP gateway's registry: upstream MCP servers and the pins of their tools.

Revision ID: 0010
Revises: 0009
Create Date: 2027-02-01

``mcp_servers`` holds one row per upstream (:class:`tether.enforcement.mcp.models.Upstream`),
keyed and listed by name, which sorts byte by byte (collation ``C`` on PostgreSQL). The command
line is a JSON list, the credential (only where the gateway gets it: an engine and role, never a
secret) a JSON object or null, and the allow-list a sorted JSON list or null (every tool).

``mcp_tool_pins`` holds one row per tool of a server (:class:`~tether.enforcement.mcp.models.
ToolPin`), keyed by ``(server, tool)``; deleting a server deletes its pins (``ON DELETE
CASCADE``; SQLite runs with foreign keys on). The last definition seen is a JSON object. Pins
are found by tool across servers (shadowing) through an index on ``tool``. Types are spelled
out, as in ``0001``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIME = sa.DateTime(timezone=True)
_NAME = sa.String(63).with_variant(sa.String(63, collation="C"), "postgresql")
_TOOL = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")
_TOOL_INDEX = "ix_mcp_tool_pins_tool"


def upgrade() -> None:
    op.create_table(
        "mcp_servers",
        sa.Column("name", _NAME, nullable=False),
        sa.Column("transport", sa.String(16), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("command", sa.Text(), nullable=False),
        sa.Column("credential", sa.Text(), nullable=True),
        sa.Column("allowed_tools", sa.Text(), nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_mcp_servers"),
    )
    op.create_table(
        "mcp_tool_pins",
        sa.Column("server", _NAME, nullable=False),
        sa.Column("tool", _TOOL, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("digest", sa.Text(), nullable=True),
        sa.Column("seen_digest", sa.Text(), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("first_seen_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("approved_by", sa.Text(), nullable=True),
        sa.Column("approved_at", _TIME, nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["server"],
            ["mcp_servers.name"],
            name="fk_mcp_tool_pins_server_mcp_servers",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("server", "tool", name="pk_mcp_tool_pins"),
    )
    op.create_index(_TOOL_INDEX, "mcp_tool_pins", ["tool"])


def downgrade() -> None:
    op.drop_index(_TOOL_INDEX, table_name="mcp_tool_pins")
    op.drop_table("mcp_tool_pins")
    op.drop_table("mcp_servers")

"""The initial schema: agents, assessments, keys, instances, replay keys, operator tokens,
stored keys and the audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-25

Types are spelled out here (not imported from ``tables``) so this revision stays what it was
when the application's tables change. ``DateTime(timezone=True)`` is what the ``UtcDateTime``
decorator stores; ``Text`` is what ``JsonText`` stores.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIME = sa.DateTime(timezone=True)
_ID = sa.String(64)


def upgrade() -> None:
    _agents()
    _agent_children()
    _tokens_and_keys()
    _audit()


def _agents() -> None:
    op.create_table(
        "agents",
        sa.Column("id", _ID, nullable=False),
        sa.Column(
            "name",
            sa.String(63).with_variant(sa.String(63, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("spiffe_id", sa.Text(), nullable=False),
        sa.Column("owners", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("declarations", sa.Text(), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("state_reason", sa.Text(), nullable=True),
        sa.Column("risk_score", sa.Integer(), nullable=False),
        sa.Column("risk_tier", sa.String(16), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_agents"),
        sa.UniqueConstraint("name", name="uq_agents_name"),
    )
    op.create_index("ix_agents_state_name", "agents", ["state", "name"])
    op.create_table(
        "risk_assessments",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", _ID, nullable=False),
        sa.Column("agent_id", _ID, nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("factors", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("assessed_at", _TIME, nullable=False),
        sa.Column("assessed_by", sa.Text(), nullable=False),
        sa.Column("declarations", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name="fk_risk_assessments_agent_id_agents"
        ),
        sa.PrimaryKeyConstraint("seq", name="pk_risk_assessments"),
        sa.UniqueConstraint("id", name="uq_risk_assessments_id"),
    )
    op.create_index(
        "ix_risk_assessments_agent_id_assessed_at",
        "risk_assessments",
        ["agent_id", "assessed_at"],
    )


def _agent_children() -> None:
    op.create_table(
        "agent_keys",
        sa.Column("agent_id", _ID, nullable=False),
        sa.Column("kid", sa.String(255), nullable=False),
        sa.Column("jwk", sa.Text(), nullable=False),
        sa.Column("alg", sa.String(16), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("removed_at", _TIME, nullable=True),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], name="fk_agent_keys_agent_id_agents"),
        sa.PrimaryKeyConstraint("agent_id", "kid", name="pk_agent_keys"),
    )
    op.create_table(
        "agent_instances",
        sa.Column("agent_id", _ID, nullable=False),
        sa.Column("instance_id", sa.String(64), nullable=False),
        sa.Column("spiffe_id", sa.Text(), nullable=False),
        sa.Column("first_seen", _TIME, nullable=False),
        sa.Column("last_seen", _TIME, nullable=False),
        sa.Column("last_kid", sa.Text(), nullable=True),
        sa.Column("last_auth_method", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name="fk_agent_instances_agent_id_agents"
        ),
        sa.PrimaryKeyConstraint("agent_id", "instance_id", name="pk_agent_instances"),
    )


def _tokens_and_keys() -> None:
    op.create_table(
        "replay_keys",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_replay_keys"),
    )
    op.create_index("ix_replay_keys_expires_at", "replay_keys", ["expires_at"])
    op.create_table(
        "operator_tokens",
        sa.Column("id", _ID, nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("expires_at", _TIME, nullable=True),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("revoked_at", _TIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_operator_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_operator_tokens_token_hash"),
    )
    op.create_table(
        "stored_keys",
        sa.Column("kid", sa.String(255), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("alg", sa.String(16), nullable=False),
        sa.Column("public_pem", sa.LargeBinary(), nullable=False),
        sa.Column("sealed_private", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("certificate_pem", sa.LargeBinary(), nullable=True),
        sa.Column("retired_at", _TIME, nullable=True),
        sa.Column("publish_until", _TIME, nullable=True),
        sa.PrimaryKeyConstraint("kid", name="pk_stored_keys"),
    )


def _audit() -> None:
    op.create_table(
        "audit_records",
        sa.Column(
            "sequence",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", _ID, nullable=False),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("time", _TIME, nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("correlation_id", sa.Text(), nullable=True),
        sa.Column("details", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("sequence", name="pk_audit_records"),
        sa.UniqueConstraint("id", name="uq_audit_records_id"),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    for table in (
        "audit_records",
        "stored_keys",
        "operator_tokens",
        "replay_keys",
        "agent_instances",
        "agent_keys",
        "risk_assessments",
        "agents",
    ):
        op.drop_table(table)

"""The relational schema: one table per stored concept, the same on SQLite and PostgreSQL.

This metadata is the source of truth that the Alembic migrations must reproduce exactly (a test
runs ``alembic.autogenerate.compare_metadata`` against a migrated database and expects no
difference). Duplicate detection is left to primary keys and unique constraints, so it holds
across concurrent callers and replicas.

Two column types keep both backends identical:

* :class:`UtcDateTime` — SQLite hands back naive datetimes; every value is stored as UTC and
  comes back as an aware UTC datetime.
* :class:`JsonText` — JSON as ``TEXT`` with sorted keys, so stored bytes are canonical and
  never depend on a backend's JSON type.

Agent names sort with the binary ``"C"`` collation on PostgreSQL, as they do on SQLite and in
the memory store, so paging by name returns the same order everywhere.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

__all__ = [
    "AGENT_NAME",
    "VERSION_TABLE",
    "JsonText",
    "UtcDateTime",
    "agent_instances",
    "agent_keys",
    "agents",
    "alerts",
    "approvals",
    "as_utc",
    "audit_checkpoints",
    "audit_records",
    "audit_tree_nodes",
    "credential_engines",
    "grants",
    "leases",
    "mcp_servers",
    "mcp_tool_pins",
    "metadata",
    "monitor_usage",
    "oauth_clients",
    "operator_tokens",
    "policy_sets",
    "policy_state",
    "replay_keys",
    "risk_assessments",
    "stored_keys",
    "svid_revocations",
    "users",
]

#: Alembic's bookkeeping table, named so that it cannot collide in a shared database.
VERSION_TABLE = "tether_alembic_version"

#: The type of ``agents.name``: binary collation on PostgreSQL (SQLite compares bytes already).
AGENT_NAME = sa.String(63).with_variant(sa.String(63, collation="C"), "postgresql")


def _binary_string(length: int) -> sa.types.TypeEngine[str]:
    """A key listed in order: compared byte by byte on PostgreSQL too, as everywhere else."""
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; ``ValueError`` if it is naive (what every datetime column refuses)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("naive datetime: the store takes aware UTC datetimes only")
    return moment.astimezone(UTC)


def utc_or_none(moment: datetime | None) -> datetime | None:
    return None if moment is None else as_utc(moment)


class UtcDateTime(TypeDecorator[datetime]):
    """An aware datetime stored in UTC; naive values are refused, results are always aware."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class JsonText(TypeDecorator[Any]):
    """A JSON document kept as canonical ``TEXT`` (sorted keys, compact separators)."""

    impl = sa.Text()
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        return None if value is None else json.loads(value)


metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

agents = sa.Table(
    "agents",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", AGENT_NAME, nullable=False, unique=True),
    sa.Column("spiffe_id", sa.Text(), nullable=False),
    sa.Column("owners", JsonText(), nullable=False),
    sa.Column("description", sa.Text(), nullable=False),
    sa.Column("declarations", JsonText(), nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("state_reason", sa.Text(), nullable=True),
    sa.Column("risk_score", sa.Integer(), nullable=False),
    sa.Column("risk_tier", sa.String(16), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Column("created_by", sa.Text(), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Index(None, "state", "name"),
)

risk_assessments = sa.Table(
    "risk_assessments",
    metadata,
    # The surrogate key keeps insertion order among assessments made at the same instant.
    sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("agent_id", sa.String(64), sa.ForeignKey("agents.id"), nullable=False),
    sa.Column("score", sa.Integer(), nullable=False),
    sa.Column("tier", sa.String(16), nullable=False),
    sa.Column("factors", JsonText(), nullable=False),
    sa.Column("model", sa.Text(), nullable=False),
    sa.Column("assessed_at", UtcDateTime(), nullable=False),
    sa.Column("assessed_by", sa.Text(), nullable=False),
    sa.Column("declarations", JsonText(), nullable=False),
    sa.Index(None, "agent_id", "assessed_at"),
)

agent_keys = sa.Table(
    "agent_keys",
    metadata,
    sa.Column("agent_id", sa.String(64), sa.ForeignKey("agents.id"), primary_key=True),
    sa.Column("kid", sa.String(255), primary_key=True),
    sa.Column("jwk", JsonText(), nullable=False),
    sa.Column("alg", sa.String(16), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("created_by", sa.Text(), nullable=False),
    sa.Column("removed_at", UtcDateTime(), nullable=True),
)

agent_instances = sa.Table(
    "agent_instances",
    metadata,
    sa.Column("agent_id", sa.String(64), sa.ForeignKey("agents.id"), primary_key=True),
    sa.Column("instance_id", sa.String(64), primary_key=True),
    sa.Column("spiffe_id", sa.Text(), nullable=False),
    sa.Column("first_seen", UtcDateTime(), nullable=False),
    sa.Column("last_seen", UtcDateTime(), nullable=False),
    sa.Column("last_kid", sa.Text(), nullable=True),
    sa.Column("last_auth_method", sa.String(64), nullable=False),
)

replay_keys = sa.Table(
    "replay_keys",
    metadata,
    sa.Column("key", sa.Text(), primary_key=True),
    sa.Column("expires_at", UtcDateTime(), nullable=False, index=True),
)

operator_tokens = sa.Table(
    "operator_tokens",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("display_name", sa.Text(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("expires_at", UtcDateTime(), nullable=True),
    sa.Column("created_by", sa.Text(), nullable=False),
    sa.Column("revoked_at", UtcDateTime(), nullable=True),
)

stored_keys = sa.Table(
    "stored_keys",
    metadata,
    sa.Column("kid", sa.String(255), primary_key=True),
    sa.Column("purpose", sa.String(32), nullable=False),
    sa.Column("alg", sa.String(16), nullable=False),
    sa.Column("public_pem", sa.LargeBinary(), nullable=False),
    sa.Column("sealed_private", sa.LargeBinary(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("certificate_pem", sa.LargeBinary(), nullable=True),
    sa.Column("retired_at", UtcDateTime(), nullable=True),
    sa.Column("publish_until", UtcDateTime(), nullable=True),
)

audit_records = sa.Table(
    "audit_records",
    metadata,
    # BIGINT on PostgreSQL; on SQLite it must be INTEGER to alias the rowid. Numbers are
    # last + 1, taken under the write lock (a batch numbers its rows itself); audit rows are
    # never deleted, so a number is never handed out twice.
    sa.Column(
        "sequence",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    # What queries look records up by. The record itself is its log entry (below); the
    # columns from ``time`` to ``details`` hold it only for records stored before 0004 that
    # no replica has adopted into its log yet, and are null otherwise (0005).
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("type", sa.String(128), nullable=False),
    sa.Column("time", UtcDateTime(), nullable=True),
    sa.Column("actor", sa.Text(), nullable=True),
    sa.Column("subject", sa.Text(), nullable=True),
    sa.Column("outcome", sa.String(16), nullable=True),
    sa.Column("correlation_id", sa.Text(), nullable=True, index=True),
    sa.Column("details", JsonText(), nullable=True),
    # The record as entry ``log_index`` of the replica's log ``log``: the exact bytes hashed
    # and the chain head after them (see tether.audit.chain). Null only for records stored
    # before 0004, until a replica adopts them into its log.
    sa.Column("log", sa.String(255), nullable=True),
    sa.Column("log_index", sa.BigInteger(), nullable=True),
    sa.Column("entry", sa.LargeBinary(), nullable=True),
    sa.Column("chain", sa.LargeBinary(), nullable=True),
    # A unique index, not a constraint: SQLite adds it without rebuilding the table.
    sa.Index("ix_audit_records_log_log_index", "log", "log_index", unique=True),
    sqlite_autoincrement=True,
)

audit_checkpoints = sa.Table(
    "audit_checkpoints",
    metadata,
    sa.Column("log", sa.String(255), primary_key=True),
    sa.Column("size", sa.BigInteger(), primary_key=True),
    sa.Column("root", sa.LargeBinary(), nullable=False),
    # The signed note, as signed (C2SP tlog-checkpoint in a signed note).
    sa.Column("note", sa.LargeBinary(), nullable=False),
    sa.Column("signed_at", UtcDateTime(), nullable=False),
)

audit_tree_nodes = sa.Table(
    "audit_tree_nodes",
    metadata,
    # The root of leaves [idx * 2^level, (idx + 1) * 2^level) of the log, for level >= 8.
    sa.Column("log", sa.String(255), primary_key=True),
    sa.Column("level", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("idx", sa.BigInteger(), primary_key=True, autoincrement=False),
    sa.Column("hash", sa.LargeBinary(), nullable=False),
)

policy_sets = sa.Table(
    "policy_sets",
    metadata,
    # Numbered max + 1 by the store, under its write lock: no gaps, never reused.
    sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("text", sa.Text(), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("created_by", sa.Text(), nullable=False),
    sa.Column("comment", sa.Text(), nullable=True),
)

policy_state = sa.Table(
    "policy_state",
    metadata,
    # One row (id 1), written when a version is first activated.
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("active_version", sa.Integer(), sa.ForeignKey("policy_sets.version"), nullable=True),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.CheckConstraint("id = 1", name="single_row"),
)

svid_revocations = sa.Table(
    "svid_revocations",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    # A jti, an agent's name or an instance's SPIFFE ID.
    sa.Column("target", sa.Text(), nullable=False),
    sa.Column("revoked_at", UtcDateTime(), nullable=False),
    # When every token the entry covers has expired: read as "live while until > now".
    sa.Column("until", UtcDateTime(), nullable=False, index=True),
    sa.Column("actor", sa.Text(), nullable=False),
    sa.Column("reason", sa.Text(), nullable=True),
)

leases = sa.Table(
    "leases",
    metadata,
    # Listed and paged by id, so compared byte by byte everywhere.
    sa.Column("id", _binary_string(64), primary_key=True),
    sa.Column("engine", sa.String(63), nullable=False, index=True),
    sa.Column("role", sa.String(63), nullable=False),
    # The engine's name for what it created (a PostgreSQL role name): a fact, never a secret.
    sa.Column("credential", sa.String(255), nullable=False, unique=True),
    sa.Column("agent", sa.Text(), nullable=False, index=True),
    sa.Column("instance", sa.Text(), nullable=False, index=True),
    sa.Column("grant_id", sa.Text(), nullable=True, index=True),
    # ``Lease.user``: ``user`` is a reserved word in PostgreSQL.
    sa.Column("user_name", sa.Text(), nullable=True, index=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("expires_at", UtcDateTime(), nullable=False),
    sa.Column("max_expires_at", UtcDateTime(), nullable=False),
    sa.Column("renewals", sa.Integer(), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Column("ending", sa.String(16), nullable=True),
    sa.Column("reason", sa.Text(), nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("next_attempt_at", UtcDateTime(), nullable=True),
    sa.Column("claimed_until", UtcDateTime(), nullable=True),
    sa.Column("ended_at", UtcDateTime(), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("version", sa.Integer(), nullable=False),
    # The reaper's queries: active leases by expiry, leases being revoked by next attempt.
    sa.Index(None, "state", "expires_at"),
    sa.Index(None, "state", "next_attempt_at"),
)

credential_engines = sa.Table(
    "credential_engines",
    metadata,
    sa.Column("name", _binary_string(63), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    # Never a secret: the admin secret is sealed apart, in ``sealed_secret``.
    sa.Column("settings", JsonText(), nullable=False),
    # Role templates by name, each as ``RoleTemplate.to_dict()``.
    sa.Column("roles", JsonText(), nullable=False),
    sa.Column("sealed_secret", sa.LargeBinary(), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("created_by", sa.Text(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    # The ``sub`` of the user's tokens: listed and paged by it, so compared byte by byte.
    sa.Column("name", _binary_string(255), nullable=False, unique=True),
    sa.Column("display_name", sa.Text(), nullable=True),
    sa.Column("email", sa.Text(), nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    # An Argon2id PHC string, or null for a user who signs in elsewhere.
    sa.Column("password_hash", sa.Text(), nullable=True),
    sa.Column("issuer", sa.Text(), nullable=False),
    sa.Column("subject", sa.Text(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Column("disabled_at", UtcDateTime(), nullable=True),
    sa.Column("version", sa.Integer(), nullable=False),
    # The person's console role (``Role``), or null: an end user. Added by 0012.
    sa.Column("role", sa.String(32), nullable=True),
    # Federated sign-in finds the user by what their provider calls them.
    sa.UniqueConstraint("issuer", "subject"),
)

grants = sa.Table(
    "grants",
    metadata,
    # Listed and paged by id, so compared byte by byte everywhere.
    sa.Column("id", _binary_string(64), primary_key=True),
    # ``Grant.user``: ``user`` is a reserved word in PostgreSQL.
    sa.Column("user_name", sa.Text(), nullable=False, index=True),
    sa.Column("agent", sa.Text(), nullable=False, index=True),
    # A sorted JSON list of the scopes.
    sa.Column("scopes", JsonText(), nullable=False),
    sa.Column("purpose", sa.Text(), nullable=False),
    sa.Column("purpose_code", sa.Text(), nullable=False),
    sa.Column("session", sa.Text(), nullable=True, index=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("expires_at", UtcDateTime(), nullable=False),
    sa.Column("created_by", sa.Text(), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("revoked_at", UtcDateTime(), nullable=True),
    sa.Column("revoked_by", sa.Text(), nullable=True),
    sa.Column("revoke_reason", sa.Text(), nullable=True),
    sa.Column("version", sa.Integer(), nullable=False),
    # Grants in force: active ones by expiry.
    sa.Index(None, "state", "expires_at"),
)

oauth_clients = sa.Table(
    "oauth_clients",
    metadata,
    # Listed by id, so compared byte by byte everywhere.
    sa.Column("id", _binary_string(255), primary_key=True),
    sa.Column("name", sa.Text(), nullable=False),
    # A JSON list of the registered redirect URIs, in the order given.
    sa.Column("redirect_uris", JsonText(), nullable=False),
    # The agent the application fronts, if any.
    sa.Column("agent", sa.Text(), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("created_by", sa.Text(), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
)

approvals = sa.Table(
    "approvals",
    metadata,
    # Listed and paged by id, so compared byte by byte everywhere.
    sa.Column("id", _binary_string(64), primary_key=True),
    # The SHA-256 of the ``auth_req_id`` the client holds (never the id itself).
    sa.Column("auth_req_key", sa.String(64), nullable=False, unique=True),
    # The agent instance (SPIFFE ID) that asked.
    sa.Column("client", sa.Text(), nullable=False),
    sa.Column("agent", sa.Text(), nullable=False, index=True),
    # ``Approval.user``: ``user`` is a reserved word in PostgreSQL.
    sa.Column("user_name", sa.Text(), nullable=False),
    # A sorted JSON list of the scopes.
    sa.Column("scope", JsonText(), nullable=False),
    sa.Column("binding_message", sa.Text(), nullable=True),
    # A JSON list of the RFC 9396 ``authorization_details`` items, in the order given.
    sa.Column("details", JsonText(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("expires_at", UtcDateTime(), nullable=False),
    sa.Column("interval", sa.Integer(), nullable=False),
    sa.Column("grant_id", sa.Text(), nullable=True),
    sa.Column("notification_endpoint", sa.Text(), nullable=True),
    sa.Column("notification_token", sa.Text(), nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    # A JSON list of the positions in ``details`` the user approved.
    sa.Column("approved", JsonText(), nullable=False),
    sa.Column("decided_at", UtcDateTime(), nullable=True),
    sa.Column("decided_by", sa.Text(), nullable=True),
    sa.Column("last_polled_at", UtcDateTime(), nullable=True),
    sa.Column("redeemed_at", UtcDateTime(), nullable=True),
    sa.Column("version", sa.Integer(), nullable=False),
    # The rate limit: a user's requests since a time.
    sa.Index(None, "user_name", "created_at"),
)

mcp_servers = sa.Table(
    "mcp_servers",
    metadata,
    # Listed by name, so compared byte by byte everywhere.
    sa.Column("name", _binary_string(63), primary_key=True),
    sa.Column("transport", sa.String(16), nullable=False),
    sa.Column("url", sa.Text(), nullable=True),
    # A JSON list: the command line, program first (empty for an HTTP server).
    sa.Column("command", JsonText(), nullable=False),
    # A JSON object of the ``Injection`` fields, or null: never a secret, only where to get it.
    sa.Column("credential", JsonText(), nullable=True),
    # A sorted JSON list of the only tools forwarded, or null: every tool.
    sa.Column("allowed_tools", JsonText(), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("created_by", sa.Text(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
)

mcp_tool_pins = sa.Table(
    "mcp_tool_pins",
    metadata,
    # Deleting a server deletes its pins (SQLite runs with foreign keys on); a server's pins
    # are listed by tool name, compared byte by byte everywhere.
    sa.Column("server", _binary_string(63), sa.ForeignKey("mcp_servers.name", ondelete="CASCADE")),
    sa.Column("tool", sa.Text().with_variant(sa.Text(collation="C"), "postgresql")),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("digest", sa.Text(), nullable=True),
    sa.Column("seen_digest", sa.Text(), nullable=False),
    # The definition the server gave last, as a JSON object.
    sa.Column("definition", JsonText(), nullable=False),
    sa.Column("first_seen_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Column("reason", sa.Text(), nullable=True),
    sa.Column("approved_by", sa.Text(), nullable=True),
    sa.Column("approved_at", UtcDateTime(), nullable=True),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint("server", "tool"),
    # A tool's pins across servers (shadowing).
    sa.Index(None, "tool"),
)

#: The monitor's open and acknowledged alerts: at most one per ``(kind, key)``.
_ACTIVE_ALERT = sa.text("state <> 'resolved'")

alerts = sa.Table(
    "alerts",
    metadata,
    # Listed and paged by (first_seen, id), so compared byte by byte everywhere.
    sa.Column("id", _binary_string(64), primary_key=True),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("key", sa.Text(), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("summary", sa.Text(), nullable=False),
    sa.Column("agent", sa.Text(), nullable=True, index=True),
    # JSON: the owners as a list, the details as an object.
    sa.Column("owners", JsonText(), nullable=False),
    sa.Column("details", JsonText(), nullable=False),
    sa.Column("first_seen", UtcDateTime(), nullable=False),
    sa.Column("last_seen", UtcDateTime(), nullable=False),
    sa.Column("count", sa.Integer(), nullable=False),
    sa.Column("acknowledged_by", sa.Text(), nullable=True),
    sa.Column("acknowledged_at", UtcDateTime(), nullable=True),
    sa.Column("resolved_by", sa.Text(), nullable=True),
    sa.Column("resolved_at", UtcDateTime(), nullable=True),
    sa.Column("note", sa.Text(), nullable=True),
    sa.Column("version", sa.Integer(), nullable=False),
    # Replicas racing to open the same alert: the database lets one win.
    sa.Index(
        "ix_alerts_active_kind_key",
        "kind",
        "key",
        unique=True,
        postgresql_where=_ACTIVE_ALERT,
        sqlite_where=_ACTIVE_ALERT,
    ),
    sa.Index(None, "state", "first_seen"),
)

monitor_usage = sa.Table(
    "monitor_usage",
    metadata,
    # Listed in key order, compared byte by byte everywhere.
    sa.Column("agent", sa.Text().with_variant(sa.Text(collation="C"), "postgresql")),
    sa.Column("action", sa.Text().with_variant(sa.Text(collation="C"), "postgresql")),
    sa.Column("resource", sa.Text().with_variant(sa.Text(collation="C"), "postgresql")),
    sa.Column("last_used", UtcDateTime(), nullable=False),
    sa.Column("count", sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint("agent", "action", "resource"),
)

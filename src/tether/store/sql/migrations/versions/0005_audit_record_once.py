"""Audit records stored once: in their log entry, indexed by id, type and correlation id.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

Since 0004 every record is stored twice: as its log entry (the bytes the chain and the signed
tree cover) and again as columns. The columns ``time``, ``actor``, ``subject``, ``outcome``
and ``details`` are read by nothing that the entry cannot answer, and writing them cost the
audit writer more than building the entry (two more serialisations per record). They become
nullable: a record with an entry leaves them null and is read from its entry; ``id``,
``type`` and ``correlation_id`` stay, as the indexes queries use. Records stored before 0004
keep their columns until a replica adopts them (:mod:`tether.audit.log`).

SQLite cannot drop a NOT NULL in place, so there the table is rebuilt (its rows copied once).
Downgrading fills the columns back from each entry.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIME = sa.DateTime(timezone=True)
_COLUMNS = (
    ("time", _TIME),
    ("actor", sa.Text()),
    ("outcome", sa.String(16)),
    ("details", sa.Text()),
)
#: Rows filled back per statement when downgrading.
_PAGE = 1000


def _nullable(nullable: bool) -> None:
    with op.batch_alter_table(
        "audit_records", table_kwargs={"sqlite_autoincrement": True}
    ) as batch:
        for name, kind in _COLUMNS:
            batch.alter_column(name, existing_type=kind, nullable=nullable)


def upgrade() -> None:
    _nullable(True)


def downgrade() -> None:
    records = sa.table(
        "audit_records",
        sa.column("sequence", sa.BigInteger()),
        sa.column("entry", sa.LargeBinary()),
        *(sa.column(name, kind) for name, kind in (*_COLUMNS, ("subject", sa.Text()))),
    )
    conn = op.get_bind()
    after = 0
    while True:
        rows = conn.execute(
            sa.select(records.c.sequence, records.c.entry)
            .where(records.c.time.is_(None), records.c.sequence > after)
            .order_by(records.c.sequence)
            .limit(_PAGE)
        ).all()
        if not rows:
            break
        for sequence, entry in rows:
            record = json.loads(bytes(entry))["record"]
            conn.execute(
                records.update()
                .where(records.c.sequence == sequence)
                .values(
                    time=datetime.fromisoformat(record["time"]).astimezone(UTC),
                    actor=record["actor"],
                    subject=record["subject"],
                    outcome=record["outcome"],
                    details=json.dumps(record["details"], sort_keys=True, separators=(",", ":")),
                )
            )
        after = rows[-1][0]
    _nullable(False)

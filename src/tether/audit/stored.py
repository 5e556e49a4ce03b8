"""What the audit log stores, and the seams it stores it through.

:class:`LogEntry` is a record as an entry of a replica's log, as the writer hands it to the
store (:func:`build_entries` makes them); :class:`StoredEntry` what a reader gets back;
:class:`SignedCheckpoint` a signed tree head as stored and as handed to witnesses;
:class:`AuditLocation` where a record sits. The Protocols are the writer's seams:
:class:`AuditLogStore` (the SQL and memory stores), :class:`NoteSigner` (the key ring's audit
key) and :class:`Witness` (files, HTTP). The writer itself is :mod:`tether.audit.log`.

Example::

    >>> StoredEntry(index=0, entry=b"{}", chain=bytes(32)).index
    0
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from tether.audit.merkle import CompactTree, leaf_hash
from tether.audit.records import AuditRecord
from tether.audit.tiles import TILE_LEVEL, TreeNode
from tether.errors import InvalidInput

__all__ = [
    "AuditLocation",
    "AuditLogStore",
    "LogEntry",
    "NoteSigner",
    "SignedCheckpoint",
    "StoredEntry",
    "Witness",
    "build_entries",
]


@dataclass(slots=True)
class LogEntry:
    """A record as entry ``index`` of the log ``log``: its stored bytes and chain head.
    Treated as immutable, but not a frozen dataclass: the writer makes one per record, and a
    frozen one costs three times as much to make."""

    record: AuditRecord
    log: str
    index: int
    entry: bytes
    chain: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class StoredEntry:
    index: int
    entry: bytes
    chain: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditLocation:
    """A stored record and where it is: its number among all records, its log and index
    (None for a record stored before logs had entries and not adopted yet)."""

    sequence: int
    record: AuditRecord
    log: str | None
    index: int | None


@dataclass(frozen=True, kw_only=True)
class SignedCheckpoint:
    """A signed tree head of one log, as stored and as handed to witnesses."""

    log: str
    size: int
    root: bytes
    note: bytes
    signed_at: datetime


def build_entries(
    records: Sequence[AuditRecord],
    origin: str,
    tree: CompactTree,
    chain: bytes,
    refused: list[tuple[int, InvalidInput]] | None = None,
) -> tuple[list[LogEntry], list[TreeNode], bytes]:
    """Entries of the log ``origin`` for ``records``, appended to ``tree`` (changed in place)
    after the chain head ``chain``; the subtrees they complete, and the chain head after
    them. A record JSON cannot carry raises :class:`InvalidInput`, or with ``refused`` is left
    out, its position and error added there."""
    entries: list[LogEntry] = []
    nodes: list[TreeNode] = []
    for position, record in enumerate(records):
        index = tree.size
        try:
            entry = record.entry(origin=origin, index=index, prev=chain)
        except InvalidInput as exc:
            if refused is None:
                raise
            refused.append((position, exc))
            continue
        chain = leaf_hash(entry)  # the chain head: the next entry names it as prev
        nodes += tree.append_nodes(chain, min_level=TILE_LEVEL)
        entries.append(LogEntry(record=record, log=origin, index=index, entry=entry, chain=chain))
    return entries, nodes, chain


class AuditLogStore(Protocol):
    async def append_audit_entries(
        self, entries: Sequence[LogEntry], nodes: Sequence[TreeNode], *, adopt: bool = False
    ) -> list[int]:
        """Write ``entries`` (their records, or with ``adopt`` the chain columns of records
        stored before the log had entries) and ``nodes`` in one transaction; return each
        record's global sequence number. :class:`~tether.errors.LogPositionTaken` if an index
        is taken (another writer on this log); ``Conflict`` if a record id is."""
        ...

    async def audit_log_end(self, log: str) -> StoredEntry | None: ...

    async def audit_entries(self, log: str, *, start: int, stop: int) -> list[StoredEntry]:
        """Entries ``start`` ≤ index < ``stop`` of ``log``, in order."""
        ...

    async def audit_tree_nodes(
        self, log: str, keys: Collection[tuple[int, int]]
    ) -> dict[tuple[int, int], bytes]: ...

    async def add_audit_checkpoint(self, checkpoint: SignedCheckpoint) -> None: ...

    async def latest_audit_checkpoint(self, log: str) -> SignedCheckpoint | None: ...

    async def unchained_audit_records(self, *, limit: int) -> list[AuditRecord]:
        """Records stored before the log had entries (oldest first), to adopt into a log."""
        ...


class NoteSigner(Protocol):
    def sign(self, data: bytes) -> bytes: ...

    def verify(self, data: bytes, signature: bytes) -> bool: ...

    def public_raw(self) -> bytes: ...


class Witness(Protocol):
    """Somewhere outside the database that keeps the checkpoints."""

    name: str

    async def publish(self, checkpoint: SignedCheckpoint) -> None: ...

    async def latest(self, log: str) -> bytes | None:
        """The newest note it holds for ``log`` (None if it cannot be read back)."""
        ...

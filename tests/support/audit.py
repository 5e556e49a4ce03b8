"""Audit logs for tests: a fixed signing key, a log opened on any store, entries by hand."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tether._internal.clock import Clock, FixedClock
from tether.audit.chain import genesis
from tether.audit.log import AuditLog
from tether.audit.merkle import CompactTree, leaf_hash
from tether.audit.records import AuditRecord
from tether.audit.stored import AuditLogStore, LogEntry
from tether.audit.tiles import TILE_LEVEL, TreeNode
from tether.crypto.keyring import AuditSigner

ORIGIN = "tether.test/audit/r1"
KEY_NAME = "tether.test/audit"


def signer(seed: int = 1) -> AuditSigner:
    return AuditSigner(Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32), kid=f"k{seed}")


async def open_log(
    store: AuditLogStore, clock: Clock | None = None, *, origin: str = ORIGIN, **options: Any
) -> AuditLog:
    """The audit log of ``store`` as a server opens it (checkpointer running: close it)."""
    return await AuditLog(
        store=store,
        origin=origin,
        key_name=KEY_NAME,
        signer=options.pop("signer", None) or signer(),
        clock=clock or FixedClock(),
        **options,
    ).start()


class Chainer:
    """Builds the entries a log writer would for the next records of ``log`` (for tests of
    the store's contract, which take entries as given)."""

    def __init__(self, log: str = ORIGIN) -> None:
        self.log = log
        self.tree = CompactTree()
        self.chain = genesis(log)

    def entries(self, records: Sequence[AuditRecord]) -> tuple[list[LogEntry], list[TreeNode]]:
        entries: list[LogEntry] = []
        nodes: list[TreeNode] = []
        for record in records:
            index = self.tree.size
            entry = record.entry(origin=self.log, index=index, prev=self.chain)
            self.chain = leaf_hash(entry)
            nodes += self.tree.append_nodes(self.chain, min_level=TILE_LEVEL)
            entries.append(
                LogEntry(record=record, log=self.log, index=index, entry=entry, chain=self.chain)
            )
        return entries, nodes

"""``prove`` for one record of a 1,000,000-record audit log (the issue's aim: <= 50 ms).

Builds a log of N records in an embedded SQLite store — entries, chain heads and the stored
subtree hashes, written through the store's own append in batches — signs a checkpoint over
all of it, then times :func:`tether.audit.reader.prove` (find the record, read the stored
subtrees and at most two tiles of entries, build the inclusion proof, and check the bundle
as a third party would, signature included) for records spread over the log.

Run: ``make bench`` or ``.venv/bin/python bench/bench_audit_prove.py [N]`` (N = 1,000,000;
building the log takes about a minute).
"""

from __future__ import annotations

import asyncio
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import _report
from _audit_records import decision
from tether.audit.chain import genesis
from tether.audit.merkle import CompactTree, leaf_hash
from tether.audit.notes import TreeHead, sign_note, verifier_key
from tether.audit.reader import prove
from tether.audit.stored import LogEntry, SignedCheckpoint
from tether.audit.tiles import TILE_LEVEL, TreeNode
from tether.store.sql import open_sql_store

ORIGIN = "bench.example/audit/r1"
KEY_NAME = "bench.example/audit"
BATCH = 5000
PROOFS = 200


async def build(path: Path, n: int) -> tuple[CompactTree, float]:
    store = await open_sql_store(f"sqlite:///{path}")
    at, tree, prev = datetime(2026, 12, 1, tzinfo=UTC), CompactTree(), genesis(ORIGIN)
    began = time.perf_counter()
    for first in range(0, n, BATCH):
        entries: list[LogEntry] = []
        nodes: list[TreeNode] = []
        for i in range(first, min(n, first + BATCH)):
            made = decision(i, at)
            entry = made.entry(origin=ORIGIN, index=i, prev=prev)
            prev = leaf_hash(entry)
            nodes += tree.append_nodes(prev, min_level=TILE_LEVEL)
            entries.append(LogEntry(record=made, log=ORIGIN, index=i, entry=entry, chain=prev))
        await store.append_audit_entries(entries, nodes)
    await store.close()
    return tree, time.perf_counter() - began


async def measure(path: Path, tree: CompactTree, n: int) -> list[float]:
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes_raw()
    store = await open_sql_store(f"sqlite:///{path}")
    body = TreeHead(origin=ORIGIN, size=n, root=tree.root()).body()
    note = sign_note(body, name=KEY_NAME, public_key=public, sign=private.sign)
    await store.add_audit_checkpoint(
        SignedCheckpoint(
            log=ORIGIN, size=n, root=tree.root(), note=note, signed_at=datetime.now(UTC)
        )
    )
    key = verifier_key(KEY_NAME, public)
    timings = []
    for index in random.Random(7).sample(range(n), PROOFS):
        began = time.perf_counter()
        bundle = await prove(store, f"rec_{index:08d}", verifier_key=key)
        timings.append(time.perf_counter() - began)
        assert bundle["index"] == index
    await store.close()
    return timings


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()},"
        f" {platform.system()} {platform.release()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tether.db"
        tree, built = asyncio.run(build(path, n))
        timings = asyncio.run(measure(path, tree, n))
    cuts = statistics.quantiles(timings, n=100)
    print(
        f"audit prove, one record of a {n:,}-record log ({PROOFS} records; built in {built:.0f} s)"
    )
    print(
        f"  prove p50 / p99 / max               {cuts[49] * 1e3:7.1f} / {cuts[98] * 1e3:.1f} / "
        f"{max(timings) * 1e3:.1f} ms   (aim <= 50 ms, issue 4)"
    )
    for label, cut in (("p50", cuts[49]), ("p99", cuts[98])):
        _report.row(area="audit", path=f"prove one record of {n:,}: {label}", figure=cut * 1e3,
                    unit="ms", better="lower", aim=_report.at_most(50),
                    note=None if label == "p50" else "the proof checked as a third party "
                    "would, signature included; embedded SQLite store.")  # fmt: skip


if __name__ == "__main__":
    main()

"""Durable append to the audit log, with group commit, against raw SQLite in the same run.

Tether: ``AuditLog.append`` from ``IN_FLIGHT`` concurrent callers on the embedded SQLite store
(WAL, ``synchronous=FULL``): each record becomes an entry (canonical JSON, leaf hash, chain
head, subtree hashes), batches share one commit, every caller returns once its record is
durable, and a checkpoint is signed every 1,000 records. It runs as ``tether serve`` does:
on uvloop, the commits in the audit writer process, two batches in its hands at once.
Reported: records per second; each group commit's latency (batch handed to the store →
durable) and each caller's wait (append → durable, queueing included), p50 and p99.

Floor: the same rows (the same columns and bytes: sequence number, id, type, correlation id,
log, index, entry, chain head) inserted into the same table (Tether's schema, made by its
migrations, with its indexes) with ``sqlite3`` ``executemany`` in transactions of the same
size as Tether's batches, WAL, ``synchronous=FULL``: the raw row rate of a durable SQLite
append. Rounds alternate; this VM's disk makes single rounds vary by up to 2x, hence seven.
The issue's aims (issue 4): Tether >= 0.5x the floor, commit latency <= 10 ms.

Run: ``make bench`` or ``.venv/bin/python bench/bench_audit_append.py [N]`` (N = 20,000).
"""

from __future__ import annotations

import asyncio
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import uvloop
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import _report
from _audit_records import decision
from tether._internal.clock import SystemClock
from tether.audit.chain import genesis
from tether.audit.log import AuditLog
from tether.audit.merkle import leaf_hash
from tether.audit.stored import LogEntry
from tether.audit.tiles import TreeNode
from tether.crypto.keyring import AuditSigner
from tether.store.sql import open_sql_store

ORIGIN = "bench.example/audit/r1"
IN_FLIGHT = 256
#: A lighter load, for the commit latency one caller sees.
LIGHT = 16
ROUNDS = 7
#: Every floor commit's duration (seconds), for the disk's own latency.
FLOOR_COMMITS: list[float] = []


async def tether(
    directory: Path, n: int, callers: int = IN_FLIGHT
) -> tuple[float, list[float], list[float]]:
    """Records per second, each caller's wait (append → durable) and each group commit's
    (batch handed to the store → durable), in seconds."""
    store = await open_sql_store(f"sqlite:///{directory / 'tether.db'}")
    signer = AuditSigner(Ed25519PrivateKey.generate(), kid="bench")
    # As the server runs it: appends committed by the audit writer process, two batches in
    # its hands at once.
    depth = 2 if await store.start_audit_writer() else 1
    log = await AuditLog(
        store=store, origin=ORIGIN, key_name="bench.example/audit", signer=signer,
        clock=SystemClock(), depth=depth,
    ).start()  # fmt: skip
    latencies: list[float] = []
    commits: list[float] = []
    write = store.append_audit_entries

    async def timed(entries: Sequence[LogEntry], nodes: Sequence[TreeNode]) -> list[int]:
        began = time.perf_counter()
        numbers = await write(entries, nodes)
        commits.append(time.perf_counter() - began)
        return numbers

    store.append_audit_entries = timed  # type: ignore[method-assign, assignment]
    # Made before the clock starts, as the floor's rows are: the callers' work, not the log's.
    queue = iter([decision(i, datetime.now(UTC)) for i in range(n)])

    async def caller() -> None:
        for made in queue:
            began = time.perf_counter()
            await log.append(made)
            latencies.append(time.perf_counter() - began)

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    elapsed = time.perf_counter() - start
    await log.close()
    await store.close()
    return n / elapsed, latencies, commits


async def _schema(path: Path) -> None:
    """Tether's own schema (its migrations) in ``path``: the floor writes the same table."""
    store = await open_sql_store(f"sqlite:///{path}")
    await store.close()


def floor(directory: Path, n: int, batch: int) -> float:
    path = directory / "floor.db"
    asyncio.run(_schema(path))
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    prev, rows = genesis(ORIGIN), []
    for i in range(n):
        r = decision(i, datetime.now(UTC))
        entry = r.entry(origin=ORIGIN, index=i, prev=prev)
        prev = leaf_hash(entry)
        rows.append((i + 1, r.id, r.type, r.correlation_id, ORIGIN, i, entry, prev))
    insert = (
        "INSERT INTO audit_records (sequence, id, type, correlation_id, log, log_index, entry,"
        " chain) VALUES (?,?,?,?,?,?,?,?)"
    )
    commits: list[float] = []
    start = time.perf_counter()
    for first in range(0, n, batch):
        began = time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany(insert, rows[first : first + batch])
        conn.execute("COMMIT")
        commits.append(time.perf_counter() - began)
    elapsed = time.perf_counter() - start
    conn.close()
    FLOOR_COMMITS.extend(commits)
    return n / elapsed


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()},"
        f" {platform.system()} {platform.release()}, SQLite {sqlite3.sqlite_version}"
    )
    ours, bare = [], []
    waits: dict[str, list[float]] = {"p50": [], "p99": [], "c50": [], "c99": []}
    light: dict[str, list[float]] = {"p50": [], "p99": [], "c50": [], "c99": []}
    for _ in range(ROUNDS):
        with tempfile.TemporaryDirectory() as tmp:
            rate, latencies, commits = uvloop.run(tether(Path(tmp), n))
            bare.append(floor(Path(tmp), n, batch=IN_FLIGHT))
        ours.append(rate)
        _percentiles(waits, latencies, commits)
        with tempfile.TemporaryDirectory() as tmp:
            _, latencies, commits = uvloop.run(tether(Path(tmp), n // 4, callers=LIGHT))
        _percentiles(light, latencies, commits)
    ratios = sorted(o / b for o, b in zip(ours, bare, strict=True))
    print(f"audit durable append, {n:,} records, {IN_FLIGHT} callers, {ROUNDS} rounds")
    print(f"  floor (sqlite3 executemany, {IN_FLIGHT}/commit)  {statistics.median(bare):10,.0f} /s")
    print(f"  tether AuditLog.append              {statistics.median(ours):10,.0f} /s")
    print(
        f"  ratio tether/floor                  {statistics.median(ratios):10.2f}x   "
        f"(rounds {ratios[0]:.2f}-{ratios[-1]:.2f}; aim >= 0.5x, issue 4)"
    )
    cuts = statistics.quantiles(FLOOR_COMMITS, n=100)
    print(
        f"  floor's own commits of {IN_FLIGHT}:  {cuts[49] * 1e3:5.1f} / {cuts[98] * 1e3:5.1f} ms"
        "   (p50 / p99: this disk's fsync)"
    )
    for label, got in ((f"{IN_FLIGHT} callers", waits), (f"{LIGHT} callers ", light)):
        m = {k: statistics.median(v) for k, v in got.items()}
        print(
            f"  {label}: group commit {m['c50']:5.1f} / {m['c99']:5.1f} ms, caller's wait "
            f"{m['p50']:5.1f} / {m['p99']:5.1f} ms   (p50 / p99; aim: commit <= 10 ms)"
        )
    record(statistics.median(ours), statistics.median(bare), waits, light)


def record(
    ours: float, bare: float, waits: dict[str, list[float]], light: dict[str, list[float]]
) -> None:
    """The figures, for ``bench/report.py``."""
    _report.row(area="audit", path=f"durable append, {IN_FLIGHT} callers", figure=ours,
                unit="records/s", better="higher", floor=bare,
                floor_name=f"sqlite3 executemany, {IN_FLIGHT} per commit",
                aim=_report.at_least(0.5, of="floor"))  # fmt: skip
    _report.row(area="audit", path=f"group commit p99, {LIGHT} callers",
                figure=statistics.median(light["c99"]), unit="ms", better="lower",
                aim=_report.at_most(10))  # fmt: skip
    _report.row(area="audit", path=f"group commit p50, {IN_FLIGHT} callers",
                figure=statistics.median(waits["c50"]), unit="ms", better="lower",
                aim=_report.at_most(10),
                note="saturated: the p99 is the disk's own fsync (see the output).")  # fmt: skip


def _percentiles(into: dict[str, list[float]], waits: list[float], commits: list[float]) -> None:
    """p50 and p99 of a round's waits and commits, in ms, added to ``into``."""
    for key, values in (("p", waits), ("c", commits)):
        cuts = statistics.quantiles(values, n=100)
        into[f"{key}50"].append(cuts[49] * 1e3)
        into[f"{key}99"].append(cuts[98] * 1e3)


if __name__ == "__main__":
    main()

"""Verifying the audit log: records per second of :func:`tether.audit.chain.verify_log`
against the floor of a bare SHA-256 chain over the same bytes, in the same run.

The log: N decision records as stored entries (canonical JSON, about 650 bytes each), their
chain heads and a signed root every 1,000 records. Tether's check hashes each entry (its leaf
hash, which is also its chain head), compares its stored chain head, extends the Merkle tree
and compares the signed roots; the bytes an entry starts with (its place, its log and the
hash of the entry before it) are read for the entries no matched root covers — the tail
past the last checkpoint, or the whole log if a root failed. The floor only chains
``sha256(prev || entry)``. Rounds alternate. The issue's aim (issue 4): full verification
>= 0.5x the raw sha256-chain rate. The growth curve: the time to verify the first N/100, N/10
and N entries (the median of ``ROUNDS`` alternating rounds each), Tether and the floor.

Run: ``make bench`` or ``.venv/bin/python bench/bench_audit_verify.py [N]`` (N = 100,000).
"""

from __future__ import annotations

import hashlib
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime

import _report
from _audit_records import decision
from tether.audit.chain import LogVerifier, genesis, verify_log
from tether.audit.merkle import CompactTree, leaf_hash

ORIGIN = "tether.example/audit/r1"
ROUNDS = 5
CHECKPOINT_EVERY = 1_000


def entries(n: int) -> list[bytes]:
    at = datetime(2026, 12, 1, tzinfo=UTC)
    prev, log = genesis(ORIGIN), []
    for i in range(n):
        log.append(decision(i, at).entry(origin=ORIGIN, index=i, prev=prev))
        prev = leaf_hash(log[-1])
    return log


def references(log: list[bytes]) -> tuple[list[bytes], dict[int, bytes]]:
    heads, tree, signed = [], CompactTree(), {}
    for entry in log:
        leaf = leaf_hash(entry)
        heads.append(leaf)  # an entry's chain head is its leaf hash
        tree.append(leaf)
        if tree.size % CHECKPOINT_EVERY == 0:
            signed[tree.size] = tree.root()
    return heads, signed


def tether(log: list[bytes], heads: list[bytes], signed: dict[int, bytes]) -> float:
    start = time.perf_counter()
    verify_log(log, origin=ORIGIN, chain_heads=heads, checkpoints=signed)
    return len(log) / (time.perf_counter() - start)


def tether_strict(log: list[bytes], heads: list[bytes], signed: dict[int, bytes]) -> float:
    start = time.perf_counter()
    verifier = LogVerifier(origin=ORIGIN, checkpoints=signed, strict=True)
    verifier.feed(log, heads)
    verifier.finish()
    return len(log) / (time.perf_counter() - start)


def floor(log: list[bytes]) -> float:
    start = time.perf_counter()
    chain = b"\x00" * 32
    for entry in log:
        chain = hashlib.sha256(chain + entry).digest()
    return len(log) / (time.perf_counter() - start)


def growth(
    log: list[bytes], heads: list[bytes], signed: dict[int, bytes]
) -> dict[str, list[tuple[float, float]]]:
    """Milliseconds to verify the first N/100, N/10 and N entries, Tether and the floor."""
    out: dict[str, list[tuple[float, float]]] = {"tether": [], "floor": []}
    for size in sorted({max(1, len(log) // 100), max(1, len(log) // 10), len(log)}):
        part, marks = log[:size], {k: v for k, v in signed.items() if k <= size}
        ours, bare = [], []
        for _ in range(ROUNDS):
            bare.append(size / floor(part) * 1e3)
            ours.append(size / tether(part, heads[:size], marks) * 1e3)
        out["tether"].append((size, statistics.median(ours)))
        out["floor"].append((size, statistics.median(bare)))
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()},"
        f" {platform.system()} {platform.release()}"
    )
    log = entries(n)
    heads, signed = references(log)
    ours, bare = [], []
    for _ in range(ROUNDS):
        bare.append(floor(log))
        ours.append(tether(log, heads, signed))
    ratios = sorted(o / b for o, b in zip(ours, bare, strict=True))
    strict = tether_strict(log, heads, signed)
    size = sum(map(len, log)) / n
    print(f"audit log verification, {n:,} entries of {size:.0f} bytes, {ROUNDS} alternating rounds")
    print(f"  floor (sha256 chain)                {statistics.median(bare):10,.0f} /s")
    print(f"  tether verify_log                   {statistics.median(ours):10,.0f} /s")
    print(
        f"  ratio tether/floor                  {statistics.median(ratios):10.2f}x   "
        f"(rounds {ratios[0]:.2f}-{ratios[-1]:.2f}; aim >= 0.5x, issue 4)"
    )
    print(
        f"  tether strict (each entry parsed)   {strict:10,.0f} /s   "
        f"({strict / statistics.median(bare):.2f}x; what the server runs before it signs a tail"
        " and for tether audit verify)"
    )
    curves = growth(log, heads, signed)
    print("time to verify against log size (ms, medians)")
    for (size, ms), (_, floor_ms) in zip(curves["tether"], curves["floor"], strict=True):
        print(f"  {size:>10,.0f} entries   tether {ms:9.1f} ms   floor {floor_ms:9.1f} ms")
    record(statistics.median(ours), statistics.median(bare), strict, curves)


def record(
    ours: float, bare: float, strict: float, curves: dict[str, list[tuple[float, float]]]
) -> None:
    """The figures, for ``bench/report.py``."""
    floor_name = "hashlib sha256 chain"
    _report.row(area="audit", path="full verification (verify_log)", figure=ours,
                unit="records/s", better="higher", floor=bare, floor_name=floor_name,
                aim=_report.at_least(0.5, of="floor"))  # fmt: skip
    _report.row(area="audit", path="strict verification (each entry parsed)", figure=strict,
                unit="records/s", better="higher", floor=bare, floor_name=floor_name,
                note="what the server runs before signing a tail; tether audit verify")  # fmt: skip
    for series, name in (("tether", "Tether verify_log"), ("floor", "sha256 chain (floor)")):
        _report.curve("Audit verification against log size", x_label="entries",
                      y_label="ms to verify", points=curves[series], series=name)  # fmt: skip


if __name__ == "__main__":
    main()

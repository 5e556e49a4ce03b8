"""Waiting for SQLite's write lock: Tether's ``begin_immediate`` against SQLite's busy handler.

Two writers share one database file (WAL, ``synchronous=FULL``), as the store's worker
thread, the audit writer process and the monitor do: a *rival* thread commits a small row
back to back (0.3 ms apart), and the *measured* writer commits one every 0.7 ms, timing how
long its ``BEGIN IMMEDIATE`` waited for the lock. The floor is SQLite's own busy handler (a
busy timeout of 10 s: it sleeps 1, 2, 5, 10, 15 ms… between tries, whenever the lock frees);
Tether tries the lock again after 0.1, 0.2, 0.5, then every 1 ms
(``tether.store._sqlite_audit.begin_immediate``). The rival waits with SQLite's handler in
both. Rounds alternate, 2 s each; reported: the wait's p50, p90 and p99 and the measured
writer's commits per second, over all rounds.

Run: ``make bench`` or ``.venv/bin/python bench/bench_sqlite_write_lock.py [ROUNDS]`` (4).
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import _report
from tether.store._sqlite_audit import begin_immediate

SECONDS = 2.0
#: The rival's pause between commits, and the measured writer's (seconds).
RIVAL_PAUSE = 0.0003
PAUSE = 0.0007
ROW = "INSERT INTO t VALUES (randomblob(200))"


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=10000"):
        conn.execute(f"PRAGMA {pragma}")
    return conn


def _rival(path: Path, stop: threading.Event) -> None:
    conn = _connect(path)
    try:
        while not stop.is_set():
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(ROW)
            conn.execute("COMMIT")
            time.sleep(RIVAL_PAUSE)
    finally:
        conn.close()


def _round(path: Path, begin: Callable[[sqlite3.Connection], None]) -> tuple[list[float], int]:
    """The measured writer's waits (ms) and commits, for one round beside the rival."""
    stop = threading.Event()
    rival = threading.Thread(target=_rival, args=(path, stop))
    rival.start()
    conn = _connect(path)
    waits: list[float] = []
    try:
        end = time.monotonic() + SECONDS
        while time.monotonic() < end:
            began = time.perf_counter()
            begin(conn)
            waits.append((time.perf_counter() - began) * 1e3)
            conn.execute(ROW)
            conn.execute("COMMIT")
            time.sleep(PAUSE)
    finally:
        stop.set()
        rival.join()
        conn.close()
    return waits, len(waits)


def _sqlite_handler(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    paths: dict[str, Callable[[sqlite3.Connection], None]] = {
        "SQLite's busy handler": _sqlite_handler,
        "Tether's begin_immediate": begin_immediate,
    }
    waits: dict[str, list[float]] = {name: [] for name in paths}
    commits: dict[str, int] = dict.fromkeys(paths, 0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lock.db"
        with _connect(path) as setup:
            setup.execute("CREATE TABLE t (x BLOB)")
        for _ in range(rounds):
            for name, begin in paths.items():
                took, done = _round(path, begin)
                waits[name] += took
                commits[name] += done
    print(f"a writer beside a rival committing back to back, {rounds} alternating rounds of "
          f"{SECONDS:.0f} s (WAL, synchronous=FULL)")  # fmt: skip
    print(f"  {'':26} {'wait p50':>9} {'p90':>8} {'p99':>8} {'commits/s':>10}")
    figures = {}
    for name in paths:
        p50, p90, p99 = (_pct(waits[name], q) for q in (0.5, 0.9, 0.99))
        rate = commits[name] / (rounds * SECONDS)
        figures[name] = (p99, rate)
        print(f"  {name:26} {p50:8.3f}  {p90:7.3f}  {p99:7.3f}  {rate:9.0f}   (ms)")
    ours, floor = figures["Tether's begin_immediate"], figures["SQLite's busy handler"]
    _report.row(
        area="audit",
        path="a write waiting for another writer's lock: p99 wait",
        figure=ours[0], unit="ms", better="lower",
        floor=floor[0], floor_name="SQLite's busy handler",
    )  # fmt: skip
    _report.row(
        area="audit",
        path="a writer beside a rival: commits",
        figure=ours[1], unit="/s", better="higher",
        floor=floor[1], floor_name="SQLite's busy handler",
    )  # fmt: skip


if __name__ == "__main__":
    main()

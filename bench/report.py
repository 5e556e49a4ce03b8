"""Run every benchmark in ``bench/`` and write ``docs/benchmarks.md``.

Each ``bench/bench_*.py`` runs as a subprocess, one after the other (never two at once: they
would measure each other), with ``TETHER_BENCH_RESULTS`` naming a results file it appends its
figures to (``bench/_report.py``); its printed output is echoed as it comes and kept. Then the
page is written: the machine, the date and the commit, a table per area (figure, floor, peer,
their ratios, the aim and whether it is met), the growth curves, and each bench's output. A
bench that fails is reported as failed on the page, and this exits 1 after writing it. If the
page already has the markers ``_report.BEGIN`` and ``_report.END``, only what lies between
them is replaced: prose written around them by hand is kept.

Run: ``make bench``, or ``.venv/bin/python bench/report.py [--only NAME]... [--quick]
[--output PATH]``. ``--quick`` gives each bench a small N (or a short time) so that the whole
run is a smoke test of a few minutes; its figures are noise.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _report
from tether._internal.pgcluster import server_binaries

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUTPUT = REPO / "docs" / "benchmarks.md"
#: Arguments for ``--quick``: a small N, or a short time, per bench.
QUICK = {
    "bench_audit_append": ["1000"],
    "bench_audit_prove": ["20000"],
    "bench_audit_verify": ["5000"],
    "bench_authzen_http": ["2"],
    "bench_checkpoint": ["100"],
    "bench_ext_authz": ["2"],
    "bench_leases": ["1"],
    "bench_mcp_conformance": ["--quick"],
    "bench_mcp_gateway": ["30", "--quick"],
    "bench_replicas": ["5"],
    "bench_sdk_guard": ["50"],
    "bench_sql_guard": ["100"],
    "bench_sqlite_write_lock": ["1"],
    "bench_token_exchange": ["140"],
    "bench_token_issuance": ["100"],
}
#: Longest a bench may run before it is stopped and reported as failed.
TIMEOUT = 3600.0
QUICK_TIMEOUT = 300.0


def benches(only: list[str] | None) -> list[Path]:
    """The benches to run, in name order; ``only``: names with or without ``bench_``/``.py``."""
    found = sorted(HERE.glob("bench_*.py"))
    if not only:
        return found
    wanted = {n.removesuffix(".py").removeprefix("bench_") for n in only}
    chosen = [p for p in found if p.stem.removeprefix("bench_") in wanted]
    missing = wanted - {p.stem.removeprefix("bench_") for p in chosen}
    if missing:
        raise SystemExit(f"no such bench: {', '.join(sorted(missing))}")
    return chosen


def run_one(path: Path, results: Path, *, quick: bool) -> dict[str, Any]:
    """Run one bench, its output echoed and kept: its ``run`` record."""
    argv = [sys.executable, str(path), *(QUICK.get(path.stem, []) if quick else [])]
    env = {**os.environ, _report.ENV: str(results), "PYTHONUNBUFFERED": "1"}
    print(f"== {path.name} {' '.join(argv[2:])}".rstrip(), flush=True)
    began = time.monotonic()
    lines: list[str] = []
    with subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as proc:  # fmt: skip
        timer = threading.Timer(QUICK_TIMEOUT if quick else TIMEOUT, proc.kill)
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                print(line, end="", flush=True)
                lines.append(line)
            returncode = proc.wait()
        finally:
            timer.cancel()
    if returncode < 0:
        lines.append(f"\n(stopped: signal {-returncode}; the time limit is reached?)\n")
    return {"kind": "run", "bench": path.stem, "returncode": returncode,
            "seconds": time.monotonic() - began, "output": "".join(lines)}  # fmt: skip


def _version(argv: list[str]) -> str:
    """The first line a program prints for its version (to stdout or stderr), or why not."""
    if shutil.which(argv[0]) is None and not Path(argv[0]).exists():
        return "not installed"
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as failed:
        return f"unknown ({failed.__class__.__name__})"
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def _cpu() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    for line in info.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def _memory() -> str:
    try:
        meminfo = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return "unknown"
    for line in meminfo:
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


def _postgres() -> str:
    binaries = server_binaries()
    return _version([str(Path(binaries) / "postgres"), "--version"]) if binaries else "none"


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    return {
        "CPU": f"{_cpu()} ({platform.machine()})",
        "cores": str(os.cpu_count()),
        "memory": _memory(),
        "kernel": f"{platform.system()} {platform.release()}",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "SQLite": sqlite3.sqlite_version,
        "PostgreSQL": _postgres(),
        "nginx": _version(["nginx", "-v"]).removeprefix("nginx version: "),
        "wrk": _version(["wrk", "-v"]),
    }


def commit() -> str:
    """The checked-out commit, read from ``.git`` (no git process needed)."""
    git = REPO / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head.removeprefix("ref: ")
        loose = git / ref
        if loose.exists():
            return loose.read_text().strip()
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        pass
    return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only this bench (repeatable), e.g. checkpoint")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="small N: a smoke test")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"default: {OUTPUT}")
    args = parser.parse_args(argv)
    chosen = benches(args.only)
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results.jsonl"
        results.touch()
        runs = [run_one(path, results, quick=args.quick) for path in chosen]
        records = _report.load(results.read_text(encoding="utf-8").splitlines())
    described = machine()
    described["date"] = f"{started:%Y-%m-%d %H:%M} UTC"
    described["commit"] = commit()
    if args.quick:
        described["mode"] = "--quick (small N: a smoke test, the figures are noise)"
    page = _report.render([*records, *runs], machine=described)
    existing = args.output.read_text(encoding="utf-8") if args.output.exists() else None
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(_report.splice(existing, page), encoding="utf-8")
    failed = [r["bench"] for r in runs if r["returncode"] != 0]
    print(f"wrote {args.output}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

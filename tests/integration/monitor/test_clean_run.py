"""No false positives: a clean fleet's traffic raises no alert.

Runs ``bench/monitor_clean_run.py`` (a real ``tether serve`` on loopback, three agents through
the SDK: decisions at a constant rate, leases taken and revoked, tokens renewed) for a short
while; the full 10-minute run is ``make monitor-clean-run``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "bench" / "monitor_clean_run.py"


def test_a_clean_fleet_under_load_raises_no_alert() -> None:
    ran = subprocess.run(
        [sys.executable, str(SCRIPT), "--seconds", "20", "--rate", "20"],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr[-2000:]
    assert "alerts: 0" in ran.stdout
    assert "failures: 0" in ran.stdout

"""``tether demo``, as ``make demo`` runs it: the three use cases on real parts (a throwaway
PostgreSQL, ``tether serve --dev``, three MCP servers, agents on the SDK and the official MCP
client), exiting 0 only if every step behaved — and 1 when one did not: here, Alice refusing
the transfer in her inbox."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tether.cli.demo._people import Phone

DEMO_TIMEOUT = 300


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A temporary directory of the demo's own, so what it leaves behind shows: made like the
    system's (sticky, open to all), since as root the data source runs as ``postgres``, which
    must reach its cluster's directory in it (pytest's own are private to their owner)."""
    path = Path(tempfile.mkdtemp(prefix="tether-demo-test-"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _env(tmp_path: Path) -> dict[str, str]:
    # Its own temporary directory, and lines wide enough that no step is wrapped.
    env = {**os.environ, "TMPDIR": str(tmp_path), "COLUMNS": "240"}
    for inherited in ("TETHER_ADDR", "TETHER_TOKEN"):
        env.pop(inherited, None)
    return env


def test_the_demo_plays_the_three_use_cases_and_exits_zero(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tether", "demo", "--approve"],
        env=_env(tmp_path), cwd=tmp_path, capture_output=True, text=True,
        timeout=DEMO_TIMEOUT, check=False,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    for step in (
        # 1: just-in-time database credentials, gone after the task
        '"What are your business hours?" → "Monday to Friday, 9:00 to 17:00',
        "the support server read the FAQ as tether_lea_",
        "no token reached the server, only the role",
        "the lease expired at the end of its TTL, not before, and the reaper dropped tether_lea_",
        # 2: for alice, with her consent; never bob's account
        "alice signs in and consents on Tether's page: Allow assistant to act for you?",
        "token exchange (RFC 8693): sub alice, act spiffe://",
        "balance: 2,340.50 EUR",
        "asking for bob's account is refused: refused: this request acts for alice",
        # 3: a transfer only once alice approves it, and only the call she approved
        "transfer 100 EUR to bob: approval pending",
        'bank/transfer {"amount": 100, "to": "bob"}',
        "the same approval with 10,000 EUR to carol is refused",
        "the approved call runs: moved 100.00 EUR from alice to bob",
        "the bank's ledger holds exactly that one transfer",
        # what a security team looks at
        "Use case 3: the audit trace of bank-agent's tool calls",
        '"approver": "alice"',
        "the audit log verifies",
        "the approved transfer's record is proven offline",
        "$ tether posture",
        "demo passed",
    ):
        assert step in out, step
    assert "Traceback" not in out + done.stderr
    assert list(tmp_path.iterdir()) == [], "the demo left its data source or data behind"


@contextlib.contextmanager
def _running_demo(tmp_path: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """``tether demo ARGS`` running, its output readable line by line; killed if still
    running when the block ends."""
    demo = subprocess.Popen(
        [sys.executable, "-m", "tether", "demo", *args],
        env=_env(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        yield demo
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()


def _read_until(demo: subprocess.Popen[str], lines: list[str], pattern: str) -> re.Match[str]:
    """Read the demo's lines (kept in ``lines``) until one matches ``pattern``."""
    assert demo.stdout is not None
    deadline = time.monotonic() + DEMO_TIMEOUT
    while True:
        line = demo.stdout.readline()
        assert line, "the demo ended before saying it:\n" + "".join(lines)
        assert time.monotonic() < deadline, "".join(lines)
        lines.append(line)
        if found := re.search(pattern, line):
            return found


def test_a_transfer_alice_refuses_in_her_inbox_fails_the_demo(tmp_path: Path) -> None:
    lines: list[str] = []
    with _running_demo(tmp_path) as demo:
        asked = _read_until(demo, lines, r"open ((http://127\.0\.0\.1:\d+)/console/me/approvals), "
                                         r"sign in as alice \(password (\S+)\)")  # fmt: skip
        # The page it names is her inbox (signed out: the console sends her to sign in first).
        inbox = httpx.get(asked.group(1), timeout=10)
        assert inbox.status_code in (200, 303), inbox.status_code
        phone = Phone(asked.group(2), "alice", asked.group(3))
        try:
            [pending] = phone.inbox()
            phone.answer(pending["id"], "deny")
        finally:
            phone.close()
        rest, _ = demo.communicate(timeout=120)
    out = "".join(lines) + rest
    assert demo.returncode == 1, out
    assert "demo failed: alice did not approve the transfer (denied)" in out
    assert "the approved call runs" not in out
    assert "demo passed" not in out
    assert list(tmp_path.iterdir()) == [], "a failed demo left its data source or data behind"


def test_a_demo_stopped_by_sigterm_while_serving_leaves_nothing_running(tmp_path: Path) -> None:
    lines: list[str] = []
    with _running_demo(tmp_path, "--approve", "--serve") as demo:
        _read_until(demo, lines, "press Ctrl-C to stop")
        serving = re.search(r"export TETHER_ADDR=(\S+)", "".join(lines))
        assert serving is not None, "".join(lines)
        assert httpx.get(f"{serving.group(1)}/readyz", timeout=5).status_code == 200
        demo.send_signal(signal.SIGTERM)
        demo.communicate(timeout=60)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{serving.group(1)}/readyz", timeout=2)
    assert list(tmp_path.iterdir()) == [], "the stopped demo left its data source or data behind"

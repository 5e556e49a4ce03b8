"""Processes for the benchmarks: a free loopback port, a server process with its output in a
log file (stopped on the way out, whatever happened), and waiting until it answers."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

from tether._internal.pgcluster import free_port

__all__ = ["free_port", "running", "wait_listening", "wait_ready"]


def wait_ready(url: str, server: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if server.poll() is not None:
            raise SystemExit(f"{what} exited with status {server.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start within 30 s")
        time.sleep(0.2)


@contextmanager
def running(
    argv: list[str], *, env: Mapping[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A server process with its output in ``log``, stopped on the way out whatever happened;
    if something went wrong, the end of its log is shown."""
    with log.open("wb") as out:
        server = subprocess.Popen(argv, env=dict(env), stdout=out, stderr=subprocess.STDOUT)
        failed = True
        try:
            yield server
            failed = False
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            if failed:
                tail = log.read_text(errors="replace").splitlines()[-20:]
                print(f"-- the end of {argv[0]}'s output:", *tail, sep="\n", file=sys.stderr)


def wait_listening(url: str, server: subprocess.Popen[bytes], what: str) -> None:
    """Until something answers at ``url``, whatever the status (an MCP endpoint answers a
    plain GET with an error)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url, timeout=1)
        except httpx.TransportError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{what} did not start") from None
            time.sleep(0.1)
        else:
            return

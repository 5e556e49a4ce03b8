"""A real ``tether serve`` process on loopback, started per test."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

# Re-exported (mypy wants the alias): the tests that start servers import it from here.
from tether._internal.pgcluster import free_port as free_port  # noqa: PLC0414

ROOT = "tto_live-server-root-token-000000000"
TD = "acme.org"


@dataclass
class Live:
    addr: str
    data_dir: Path
    verify: Any

    def ops(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.addr, headers={"Authorization": f"Bearer {ROOT}"}, verify=self.verify
        )


def run_cli(
    addr: str, *args: str, token: str | None = ROOT, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``tether ARGS`` in a process of its own against ``addr``, as ``token`` (none: no
    ``TETHER_TOKEN`` at all), with ``stdin`` as its input, wide enough that no table cell is
    cut short."""
    env = {**os.environ, "TETHER_ADDR": addr, "COLUMNS": "240"}
    env.pop("TETHER_TOKEN", None)
    if token:
        env["TETHER_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "tether", *args],
        env=env, input=stdin, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def wait_ready(addr: str, deadline: float, proc: subprocess.Popen[Any] | None = None) -> None:
    """Until ``addr/readyz`` answers 200 (``proc``, if given, must not exit meanwhile)."""
    while True:
        assert proc is None or proc.poll() is None, "the server exited at start"
        try:
            if httpx.get(f"{addr}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "not ready in time"
        time.sleep(0.05)


def _start(tmp_path: Path, *extra: str) -> Iterator[Live]:
    port = free_port()
    data_dir = tmp_path / "data"
    tls = "--tls" in extra
    env = {**os.environ, "TETHER_ROOT_TOKEN": ROOT, "TETHER_TRUST_DOMAIN": TD}
    env.pop("TETHER_ISSUER", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tether",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    addr = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    ca_file = data_dir / "tls" / "ca.pem"
    verify: Any = True
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else "server exited"
            try:
                if tls:
                    # The server writes its CA bundle on start; trust only that.
                    verify = ssl.create_default_context(cafile=str(ca_file))
                if httpx.get(f"{addr}/readyz", verify=verify, timeout=1).status_code == 200:
                    break
            except (httpx.TransportError, OSError, ssl.SSLError):
                pass
            assert time.monotonic() < deadline, "server not ready in 30 s"
            time.sleep(0.1)
        yield Live(addr=addr, data_dir=data_dir, verify=verify)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        finally:
            if proc.stdout:
                proc.stdout.close()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    yield from _start(tmp_path)


@pytest.fixture
def live_tls(tmp_path: Path) -> Iterator[Live]:
    yield from _start(tmp_path, "--tls")


class ServerProcess:
    """``tether serve`` on one data directory and one port across restarts (the issuer, so
    agent tokens' audience, stays the same); its output goes to ``log`` (or nowhere)."""

    def __init__(
        self, data_dir: Path, *, log: Path | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.data_dir, self.log, self.env = data_dir, log, env or {}
        self.port = free_port()
        self.addr = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "TETHER_ROOT_TOKEN": ROOT, "TETHER_TRUST_DOMAIN": TD}
        env.pop("TETHER_ISSUER", None)  # unless this server's own environment names one
        env |= self.env
        command = [sys.executable, "-m", "tether", "serve", "--port", str(self.port)]
        command += ["--data-dir", str(self.data_dir)]
        if self.log is None:
            out = subprocess.DEVNULL
            self.proc = subprocess.Popen(command, env=env, stdout=out, stderr=out)
        else:
            with self.log.open("ab") as sink:
                self.proc = subprocess.Popen(command, env=env, stdout=sink, stderr=sink)
        wait_ready(self.addr, time.monotonic() + 60, self.proc)

    def output(self) -> str:
        """Everything the server printed so far (with a ``log``)."""
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log else ""

    def kill(self) -> None:
        """``kill -9``: no shutdown of any kind."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def ops(self) -> httpx.Client:
        """A client of the operator API, as root."""
        return httpx.Client(base_url=self.addr, headers={"Authorization": f"Bearer {ROOT}"})

"""The demo's stage: every process it plays with, started on loopback and stopped at the end.

* the data source — a throwaway PostgreSQL cluster (:mod:`tether._internal.pgcluster`, the
  Debian server binaries) holding the support database's FAQ, and a group role
  ``faq_readers`` with ``SELECT`` on it: the privileges a just-in-time role joins, never holds;
* Tether — ``tether serve --dev`` in a process of its own, on SQLite in a temporary data
  directory, told to answer "approval pending" at once (the banking agent comes back);
* the three example MCP servers of :mod:`tether.cli.demo.servers`, a process each.

Everything is torn down in reverse order, and the temporary directory with it: the
``Stage`` is a context manager. Processes write to log files in that directory, shown in part
when something fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
from psycopg import sql

from tether._internal.ids import new_secret
from tether._internal.pgcluster import ClusterUnavailable, ThrowawayCluster, free_port

__all__ = ["DATABASE", "FAQ", "FAQ_GROUP", "Stage", "StageFailed", "start_stage"]

#: The support database and what it holds.
DATABASE = "support"
FAQ_GROUP = "faq_readers"
FAQ = (
    ("What are your business hours?",
     "Monday to Friday, 9:00 to 17:00 (CET); closed on public holidays."),
    ("How do I reset my password?",
     "Use 'Forgot password' on the sign-in page; the link is valid for 30 minutes."),
    ("How long does a transfer take?",
     "Transfers between accounts of our bank arrive at once; others within one business day."),
)  # fmt: skip
SERVERS = ("support-kb", "accounts", "bank")
#: How long a process may take to answer at start.
READY_WITHIN = 30.0


class StageFailed(RuntimeError):
    """A part of the stage did not start; the message says which and why."""


@dataclass
class Stage:
    root: Path
    token: str  # the root operator token of the demo's Tether
    addr: str = ""
    issuer: str = ""
    jwks: str = ""
    cluster: ThrowawayCluster | None = None
    servers: dict[str, str] = field(default_factory=dict)  # name -> MCP endpoint
    ledger: Path = field(init=False)
    _procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ledger = self.root / "bank-ledger.jsonl"

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def tail(self, name: str, lines: int = 15) -> str:
        path = self.log(name)
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def admin_connect(self) -> psycopg.Connection[tuple[object, ...]]:
        """The data source's superuser, on the support database."""
        assert self.cluster is not None
        c = self.cluster
        return psycopg.connect(host=c.host, port=c.port, user=c.user, password=c.password,
                               dbname=DATABASE, autocommit=True, connect_timeout=5)  # fmt: skip

    def exited(self) -> list[str]:
        """The processes of the stage that are no longer running."""
        return [name for name, proc in self._procs if proc.poll() is not None]

    def stop(self) -> None:
        for _, proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
        for _, proc in reversed(self._procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.cluster is not None:
            self.cluster.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with self.log(name).open("wb") as out:
            proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603
        self._procs.append((name, proc))
        return proc

    def _wait(self, name: str, proc: subprocess.Popen[bytes], port: int, path: str) -> None:
        """Until ``path`` on ``port`` answers (any HTTP status: it is listening)."""
        deadline = time.monotonic() + READY_WITHIN
        while True:
            if proc.poll() is not None:
                raise StageFailed(f"{name} exited at start (code {proc.returncode}):\n"
                                  + self.tail(name))  # fmt: skip
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1)
                if path != "/readyz" or answer.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise StageFailed(f"{name} did not answer within {READY_WITHIN:.0f} s:\n"
                                  + self.tail(name))  # fmt: skip
            time.sleep(0.1)


@contextlib.contextmanager
def start_stage(port: int = 0) -> Iterator[Stage]:
    """The data source, Tether (on ``port``, 0: any free one) and the three MCP servers."""
    stage = Stage(root=Path(tempfile.mkdtemp(prefix="tether-demo-")), token="tto_" + new_secret(24))
    try:
        _data_source(stage)
        _tether(stage, port or free_port())
        for name in SERVERS:
            _server(stage, name)
        yield stage
    finally:
        stage.stop()


def _data_source(stage: Stage) -> None:
    try:
        stage.cluster = ThrowawayCluster.start(password=new_secret(18), durable=False)
    except (ClusterUnavailable, subprocess.CalledProcessError) as exc:
        raise StageFailed(f"the data source (PostgreSQL) did not start: {exc}") from exc
    c = stage.cluster
    with psycopg.connect(host=c.host, port=c.port, user=c.user, password=c.password,
                         dbname="postgres", autocommit=True) as conn:  # fmt: skip
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    with stage.admin_connect() as conn:
        conn.execute("CREATE TABLE faq (id serial PRIMARY KEY, question text, answer text)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO faq (question, answer) VALUES (%s, %s)", FAQ)
        group = sql.Identifier(FAQ_GROUP)
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(group))
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
            sql.Identifier(DATABASE), group))  # fmt: skip
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(group))
        conn.execute(sql.SQL("GRANT SELECT ON faq TO {}").format(group))


def _tether(stage: Stage, port: int) -> None:
    stage.addr = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TETHER_ROOT_TOKEN": stage.token, "TETHER_MCP_APPROVAL_WAIT": "0"}
    for inherited in ("TETHER_ISSUER", "TETHER_DATABASE_URL", "TETHER_KEK", "TETHER_ADDR",
                      "TETHER_TOKEN"):  # fmt: skip
        env.pop(inherited, None)
    argv = [sys.executable, "-m", "tether", "serve", "--dev", "--port", str(port),
            "--data-dir", str(stage.root / "tether-data")]  # fmt: skip
    stage._wait("tether", stage._spawn("tether", argv, env), port, "/readyz")
    meta = httpx.get(f"{stage.addr}/.well-known/oauth-authorization-server", timeout=5).json()
    stage.issuer, stage.jwks = meta["issuer"], meta["jwks_uri"]


def _server(stage: Stage, name: str) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "tether.cli.demo.servers", name, "--port", str(port)]
    if name != "support-kb":  # they verify Tether's tokens themselves
        argv += ["--issuer", stage.issuer, "--jwks", stage.jwks]
    if name == "bank":
        argv += ["--ledger", str(stage.ledger)]
    stage._wait(name, stage._spawn(name, argv, dict(os.environ)), port, "/mcp")
    stage.servers[name] = f"http://127.0.0.1:{port}/mcp"

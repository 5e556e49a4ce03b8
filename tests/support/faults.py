"""Faults injected into a real ``tether serve``, the load that runs through them, and the
checks that must hold afterwards.

* :class:`FaultyServer` — ``tether serve`` started under ``fiu-run -x`` (Debian's fiu-utils:
  libfiu's POSIX preload), so :meth:`FaultyServer.inject` can make ``fsync``/``fdatasync``
  (or any other libc call libfiu wraps) fail at run time, in the server and in every process
  it started (SQLite's audit writer process among them), with ``fiu-ctrl``.
* :class:`Load` — agents' decisions through ``/v1/ext_authz`` from a few concurrent loops,
  every answer kept with the phase of the fault it was sent and answered in.
* :func:`recorded_decisions` — after the server stopped: the decision ids its audit log holds
  and whether the log verifies (hash chain, Merkle tree, signed checkpoints).

``TETHER_FAULTS_FULL=1`` asks for the full versions (more cycles, longer faults).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.live.conftest import ROOT, TD, ServerProcess, wait_ready
from tests.support.tokens import client_credentials
from tether.audit import reader
from tether.audit.bundle import signature_verifies
from tether.audit.notes import TreeHead, open_note, parse_verifier_key
from tether.crypto.assertion import generate_agent_key
from tether.store.sql import open_sql_store

#: The full versions (``make faults``): more cycles and longer faults.
FULL = os.environ.get("TETHER_FAULTS_FULL", "") not in ("", "0")
#: The libc calls SQLite makes a commit durable with (Linux: ``fdatasync``; ``fsync`` too).
SYNC_POINTS = ("posix/io/sync/fsync", "posix/io/sync/fdatasync")
#: The libc call SQLite writes its pages (WAL frames) with: ``pwrite64``.
WRITE_POINTS = ("posix/io/rw/pwrite",)
ROUTES = Path(__file__).resolve().parents[2] / "examples" / "ext_authz" / "routes.toml"
#: What the load asks: ``GET /orders`` of the example route map's ``orders`` service.
ASKED = "/v1/ext_authz/orders/orders"
#: The agent may read the orders API (and, for lease tests, use the ``pg-main`` database).
POLICY = """
@id("bot-reads-orders")
permit (principal == Tether::Agent::"faq-bot", action == Tether::Action::"read",
        resource == Tether::Api::"orders");

@id("faq-bot-reads-the-faq-database")
permit (principal == Tether::Agent::"faq-bot", action == Tether::Action::"use_credential",
        resource == Tether::Database::"pg-main");
"""


def need_fiu() -> None:
    """Skip without fiu-utils, except on CI, where the fault suite must run."""
    if shutil.which("fiu-run") and shutil.which("fiu-ctrl"):
        return
    reason = "fiu-utils is not installed (apt-get install fiu-utils)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run the fault suite", pytrace=False)
    pytest.skip(reason)


class FaultyServer(ServerProcess):
    """:class:`ServerProcess` under ``fiu-run -x``, with the example ext_authz route map;
    libfiu's control pipes are ``<fifos>-<pid>.in``/``.out`` for each process."""

    def __init__(
        self, data_dir: Path, *, log: Path, env: dict[str, str] | None = None, fiu: bool = True
    ) -> None:
        super().__init__(
            data_dir, log=log, env={"TETHER_EXT_AUTHZ_ROUTES": str(ROUTES)} | (env or {})
        )
        self.fiu = fiu
        self.fifos = data_dir.parent / "fiu"

    def start(self) -> None:
        env = {**os.environ, "TETHER_ROOT_TOKEN": ROOT, "TETHER_TRUST_DOMAIN": TD}
        env.pop("TETHER_ISSUER", None)
        env |= self.env
        command = [sys.executable, "-m", "tether", "serve", "--port", str(self.port)]
        command += ["--data-dir", str(self.data_dir)]
        if self.fiu:
            command = ["fiu-run", "-x", "-f", str(self.fifos), *command]
        assert self.log is not None
        with self.log.open("ab") as sink:
            self.proc = subprocess.Popen(command, env=env, stdout=sink, stderr=sink)
        wait_ready(self.addr, time.monotonic() + 60, self.proc)

    def processes(self) -> list[int]:
        """The server's process id and those of every process it started (alive now)."""
        assert self.proc is not None
        found, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*/children"):
                try:
                    todo += [int(child) for child in task.read_text().split()]
                except OSError:  # the task ended meanwhile
                    continue
        return found

    def inject(self, *commands: str) -> list[int]:
        """Run libfiu control ``commands`` (``enable name=posix/io/sync/fsync``, ``disable
        name=…``) in every process of the server; the processes told."""
        told = [p for p in self.processes() if Path(f"{self.fifos}-{p}.in").exists()]
        assert told, "no process of the server is under libfiu's control"
        argv = ["fiu-ctrl", "-f", str(self.fifos)]
        for command in commands:
            argv += ["-c", command]
        done = subprocess.run(
            [*argv, *map(str, told)], capture_output=True, text=True, timeout=30, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "error" not in done.stdout, done.stdout
        return told


def register_bot(addr: str, *, instance: str = "pod-1") -> str:
    """``faq-bot`` registered with a key and :data:`POLICY` applied; its JWT-SVID."""
    with httpx.Client(base_url=addr, headers={"Authorization": f"Bearer {ROOT}"}) as ops:
        body = {"name": "faq-bot", "owners": ["ops"], "declarations": {"resources": ["pg-main"]}}
        created = ops.post("/v1/agents", json=body)
        assert created.status_code == 201, created.text
        key = generate_agent_key()
        assert ops.post("/v1/agents/faq-bot/keys", json={"jwk": key.public_jwk}).status_code == 201
        assert ops.post("/v1/policies", json={"text": POLICY}).status_code == 201
        form = client_credentials(key.private_pem, client_id=created.json()["spiffe_id"],
                                  audience=f"{addr}/oauth2/token", now=int(time.time()),
                                  instance_id=instance)  # fmt: skip
        issued = ops.post("/oauth2/token", data=form)
    assert issued.status_code == 200, issued.text
    token: str = issued.json()["access_token"]
    return token


@dataclass(frozen=True)
class Answer:
    """One decision as the client saw it: status, reason, the decision id the server gave,
    and the fault phase when it was sent and when it was answered."""

    status: int
    reason: str | None
    decision_id: str | None
    sent: str
    answered: str


@dataclass
class Load:
    """Decisions from ``workers`` loops against ``addr`` until :meth:`stop`; ``phase`` is
    what the test says is going on (``before``, ``fault``, ``after``…)."""

    addr: str
    token: str
    workers: int = 4
    phase: str = "before"
    answers: list[Answer] = field(default_factory=list)
    #: Requests that got no answer (connection refused or reset, timed out), by phase.
    unanswered: dict[str, int] = field(default_factory=dict)
    _going: bool = True

    def stop(self) -> None:
        self._going = False

    def acknowledged(self) -> set[str]:
        """The ids of the decisions answered as allowed."""
        return {a.decision_id for a in self.answers if a.status == 200 and a.decision_id}

    def during(self, phase: str) -> list[Answer]:
        """The answers to requests sent and answered within ``phase``."""
        return [a for a in self.answers if a.sent == a.answered == phase]

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.addr, timeout=15) as client:
            await asyncio.gather(*(self._loop(client, n) for n in range(self.workers)))

    async def _loop(self, client: httpx.AsyncClient, worker: int) -> None:
        n = 0
        while self._going:
            n += 1
            sent = self.phase
            headers = {"Authorization": f"Bearer {self.token}", "X-Request-Id": f"w{worker}-{n}"}
            try:
                answer = await client.get(ASKED, headers=headers)
            except httpx.TransportError:
                self.unanswered[sent] = self.unanswered.get(sent, 0) + 1
                await asyncio.sleep(0.05)
                continue
            reason = answer.headers.get("x-tether-reason")
            decision = answer.headers.get("x-tether-decision-id")
            if decision is None and answer.status_code != 200:
                decision = _json(answer).get("decision_id")
            self.answers.append(Answer(answer.status_code, reason, decision, sent, self.phase))


def _json(answer: httpx.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def verifier_key(addr: str) -> str:
    found = httpx.get(f"{addr}/v1/audit/key", headers={"Authorization": f"Bearer {ROOT}"})
    assert found.status_code == 200, found.text
    key: str = found.json()["verifier_key"]
    return key


@dataclass(frozen=True)
class AuditState:
    decision_ids: set[str]
    ok: bool
    report: dict[str, Any]


async def recorded_decisions(database_url: str, verifier: str) -> AuditState:
    """What the stopped server's audit log holds: the decision ids of its decision records,
    and whether every log verifies against the signed checkpoints."""
    name, public_key = parse_verifier_key(verifier)

    def open_checkpoint(note: bytes) -> TreeHead:
        opened = open_note(note, name=name, public_key=public_key, verify=signature_verifies)
        return TreeHead.parse(opened)

    store = await open_sql_store(database_url, migrate=False)
    try:
        ids: set[str] = set()
        after = 0
        while page := await store.list_audit(
            after_sequence=after, limit=1000, type_prefix="decision"
        ):
            ids |= {str(r.details.get("decision_id")) for _, r in page}
            after = page[-1][0]
        reports = [
            await reader.verify_stored(store, log, open_checkpoint=open_checkpoint)
            for log in await store.audit_logs()
        ]
    finally:
        await store.close()
    ok = bool(reports) and all(r.ok for r in reports)
    return AuditState(ids, ok, {"logs": [r.to_dict() for r in reports]})


def cli_verifies(addr: str) -> subprocess.CompletedProcess[str]:
    """``tether audit verify`` against the running server (exit 0: every log verifies)."""
    env = {**os.environ, "TETHER_ADDR": addr, "TETHER_TOKEN": ROOT}
    return subprocess.run(
        [sys.executable, "-m", "tether", "audit", "verify", "--output", "json"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

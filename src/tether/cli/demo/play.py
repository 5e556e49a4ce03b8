"""``tether demo``: the seeds' three use cases, end to end, on the embedded defaults.

It sets a stage of real parts on loopback (:mod:`._stage`: a throwaway PostgreSQL as the data
source, ``tether serve --dev`` on SQLite, three example MCP servers), plays the use cases with
real agents (:mod:`._cases`), then shows what a security team would look at: each use case's
audit trace (``tether audit trace``), the log verified (``tether audit verify``) and the
posture (``tether posture``) — the CLI itself, run as a user would. It returns 0 only if every
step behaved as expected; with ``serve`` everything keeps running until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Coroutine
from typing import Any

import httpx
from rich.text import Text

from ._cases import Play
from ._people import Browser, PeopleFailed, Phone
from ._show import DemoFailed, Show
from ._stage import DATABASE, Stage, StageFailed, start_stage

__all__ = ["run"]

#: The agents whose calls each use case's trace shows.
CASES = (("1", "faq-bot"), ("2", "assistant"), ("3", "bank-agent"))


class _Stopped(Exception):
    """SIGTERM or SIGHUP: the demo stops, and its stage with it."""


def _stop(signum: int, frame: object) -> None:
    raise _Stopped(signal.Signals(signum).name)


def run(*, approve: bool, serve: bool, port: int = 0, show: Show | None = None) -> int:
    """Play the demo; 0 if every step behaved, 1 otherwise (why is printed). Stopped by a
    signal (Ctrl-C, SIGTERM, SIGHUP), it tears its stage down all the same: no data source or
    server is left running."""
    show = show or Show()
    show.rule("Tether demo: the three use cases")
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop)
    try:
        with contextlib.ExitStack() as stack:
            with show.waiting("starting PostgreSQL, Tether and three MCP servers"):
                stage = stack.enter_context(start_stage(port))
            return _on_stage(stage, show, approve=approve, serve=serve)
    except StageFailed as exc:
        show.failed(exc)
        return 1
    except (KeyboardInterrupt, _Stopped) as exc:
        show.failed(f"stopped ({exc or 'Ctrl-C'}); everything it started is stopped too")
        return 130 if isinstance(exc, KeyboardInterrupt) else 143


def _on_stage(stage: Stage, show: Show, *, approve: bool, serve: bool) -> int:
    _describe(stage, show)
    play = Play(stage=stage, show=show, approve=approve)
    try:
        _play(play)
        _finale(stage, show)
    except (DemoFailed, PeopleFailed, httpx.TransportError) as exc:
        show.failed(exc)
        show.say(f"Tether's log, last lines:\n{stage.tail('tether')}")
        return 1
    finally:
        play.close()
    show.console.print("[bold green]demo passed[/]")
    if serve:
        _keep_serving(stage, show, play.password)
    return 0


def _describe(stage: Stage, show: Show) -> None:
    assert stage.cluster is not None
    show.step(f"data source: PostgreSQL {stage.cluster.host}:{stage.cluster.port}, database "
              f"{DATABASE} (the FAQ), a throwaway cluster")  # fmt: skip
    show.step(f"Tether: {stage.addr} (tether serve --dev, SQLite)")
    for name, url in stage.servers.items():
        show.step(f"MCP server {name}: {url}")


def _play(play: Play) -> None:
    play.set_the_scene()
    _run(play.faq())
    browser = Browser(play.stage.addr, "alice", play.password)
    phone = Phone(play.stage.addr, "alice", play.password)
    try:
        _run(play.personal(browser))
        _run(play.banking(browser, phone))
    finally:
        browser.close()
        phone.close()


def _run(case: Coroutine[Any, Any, None]) -> None:
    """Play one use case; a step that failed inside the MCP client's task group comes out as
    itself, not wrapped in an exception group."""
    try:
        asyncio.run(case)
    except BaseExceptionGroup as group:
        failed = group.subgroup((DemoFailed, PeopleFailed))
        while failed is not None and isinstance(failed.exceptions[0], BaseExceptionGroup):
            failed = failed.exceptions[0]
        if failed is None:
            raise
        raise failed.exceptions[0] from group


def _cli(stage: Stage, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TETHER_ADDR": stage.addr, "TETHER_TOKEN": stage.token}
    return subprocess.run([sys.executable, "-m", "tether", *args], env=env, text=True,  # noqa: S603
                          capture_output=True, timeout=60, check=False)  # fmt: skip


def _tether(stage: Stage, show: Show, *args: str, echo: bool = True) -> str:
    """``tether ARGS`` as a user runs it (its output printed unless ``echo`` is False);
    DemoFailed unless it exits 0."""
    show.console.print(Text(f"$ tether {' '.join(args)}", style="dim"))
    done = _cli(stage, *args)
    if done.returncode != 0:
        raise DemoFailed(f"tether {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    if echo:
        show.say(done.stdout.rstrip())
    return done.stdout


def _finale(stage: Stage, show: Show) -> None:
    admin = {"Authorization": f"Bearer {stage.token}"}
    with httpx.Client(base_url=stage.addr, timeout=15, headers=admin) as ops:
        listed = ops.get("/v1/audit", params={"type_prefix": "decision", "limit": 1000})
        key = ops.get("/v1/audit/key")
        if listed.status_code != 200 or key.status_code != 200:
            raise DemoFailed(f"the audit log: HTTP {listed.status_code} {listed.text[:200]}")
    records: list[dict[str, Any]] = listed.json()["records"]
    for number, agent in CASES:
        show.console.print()
        show.rule(f"Use case {number}: the audit trace of {agent}'s tool calls")
        calls = [r for r in records if r["details"].get("agent") == agent
                 and r["details"].get("action") == "call_tool"]  # fmt: skip
        if not calls:
            raise DemoFailed(f"no decision on record for {agent}'s tool calls")
        for correlation in dict.fromkeys(str(r["correlation_id"]) for r in calls):
            _tether(stage, show, "audit", "trace", correlation)
    show.console.print()
    show.rule("Proof of control")
    logs = json.loads(_tether(stage, show, "audit", "verify", "--output", "json"))
    if not logs or not all(log["ok"] for log in logs):
        raise DemoFailed("the audit log does not verify")
    show.ok("the audit log verifies: hash chain, Merkle tree, every checkpoint's signature")
    approved = [r for r in records if r["details"].get("approval_id")
                and r["details"].get("effect") == "allow"]  # fmt: skip
    if not approved:
        raise DemoFailed("the approved transfer's decision is not on record")
    _prove(stage, show, approved[-1]["id"], key.json()["verifier_key"])
    _tether(stage, show, "posture")


def _prove(stage: Stage, show: Show, record_id: str, verifier_key: str) -> None:
    """The approved transfer's record, proven offline: a bundle (the record, its inclusion
    proof, a signed checkpoint) checked with the log's public key alone."""
    bundle = stage.root / "transfer-proof.json"
    deadline = time.monotonic() + 10  # a checkpoint covering the record is signed within 1 s
    while _cli(stage, "audit", "prove", record_id, "--out", str(bundle)).returncode != 0:
        if time.monotonic() > deadline:
            raise DemoFailed(f"no signed checkpoint covered {record_id} within 10 s")
        time.sleep(0.5)
    show.console.print(Text(f"$ tether audit prove {record_id} --out {bundle}", style="dim"))
    checked = _tether(stage, show, "audit", "verify-bundle", str(bundle), "--key", verifier_key,
                      "--output", "json", echo=False)  # fmt: skip
    if json.loads(checked).get("proven") is not True:
        raise DemoFailed(f"the bundle of {record_id} is not proven: {checked[:300]}")
    show.ok("the approved transfer's record is proven offline, with the log's public key alone")


def _keep_serving(stage: Stage, show: Show, password: str) -> None:
    show.say(f"everything keeps running. The console: {stage.addr}/console "
             f"(operator token {stage.token}; alice's password {password})")  # fmt: skip
    show.say(f"export TETHER_ADDR={stage.addr} TETHER_TOKEN={stage.token}   # then tether …")
    show.say("press Ctrl-C to stop")
    try:
        while not (gone := stage.exited()):
            time.sleep(1)
        show.failed(f"{', '.join(gone)} stopped")
    except (KeyboardInterrupt, _Stopped):
        show.say("stopping")

"""Audit storage failing: ``fsync``/``fdatasync`` (or ``pwrite``, SQLite's page writes) fail
(libfiu, at run time) under concurrent decisions on the embedded SQLite store.

The rule (issue 13 §4; ARCHITECTURE §3 step 5, "no audit, no access"): a decision whose record
cannot be made durable is never allowed — ext_authz answers 503 ``audit_unavailable`` —; the
server neither exits nor hangs; once the disk is back, decisions are allowed again with no
restart; and afterwards ``tether audit verify`` passes and the log holds every decision the
client saw allowed.
"""

from __future__ import annotations

import asyncio
import collections
import time

import pytest

from tests.support.faults import (
    FULL,
    SYNC_POINTS,
    WRITE_POINTS,
    FaultyServer,
    Load,
    cli_verifies,
    recorded_decisions,
    register_bot,
    verifier_key,
)

from .conftest import sqlite_url

#: How long the disk fails (quick / full).
FAULT_SECONDS = 8.0 if FULL else 1.5
#: Decisions must be allowed again within this long of the disk coming back.
RECOVERY_DEADLINE = 30.0


async def _until(load: Load, phase: str, status: int) -> float:
    """Seconds until an answer ``status`` to a request sent in ``phase`` comes."""
    start = time.monotonic()
    while not any(a.status == status and a.sent == phase for a in load.answers):
        assert time.monotonic() - start < RECOVERY_DEADLINE, f"no {status} in {phase}"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def _through_fault(server: FaultyServer, load: Load, on: list[str], off: list[str]) -> float:
    """Load before, during and after the fault; the seconds decisions took to be allowed
    again once it ended."""
    running = asyncio.create_task(load.run())
    try:
        await _until(load, "before", 200)
        await asyncio.to_thread(server.inject, *on)
        load.phase = "fault"
        await asyncio.sleep(FAULT_SECONDS)
        load.phase = "ending"
        await asyncio.to_thread(server.inject, *off)
        load.phase = "after"
        recovered = await _until(load, "after", 200)
        await asyncio.sleep(0.5)
    finally:
        load.stop()
        await running
    return recovered


def _summary(load: Load) -> dict[str, collections.Counter[tuple[int, str | None]]]:
    seen: dict[str, collections.Counter[tuple[int, str | None]]] = {}
    for answer in load.answers:
        seen.setdefault(answer.sent, collections.Counter())[(answer.status, answer.reason)] += 1
    return seen


def _invariants_hold(server: FaultyServer, load: Load, verifier: str) -> None:
    verified = cli_verifies(server.addr)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    server.stop()
    state = asyncio.run(recorded_decisions(sqlite_url(server), verifier))
    assert state.ok, state.report
    missing = load.acknowledged() - state.decision_ids
    assert not missing, f"{len(missing)} allowed decisions have no record"


def test_fsync_failing_denies_every_unrecorded_decision_and_recovers_without_restart(
    faulty: FaultyServer,
) -> None:
    faulty.start()
    pid = faulty.proc.pid if faulty.proc else None
    load = Load(faulty.addr, register_bot(faulty.addr))
    verifier = verifier_key(faulty.addr)
    on = [f"enable name={point}" for point in SYNC_POINTS]
    off = [f"disable name={point}" for point in SYNC_POINTS]
    recovered = asyncio.run(_through_fault(faulty, load, on, off))
    print(f"fsync failing: {dict(_summary(load))}; allowed again {recovered:.2f} s after")
    during = load.during("fault")
    assert during, "decisions were answered while the disk failed (no hang)"
    assert {(a.status, a.reason) for a in during} == {(503, "audit_unavailable")}
    assert not load.unanswered, f"requests went unanswered: {load.unanswered}"
    assert faulty.proc is not None
    assert faulty.proc.poll() is None
    assert faulty.proc.pid == pid
    _invariants_hold(faulty, load, verifier)


#: ``pwrite`` failing too in the full version (``make faults``).
POINTS = {"fsync": SYNC_POINTS} | ({"pwrite": WRITE_POINTS} if FULL else {})


@pytest.mark.parametrize("points", list(POINTS.values()), ids=list(POINTS))
def test_disk_failing_at_random_never_allows_a_decision_it_did_not_record(
    faulty: FaultyServer, points: tuple[str, ...]
) -> None:
    faulty.start()
    load = Load(faulty.addr, register_bot(faulty.addr), workers=8)
    verifier = verifier_key(faulty.addr)
    on = [f"enable_random name={point},probability=0.5" for point in points]
    off = [f"disable name={point}" for point in points]
    recovered = asyncio.run(_through_fault(faulty, load, on, off))
    print(f"{points} failing at random: {dict(_summary(load))}; recovered in {recovered:.2f} s")
    during = collections.Counter((a.status, a.reason) for a in load.during("fault"))
    assert set(during) <= {(200, None), (503, "audit_unavailable")}, during
    assert during[(503, "audit_unavailable")], "some commits failed"
    assert not load.unanswered, f"requests went unanswered: {load.unanswered}"
    _invariants_hold(faulty, load, verifier)

"""The PostgreSQL store restarting under load (``pg_ctl stop -m fast``, then ``-m immediate``,
then ``start``), with one Tether replica on it that is never restarted.

The rule (issue 13 §4): while the database is down nothing is allowed — decisions answer 503
``audit_unavailable``, the management API 503 ``store_unavailable`` —, a policy set cannot be
applied, and the set in force stays the one applied before (documented in
:mod:`tether.policy.service`: "a failed refresh keeps what is in force"); once the database is
back, the same process serves again by itself, and the log verifies and holds every decision
the client saw allowed. A server started while its database is down never serves.
"""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PG_PASSWORD, PgCluster
from tests.integration.live.conftest import ROOT
from tests.support.faults import (
    FULL,
    FaultyServer,
    Load,
    recorded_decisions,
    register_bot,
    verifier_key,
)
from tether._internal.pgcluster import SUPERUSER, ClusterUnavailable, ThrowawayCluster

#: How long the database stays down each time (quick / full).
OUTAGE_SECONDS = 6.0 if FULL else 2.0
RECOVERY_DEADLINE = 30.0
MODES = ("fast", "immediate", "fast", "immediate") if FULL else ("fast", "immediate")
NEW_POLICY = """
@id("bot-writes-orders")
permit (principal == Tether::Agent::"faq-bot", action == Tether::Action::"write", resource);
"""


class Restartable:
    """A throwaway cluster of this module's own (the session's one is shared by other tests),
    durable — a commit is acknowledged once its WAL is written, as in production; the
    session's cluster runs with ``synchronous_commit=off``, which loses the last commits on
    an immediate stop by design —, stopped and started again with ``pg_ctl``."""

    def __init__(self, cluster: ThrowawayCluster) -> None:
        self.cluster = cluster
        self.databases = PgCluster(host=cluster.host, port=cluster.port, user=cluster.user,
                                   password=cluster.password)  # fmt: skip
        self.options = f"-c listen_addresses=127.0.0.1 -p {cluster.port} -k {cluster.directory}"

    def _pg_ctl(self, *args: str) -> None:
        data = f"{self.cluster.directory}/data"
        argv = [self.cluster.binary("pg_ctl"), "-D", data, "-l", f"{self.cluster.directory}/log"]
        argv += ["-w", *args]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", SUPERUSER, "--", *argv]
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, timeout=60)

    def stop(self, mode: str) -> None:
        self._pg_ctl("-m", mode, "stop")

    def start(self) -> None:
        self._pg_ctl("-o", self.options, "start")


@pytest.fixture(scope="module")
def restartable() -> Iterator[Restartable]:
    try:
        cluster = ThrowawayCluster.start(password=PG_PASSWORD, durable=True)
    except ClusterUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{exc}; CI must run the PostgreSQL tests", pytrace=False)
        pytest.skip(str(exc))
    with cluster:
        yield Restartable(cluster)


@pytest.fixture
def database_url(restartable: Restartable) -> str:
    databases = restartable.databases
    return databases.url(databases.create_database())


async def _outage(server: FaultyServer, db: Restartable, load: Load, mode: str) -> dict[str, Any]:
    """One stop (``mode``) and start under load; what was seen meanwhile."""
    load.phase = "before"
    await _until(load, "before")
    await asyncio.to_thread(db.stop, mode)
    load.phase = "down"
    await asyncio.sleep(OUTAGE_SECONDS)
    with server.ops() as ops:
        listed = await asyncio.to_thread(ops.get, "/v1/agents")
        applied = await asyncio.to_thread(ops.post, "/v1/policies", json={"text": NEW_POLICY})
    load.phase = "starting"
    await asyncio.to_thread(db.start)
    load.phase = "after"
    recovered = await _until(load, "after")
    return {"listed": listed, "applied": applied, "recovered": recovered}


async def _until(load: Load, phase: str) -> float:
    start = time.monotonic()
    while not any(a.status == 200 and a.sent == phase for a in load.answers):
        assert time.monotonic() - start < RECOVERY_DEADLINE, f"nothing allowed {phase}"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def _outages(server: FaultyServer, db: Restartable, load: Load) -> list[dict[str, Any]]:
    running = asyncio.create_task(load.run())
    try:
        return [await _outage(server, db, load, mode) for mode in MODES]
    finally:
        load.stop()
        await running


def _active_version(server: FaultyServer) -> Any:
    with server.ops() as ops:
        return ops.get("/v1/policies/active").json()


def test_database_restart_under_load_fails_closed_and_recovers_without_restarting_tether(
    tmp_path: Path, restartable: Restartable, database_url: str
) -> None:
    server = FaultyServer(tmp_path / "data", log=tmp_path / "server.log", fiu=False,
                          env={"TETHER_DATABASE_URL": database_url})  # fmt: skip
    try:
        server.start()
        pid = server.proc.pid if server.proc else None
        load = Load(server.addr, register_bot(server.addr))
        verifier = verifier_key(server.addr)
        in_force = _active_version(server)
        seen = asyncio.run(_outages(server, restartable, load))
        down = collections.Counter((a.status, a.reason) for a in load.during("down"))
        print(f"database down: {dict(down)}; unanswered {load.unanswered}; allowed again "
              f"{[round(s['recovered'], 2) for s in seen]} s after each start")  # fmt: skip
        assert down, "decisions were answered while the database was down"
        assert set(down) == {(503, "audit_unavailable")}, down
        for outage in seen:
            assert outage["listed"].status_code == 503, outage["listed"].text
            assert outage["listed"].json()["error"]["code"] == "store_unavailable"
            assert outage["applied"].status_code == 503, outage["applied"].text
        assert _active_version(server) == in_force, "the set in force is the one applied before"
        assert server.proc is not None
        assert server.proc.pid == pid
        assert server.proc.poll() is None
    finally:
        server.stop()
    state = asyncio.run(recorded_decisions(database_url, verifier))
    assert state.ok, state.report
    assert load.acknowledged() <= state.decision_ids, "an allowed decision's record was lost"


def test_server_started_while_its_database_is_down_never_serves(
    tmp_path: Path, restartable: Restartable, database_url: str
) -> None:
    restartable.stop("fast")
    server = FaultyServer(tmp_path / "data", log=tmp_path / "server.log", fiu=False,
                          env={"TETHER_DATABASE_URL": database_url})  # fmt: skip
    try:
        with pytest.raises(AssertionError, match="exited at start"):
            server.start()
        assert server.proc is not None
        assert server.proc.returncode != 0
        assert "unavailable" in server.output(), server.output()
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{server.addr}/readyz", headers={"Authorization": f"Bearer {ROOT}"})
    finally:
        server.stop()
        restartable.start()

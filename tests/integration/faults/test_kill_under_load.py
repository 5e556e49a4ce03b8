"""``kill -9`` at random points while decisions are made and leases issued and revoked.

The rule (issue 13 §4): after each restart the audit log verifies and holds every decision
the client saw allowed; and once the reaper and the orphan sweep have run, every managed
PostgreSQL role belongs to an active lease (a role created by an issuance the kill cut short,
handed to no one, is dropped), a lease whose revocation was answered or whose TTL passed is
ended with its role gone, and a lease nobody ended is active with its role there. A lease
whose revocation the kill cut short may stay ``active`` with its role already gone until its
expiry (access ended first: documented in :meth:`tether.credentials.leases.Leases.revoke`).
``test_audit_crash`` kills under decisions alone; ``test_lease_crash`` kills with the server
idle.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PgCluster
from tests.integration.api.leases import ManagedDb, managed_db
from tests.integration.live.conftest import ROOT
from tests.support.faults import FULL, FaultyServer, Load, recorded_decisions, register_bot
from tests.support.faults import verifier_key as audit_key

CYCLES = 10 if FULL else 3
#: Leases end within this long of the last restart: the orphan sweep waits the issuing grace
#: (10 s) before it drops a role with no lease; the reaper ends the expired ones.
RECONCILED_WITHIN = 40.0
SHORT_TTL, LONG_TTL = 2, 120


class Leases:
    """Leases issued (and every third revoked) from one loop until the server dies."""

    def __init__(self, addr: str, token: str) -> None:
        self.addr, self.token = addr, token
        self.issued: dict[str, str] = {}  # lease id -> credential (role name)
        self.short: set[str] = set()
        #: Revocations asked for, and those answered (the lease ended).
        self.asked: set[str] = set()
        self.revoked: set[str] = set()
        self._going = True

    def stop(self) -> None:
        self._going = False

    async def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with httpx.AsyncClient(base_url=self.addr, headers=headers, timeout=15) as client:
            n = 0
            while self._going:
                n += 1
                body = {"engine": "pg-main", "role": "readonly",
                        "ttl": body_ttl(n)}  # fmt: skip
                try:
                    answer = await client.post("/v1/leases", json=body)
                    if answer.status_code == 201:
                        await self._issued(client, answer.json()["lease"], n)
                except httpx.TransportError:
                    await asyncio.sleep(0.05)

    async def _issued(self, client: httpx.AsyncClient, lease: dict[str, Any], n: int) -> None:
        self.issued[lease["id"]] = lease["credential"]
        if body_ttl(n) == SHORT_TTL:
            self.short.add(lease["id"])
        if n % 3 == 0:
            self.asked.add(lease["id"])
            ended = await client.post(f"/v1/leases/{lease['id']}/revoke", json={})
            if ended.status_code == 200 and ended.json()["state"] == "revoked":
                self.revoked.add(lease["id"])


def body_ttl(n: int) -> int:
    return SHORT_TTL if n % 2 else LONG_TTL


async def _cycle(server: FaultyServer, token: str, loads: list[Load], leases: list[Leases]) -> None:
    """Decisions and leases until a ``kill -9`` at a random point."""
    load, issuing = Load(server.addr, token, workers=3), Leases(server.addr, token)
    loads.append(load)
    leases.append(issuing)
    running = [asyncio.create_task(load.run()), asyncio.create_task(issuing.run())]
    await asyncio.sleep(random.uniform(0.3, 1.2))
    await asyncio.to_thread(server.kill)
    load.stop()
    issuing.stop()
    await asyncio.gather(*running)


def _all_leases(addr: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    with httpx.Client(base_url=addr, headers={"Authorization": f"Bearer {ROOT}"}) as ops:
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 500} | ({"after": after} if after else {})
            page = ops.get("/v1/leases", params=params).json()["leases"]
            found |= {lease["id"]: lease for lease in page}
            if len(page) < 500:
                return found
            after = page[-1]["id"]


def _reconciled(addr: str, db: ManagedDb, seen: list[Leases]) -> str | None:
    """What is not reconciled yet (None: all of it)."""
    leases, roles = _all_leases(addr), db.roles()
    issued = {k: v for each in seen for k, v in each.issued.items()}
    if unknown := set(issued) - set(leases):
        return f"issued leases the server does not know: {sorted(unknown)}"
    active = {lease["credential"] for lease in leases.values() if lease["state"] == "active"}
    if orphans := roles - active:
        return f"{len(orphans)} managed roles belong to no active lease"
    ended = set().union(*(each.short | each.revoked for each in seen))
    if still := {i for i in ended if leases[i]["state"] not in ("expired", "revoked")}:
        return f"{len(still)} leases past their TTL or revoked are not ended"
    untouched = set(issued) - ended - set().union(*(each.asked for each in seen))
    if lost := {issued[i] for i in untouched} - roles:
        return f"{len(lost)} leases nobody ended lost their role"
    if {leases[i]["state"] for i in untouched} - {"active"}:
        return "a lease nobody ended is not active"
    return None


@pytest.fixture
def server(tmp_path: Path) -> Any:
    running = FaultyServer(tmp_path / "data", log=tmp_path / "server.log", fiu=False)
    try:
        yield running
    finally:
        running.stop()


def test_kill_9_at_random_points_keeps_acknowledged_records_and_reconciles_roles(
    server: FaultyServer, pg_cluster: PgCluster
) -> None:
    db = managed_db(pg_cluster)
    server.start()
    with server.ops() as ops:
        assert ops.put("/v1/engines/pg-main", json=db.engine_body()).status_code == 200
    token = register_bot(server.addr)
    verifier = audit_key(server.addr)
    loads: list[Load] = []
    leases: list[Leases] = []
    for cycle in range(CYCLES):
        if cycle:
            server.start()
        asyncio.run(_cycle(server, token, loads, leases))
    restarted = time.monotonic()
    server.start()
    issued = {k: v for each in leases for k, v in each.issued.items()}
    while problem := _reconciled(server.addr, db, leases):
        assert time.monotonic() - restarted < RECONCILED_WITHIN, problem
        time.sleep(0.5)
    print(f"kill -9 x{CYCLES}: reconciled {time.monotonic() - restarted:.1f} s after restart; "
          f"{len(issued)} leases, {sum(len(x.acknowledged()) for x in loads)} allowed")  # fmt: skip
    server.stop()
    state = asyncio.run(recorded_decisions(f"sqlite:///{server.data_dir / 'tether.db'}", verifier))
    acknowledged = set().union(*(load.acknowledged() for load in loads))
    assert len(acknowledged) >= CYCLES, "decisions were allowed in every cycle"
    assert issued, "leases were issued"
    assert state.ok, state.report
    assert acknowledged <= state.decision_ids, "an allowed decision's record was lost"

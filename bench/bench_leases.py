"""Just-in-time PostgreSQL credentials: issuance rate and revocation latency, against pgbench.

Tether's path, in process, as ``POST /v1/leases`` runs it: the checkpoint's ``use_credential``
decision (JWT-SVID verify, Cedar, durable audit record), the role created by the PostgreSQL
engine, then the lease stored ``active`` in the transaction that records ``lease.issued`` — on
the embedded SQLite store, with ``CONCURRENCY`` issuances in flight, on uvloop as ``tether
serve`` runs. The floor: pgbench running the identical ``CREATE ROLE … IN ROLE <group>``
statement against the same server, with as many clients as the engine has connections. Both
run in alternating rounds on a throwaway PostgreSQL 15 cluster with PostgreSQL's default
durability (``fsync=on``).

Two variants, as the issue asks: passwordless (the role authenticates by certificate; the cost is
the catalog write) and password (a SCRAM-SHA-256 verifier of 4,096 iterations, which PostgreSQL
checks on ``CREATE ROLE`` at about 9 ms of server CPU; pgbench sends one precomputed verifier,
Tether computes a new one per credential). Vault's published example (vault-benchmark, on a
laptop) issues 221 PostgreSQL credentials/s at 45 ms mean.

A second floor shows what the aim asks of this machine: **the same steps with the bare
libraries** (:class:`Floor`), in ``POOL`` threads with a psycopg connection each — ``cedarpy``
decides ``use_credential`` (policies and schema parsed once, the entities parsed per call, as
any checkpoint must), the decision record and ``lease.issued`` as canonical JSON in a sha256
chain with the lease as a row beside them, written with ``sqlite3`` (WAL,
``synchronous=FULL``), and the same ``CREATE ROLE`` (with a SCRAM verifier computed per
credential with ``hashlib`` in the password variant). It is more lenient than Tether: its
writes are committed ``CONCURRENCY`` issuances at a time and no step waits for a commit,
where Tether makes the decision record durable before the role is created and the lease
durable before answering. Its rate over pgbench's is the most any broker built of these
libraries could reach here, Tether and PostgreSQL sharing the 2 cores.

Revocation: leases revoked one at a time (``NOLOGIN``, the check for sessions, ``REASSIGN``/``DROP
OWNED``, ``DROP ROLE`` in one transaction and one round trip, the last sweep; the lease closed,
``lease.revoked`` and ``lease.ended`` recorded); no sessions are open, so session termination
is not in the figure. Aim: p50 <= 2 ms.

Run: ``make bench`` or ``.venv/bin/python bench/bench_leases.py [seconds per round]``.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import platform
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cedarpy
import orjson
import psycopg
import uvloop

import _report
from _floors import agent_request
from tether._internal.pgcluster import ThrowawayCluster
from tether.api.services import Services
from tether.checkpoint import agent_entity
from tether.config import Settings
from tether.credentials._postgres import at_once
from tether.credentials._scram import scram_verifier
from tether.credentials.models import LeaseMatch, RoleTemplate
from tether.crypto.assertion import generate_agent_key, sign_client_assertion
from tether.identity.access import Actor
from tether.identity.client_auth import ASSERTION_TYPE
from tether.identity.models import Declarations
from tether.policy._cedar import _entity_json, default_policies, schema_text
from tether.store.sql import open_sql_store

ISSUER = "http://127.0.0.1:8200"
PASSWORD = "bench-admin-password"
GROUP = "app_readonly"
CONCURRENCY = 8
POOL = 4
ROUNDS = 3
POLICY = """
@id("bench-uses-the-database")
permit (principal == Tether::Agent::"bench-bot", action == Tether::Action::"use_credential",
        resource == Tether::Database::"pg-bench");
"""


def _connect(cluster: ThrowawayCluster) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        host=cluster.host, port=cluster.port, user="postgres", password=PASSWORD, autocommit=True
    )


def pgbench(cluster: ThrowawayCluster, statement: str, seconds: float, tmp: Path) -> float:
    """pgbench's rate for ``statement`` (``:n`` is a random number) with ``POOL`` clients."""
    script = tmp / "create_role.sql"
    script.write_text(f"\\set n random(1, 1000000000000)\n{statement};\n")
    argv = [cluster.binary("pgbench"), "-h", cluster.host, "-p", str(cluster.port)]
    argv += ["-U", "postgres", "-n", "-M", "simple", "-c", str(POOL), "-j", "2"]
    argv += ["-T", str(max(1, round(seconds))), "-f", str(script), "postgres"]
    env = dict(os.environ, PGPASSWORD=PASSWORD)
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    found = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", done.stdout)
    if found is None:
        raise RuntimeError(f"pgbench said:\n{done.stdout}\n{done.stderr}")
    return float(found.group(1))


def revocation_floor(cluster: ThrowawayCluster, n: int = 200) -> list[float]:
    """The same revocation with bare psycopg, one role at a time (ms): the statement the
    engine sends for a role with no session, in its one round trip — ``NOLOGIN``, the check
    for sessions, ``REASSIGN``/``DROP OWNED`` and ``DROP ROLE`` in one transaction, then the
    last sweep."""
    sql = psycopg.sql
    out: list[float] = []
    with _connect(cluster) as conn:
        for i in range(n):
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
                    sql.Identifier(f"bench_rv_{i}"), sql.Identifier(GROUP)
                )
            )
        for i in range(n):
            statement = at_once(f"bench_rv_{i}", admin="postgres")
            began = time.perf_counter()
            conn.execute(statement)
            out.append((time.perf_counter() - began) * 1e3)
    return out


def drop_bench_roles(cluster: ThrowawayCluster) -> None:
    with _connect(cluster) as conn:
        names = conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'bench\\_%'")
        for (name,) in names.fetchall():
            conn.execute(psycopg.sql.SQL("DROP ROLE {}").format(psycopg.sql.Identifier(str(name))))


_FLOOR_LOG = "floor.example/audit/leases"
_FLOOR_DATABASE = {
    "uid": {"type": "Tether::Database", "id": "pg-bench"},
    "attrs": {"name": "pg-bench", "data_class": "internal"},
    "parents": [],
}
_FLOOR_INSERT = (
    "INSERT INTO audit_records (sequence, id, type, correlation_id, log, log_index, entry,"
    " chain) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


class Floor:
    """The same steps as an issuance with the bare libraries, in ``POOL`` threads, each with
    its own psycopg connection; the SQLite connection is shared under a lock, committed every
    ``CONCURRENCY`` issuances and never waited for (see the module docstring)."""

    def __init__(self, cluster: ThrowawayCluster, db: Path, agent_json: dict[str, Any]) -> None:
        self.cluster = cluster
        self.schema = cedarpy.Schema.from_str(schema_text())
        self.policies = cedarpy.PolicySet.from_str(default_policies() + POLICY)
        self.agent_json = agent_json
        self.lite = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        self.lite.execute("PRAGMA journal_mode=WAL")
        self.lite.execute("PRAGMA synchronous=FULL")
        self.lite.execute("CREATE TABLE IF NOT EXISTS floor_leases (id TEXT PRIMARY KEY, body)")
        self.lock = threading.Lock()
        self.chain, self.index, self.pending = hashlib.sha256(b"floor").digest(), 0, 0
        self.numbers = itertools.count()

    def _decide(self, role: str) -> dict[str, Any]:
        """``use_credential`` by cedarpy, as the checkpoint builds the request; the request."""
        entities = cedarpy.Entities.from_json_str(
            json.dumps([self.agent_json, _FLOOR_DATABASE]), schema=self.schema
        )
        arguments = json.dumps({"engine": "pg-bench", "role": role, "ttl": 600})
        request = agent_request(
            "bench-bot",
            "use_credential",
            ("Database", "pg-bench"),
            call_digest="sha256:" + hashlib.sha256(arguments.encode()).hexdigest(),
            arguments=arguments,
        )
        result = cedarpy.is_authorized(request, self.policies, entities, self.schema)
        if result.decision != cedarpy.Decision.Allow:
            raise RuntimeError(f"the floor's decision: {result.diagnostics.errors}")
        return request

    def _record(self, record: dict[str, Any]) -> None:
        """One row of Tether's audit table, chained (the lock held)."""
        entry = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
        self.chain = hashlib.sha256(b"\x00" + self.chain + entry).digest()
        self.index += 1
        row = (self.index, f"aud_{os.urandom(12).hex()}", record["type"], None, _FLOOR_LOG)
        self.lite.execute(_FLOOR_INSERT, (*row, self.index - 1, entry, self.chain))

    def _issue(self, conn: psycopg.Connection[tuple[object, ...]], role: str) -> None:
        request = self._decide(role)
        with self.lock:
            self._record({"type": "decision", "request": request, "effect": "allow"})
        name = f"bench_floor_{next(self.numbers)}"
        password = None
        clause = ""
        if role == "password":
            password = os.urandom(32).hex()
            clause = f"PASSWORD '{scram_verifier(password, iterations=4096)}' "
        conn.execute(f"CREATE ROLE {name} LOGIN {clause}VALID UNTIL '2099-01-01' IN ROLE {GROUP}")
        lease = {"id": name, "engine": "pg-bench", "role": role, "agent": "bench-bot",
                 "instance": "pod-1", "ttl": 600, "state": "active"}  # fmt: skip
        with self.lock:
            self.lite.execute("INSERT INTO floor_leases VALUES (?, ?)", (name, orjson.dumps(lease)))
            self._record({"type": "lease.issued", "lease": lease})
            self.pending += 1
            if self.pending >= CONCURRENCY:
                self.lite.execute("COMMIT")
                self.lite.execute("BEGIN IMMEDIATE")
                self.pending = 0

    def issue_for(self, role: str, seconds: float) -> float:
        """Issuances per second for ``seconds``."""
        stop = time.perf_counter() + seconds
        done = [0] * POOL
        failed: list[BaseException] = []

        def worker(slot: int) -> None:
            try:
                with _connect(self.cluster) as conn:
                    while time.perf_counter() < stop:
                        self._issue(conn, role)
                        done[slot] += 1
            except BaseException as exc:
                failed.append(exc)

        self.lite.execute("BEGIN IMMEDIATE")
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(POOL)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        took = time.perf_counter() - start
        self.lite.execute("COMMIT")
        if failed:
            raise failed[0]
        return sum(done) / took


class TetherPath:
    def __init__(
        self, services: Services, pem: bytes, spiffe_id: str, agent_json: dict[str, Any]
    ) -> None:
        self.services, self.pem, self.spiffe_id = services, pem, spiffe_id
        self.agent_json = agent_json

    @classmethod
    async def open(cls, data_dir: Path, cluster: ThrowawayCluster) -> TetherPath:
        settings = Settings(data_dir=data_dir, issuer=ISSUER, root_token="tto_" + "b" * 32)
        services = await Services.open(settings)
        root = Actor.system("bench")
        agent = await services.registry.register(
            actor=root,
            name="bench-bot",
            owners=["bench"],
            description="",
            declarations=Declarations(resources=("pg-bench",)),
        )
        pair = generate_agent_key()
        await services.registry.add_key("bench-bot", pair.public_jwk, actor=root)
        await services.policies.apply(POLICY, actor=root)
        settings_ = {
            "host": cluster.host,
            "port": cluster.port,
            "database": "postgres",
            "admin_user": "postgres",
            "pool_size": POOL,
        }
        roles = [
            RoleTemplate(name="certificate", group=GROUP, auth="none", max_ttl=3600),
            RoleTemplate(name="password", group=GROUP, auth="password", max_ttl=3600),
        ]
        await services.engines.configure(
            actor=root,
            name="pg-bench",
            kind="postgres",
            settings=settings_,
            roles=roles,
            secret=PASSWORD,
        )
        agent = await services.registry.get("bench-bot", actor=root)
        return cls(services, pair.private_pem, agent.spiffe_id, _entity_json(agent_entity(agent)))

    async def token(self) -> str:
        assertion = sign_client_assertion(
            self.pem,
            client_id=self.spiffe_id,
            audience=f"{ISSUER}/oauth2/token",
            now=int(time.time()),
            lifetime=300,
        )
        client = await self.services.client_auth.private_key_jwt(
            client_id=None, assertion_type=ASSERTION_TYPE, assertion=assertion, instance_id="pod-1"
        )
        issued = await self.services.svids.issue_jwt_svid(client, audience=())
        return issued.token

    async def issue_for(self, role: str, seconds: float) -> tuple[float, list[str], list[float]]:
        """Issuances per second with ``CONCURRENCY`` in flight for ``seconds``; the lease ids
        and each issuance's latency (ms)."""
        token = await self.token()
        ids: list[str] = []
        latencies: list[float] = []
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < stop:
                began = time.perf_counter()
                issued = await self.services.leases.issue(
                    token=token, engine="pg-bench", role=role, ttl=600
                )
                latencies.append((time.perf_counter() - began) * 1e3)
                ids.append(issued.lease.id)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return len(ids) / (time.perf_counter() - start), ids, latencies

    async def revoke_each(self, ids: list[str]) -> list[float]:
        """Revoke one lease at a time; each revocation's latency (ms)."""
        root = Actor.system("bench")
        out: list[float] = []
        for lease_id in ids:
            began = time.perf_counter()
            await self.services.leases.revoke(lease_id, actor=root)
            out.append((time.perf_counter() - began) * 1e3)
        return out

    async def revoke_all(self) -> None:
        await self.services.leases.revoke_all(
            LeaseMatch(agent="bench-bot"), actor=Actor.system("bench")
        )


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def variant(
    tether: TetherPath,
    floor: Floor,
    *,
    cluster: ThrowawayCluster,
    role: str,
    seconds: float,
    tmp: Path,
) -> dict[str, object]:
    verifier = scram_verifier("x" * 43, iterations=4096)
    clause = f"PASSWORD '{verifier}' " if role == "password" else ""
    statement = f"CREATE ROLE bench_:n LOGIN {clause}VALID UNTIL '2099-01-01' IN ROLE {GROUP}"
    floors, bare, ours, latencies, revocations, revocation_floors = [], [], [], [], [], []
    for _ in range(ROUNDS):
        floors.append(pgbench(cluster, statement, seconds, tmp))
        drop_bench_roles(cluster)
        bare.append(await asyncio.to_thread(floor.issue_for, role, seconds))
        drop_bench_roles(cluster)
        rate, ids, took = await tether.issue_for(role, seconds)
        ours.append(rate)
        latencies += took
        revocations += await tether.revoke_each(ids[:200])
        revocation_floors += revocation_floor(cluster)
        await tether.revoke_all()
    return {
        "floor": floors,
        "bare": bare,
        "tether": ours,
        "issue_ms": latencies,
        "revoke_ms": revocations,
        "revoke_floor_ms": revocation_floors,
    }


def _pgbench_version(cluster: ThrowawayCluster) -> str | None:
    done = subprocess.run([cluster.binary("pgbench"), "--version"], capture_output=True,
                          text=True, check=False)  # fmt: skip
    return done.stdout.strip().removeprefix("pgbench (PostgreSQL) ") or None


async def measure(seconds: float, tmp: Path) -> dict[str, dict[str, object]]:
    with ThrowawayCluster.start(password=PASSWORD, durable=True) as cluster:
        _report.peer("pgbench", _pgbench_version(cluster))
        with _connect(cluster) as conn:
            conn.execute(f"CREATE ROLE {GROUP} NOLOGIN")
        tether = await TetherPath.open(tmp / "tether", cluster)
        await (await open_sql_store(f"sqlite:///{tmp / 'floor.db'}")).close()
        floor = Floor(cluster, tmp / "floor.db", tether.agent_json)
        try:
            return {
                role: await variant(
                    tether, floor, cluster=cluster, role=role, seconds=seconds, tmp=tmp
                )
                for role in ("certificate", "password")
            }
        finally:
            await tether.services.close()


def report(results: dict[str, dict[str, object]]) -> None:
    for role, figures in results.items():
        floors: list[float] = figures["floor"]  # type: ignore[assignment]
        bare: list[float] = figures["bare"]  # type: ignore[assignment]
        ours: list[float] = figures["tether"]  # type: ignore[assignment]
        issue_ms: list[float] = figures["issue_ms"]  # type: ignore[assignment]
        revoke_ms: list[float] = figures["revoke_ms"]  # type: ignore[assignment]
        floor_ms: list[float] = figures["revoke_floor_ms"]  # type: ignore[assignment]
        ratios = sorted(t / f for t, f in zip(ours, floors, strict=True))
        reach = sorted(b / f for b, f in zip(bare, floors, strict=True))
        of_bare = sorted(t / b for t, b in zip(ours, bare, strict=True))
        kind = "passwordless (certificate)" if role == "certificate" else "SCRAM-4096 password"
        print(f"{kind}: {ROUNDS} alternating rounds, medians")
        print(f"  pgbench CREATE ROLE (floor)  {statistics.median(floors):8.0f} /s")
        print(
            f"  tether issuance end to end   {statistics.median(ours):8.0f} /s   "
            f"p50 {_pct(issue_ms, 0.5):.1f} ms  p99 {_pct(issue_ms, 0.99):.1f} ms"
        )
        print(
            f"  ratio tether/pgbench         {statistics.median(ratios):8.2f}x   "
            f"(rounds {ratios[0]:.2f}-{ratios[-1]:.2f}; aim >= 0.70x)"
        )
        print(
            f"  bare libraries, same steps   {statistics.median(bare):8.0f} /s   "
            f"{statistics.median(reach):.2f}x pgbench (rounds {reach[0]:.2f}-{reach[-1]:.2f}): "
            "the most this machine allows"
        )
        print(
            f"  ratio tether/bare libraries  {statistics.median(of_bare):8.2f}x   "
            f"(rounds {of_bare[0]:.2f}-{of_bare[-1]:.2f})"
        )
        print(f"  against Vault's example (221/s)  {statistics.median(ours) / 221:5.1f}x")
        print(
            f"  revocation, one at a time    p50 {_pct(revoke_ms, 0.5):.2f} ms  "
            f"p99 {_pct(revoke_ms, 0.99):.2f} ms  (n={len(revoke_ms)}; aim p50 <= 2 ms)"
        )
        print(
            f"  revocation floor (psycopg)   p50 {_pct(floor_ms, 0.5):.2f} ms  "
            f"p99 {_pct(floor_ms, 0.99):.2f} ms  (the same statements, PostgreSQL alone)"
        )
        record(kind, statistics.median(ours), statistics.median(floors), revoke_ms, floor_ms)
        _report.row(area="credentials", path=f"issuance by the bare libraries, {kind}",
                    figure=statistics.median(bare), unit="/s", better="higher",
                    floor=statistics.median(floors),
                    floor_name=f"pgbench, the same CREATE ROLE, {POOL} clients",
                    note="the same steps (cedarpy, sqlite3, psycopg), committed "
                    f"{CONCURRENCY} at a time and never waited for: the most a broker of these "
                    "libraries reaches here, sharing the 2 cores with PostgreSQL.")  # fmt: skip


def record(
    kind: str, ours: float, floor: float, revoke_ms: list[float], floor_ms: list[float]
) -> None:
    """The figures, for ``bench/report.py``."""
    _report.row(area="credentials", path=f"PostgreSQL credential issuance, {kind}", figure=ours,
                unit="/s", better="higher", floor=floor,
                floor_name=f"pgbench, the same CREATE ROLE, {POOL} clients",
                aim=_report.at_least(0.7, of="floor"),
                note=f"{CONCURRENCY} in flight, end to end (decision, lease, role, records); "
                f"Vault's published example: 221/s (not run here).")  # fmt: skip
    _report.row(area="credentials", path=f"revocation p50, {kind}", figure=_pct(revoke_ms, 0.5),
                unit="ms", better="lower", floor=_pct(floor_ms, 0.5),
                floor_name="psycopg, the same statements", aim=_report.at_most(2))  # fmt: skip


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()},"
        f" {platform.system()} {platform.release()}; PostgreSQL on loopback, fsync=on;"
        f" {CONCURRENCY} issuances in flight, {POOL} engine connections = {POOL} pgbench clients"
    )
    with tempfile.TemporaryDirectory() as tmp:
        report(uvloop.run(measure(seconds, Path(tmp))))


if __name__ == "__main__":
    main()

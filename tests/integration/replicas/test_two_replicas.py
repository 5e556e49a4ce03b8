"""Two ``tether serve`` processes on one PostgreSQL database, as behind a load balancer.

Both have the same issuer (the balancer's address; here A's), the same key-encryption key and
their own replica ids, so a token either one issued is verified by both. What must hold:

* a revocation made on A is enforced on B (by change note, not by B's next scheduled read);
* a B that was paused (``SIGSTOP``) while A revoked never answers from what it knew before:
  its first answers after ``SIGCONT`` already refuse the revoked token;
* both replicas' lease reapers run on the same leases, and each lease is ended exactly once;
* each replica writes its own audit chain, verification covers both, and a record deleted from
  either chain is detected.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import PgCluster
from tests.integration.api.leases import managed_db
from tests.integration.live.conftest import ServerProcess
from tests.support.faults import ASKED, ROUTES, register_bot
from tests.support.tokens import client_credentials


@dataclass
class Pair:
    a: ServerProcess
    b: ServerProcess
    database: str
    cluster: PgCluster


@pytest.fixture
def pair(pg_cluster: PgCluster, tmp_path: Path) -> Iterator[Pair]:
    database = pg_cluster.create_database()
    kek = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    common = {"TETHER_DATABASE_URL": pg_cluster.url(database), "TETHER_KEK": kek,
              "TETHER_EXT_AUTHZ_ROUTES": str(ROUTES)}  # fmt: skip
    a = ServerProcess(tmp_path / "a", log=tmp_path / "a.log", env={**common})
    a.env |= {"TETHER_ISSUER": a.addr, "TETHER_REPLICA_ID": "a"}
    b = ServerProcess(tmp_path / "b", log=tmp_path / "b.log", env={**common})
    b.env |= {"TETHER_ISSUER": a.addr, "TETHER_REPLICA_ID": "b"}
    try:
        a.start()
        b.start()
        yield Pair(a=a, b=b, database=database, cluster=pg_cluster)
    finally:
        if b.proc is not None and b.proc.poll() is None:
            os.kill(b.proc.pid, signal.SIGCONT)  # a test that failed while B was paused
        for server in (b, a):
            server.stop()


def _token(pair: Pair, instance: str, key_pem: bytes, spiffe_id: str) -> str:
    form = client_credentials(key_pem, client_id=spiffe_id, audience=f"{pair.a.addr}/oauth2/token",
                              now=int(time.time()), instance_id=instance)  # fmt: skip
    issued = httpx.post(f"{pair.a.addr}/oauth2/token", data=form)
    assert issued.status_code == 200, issued.text
    token: str = issued.json()["access_token"]
    return token


#: How ext_authz answers a revoked token: unauthenticated.
REFUSED = 401


def _asked(addr: str, token: str) -> int:
    return httpx.get(f"{addr}{ASKED}", headers={"Authorization": f"Bearer {token}"}).status_code


def _revoke_instance(pair: Pair, instance: str) -> None:
    with pair.a.ops() as ops:
        done = ops.post("/v1/svid/revocations", json={"agent": "faq-bot", "instance": instance})
    assert done.status_code == 201, done.text


def test_a_token_revoked_on_one_replica_is_refused_by_the_other(pair: Pair) -> None:
    first = register_bot(pair.a.addr, instance="pod-0")
    assert _asked(pair.b.addr, first) == 200  # B verifies what A issued
    agent, key = _bot(pair)
    waited: list[float] = []
    for n in range(10):
        token = _token(pair, f"pod-{n + 1}", key, agent)
        assert _asked(pair.b.addr, token) == 200
        _revoke_instance(pair, f"pod-{n + 1}")
        revoked = time.monotonic()
        while _asked(pair.b.addr, token) != REFUSED:
            assert time.monotonic() - revoked < 30, "B never refused the revoked token"
            time.sleep(0.005)
        waited.append(time.monotonic() - revoked)
    # Not an aim (tests do not time): what the run saw, for whoever reads the output.
    print(f"refused on B after p50 {statistics.median(waited) * 1000:.1f} ms, "
          f"max {max(waited) * 1000:.1f} ms")  # fmt: skip


def test_a_paused_replica_never_answers_from_what_it_knew_before_the_pause(pair: Pair) -> None:
    register_bot(pair.a.addr, instance="pod-0")
    agent, key = _bot(pair)
    token = _token(pair, "pod-paused", key, agent)
    assert _asked(pair.b.addr, token) == 200
    assert pair.b.proc is not None
    os.kill(pair.b.proc.pid, signal.SIGSTOP)
    try:
        _revoke_instance(pair, "pod-paused")
        time.sleep(3.0)  # longer than B may trust its state (2 refresh intervals)
        with ThreadPoolExecutor(8) as pool:
            # Sent while B is still stopped: they wait in its socket, ahead of its own work.
            answers = [pool.submit(_asked, pair.b.addr, token) for _ in range(8)]
            time.sleep(0.3)
            os.kill(pair.b.proc.pid, signal.SIGCONT)
            statuses = [f.result(timeout=30) for f in answers]
    finally:
        os.kill(pair.b.proc.pid, signal.SIGCONT)
    assert statuses == [REFUSED] * 8


def test_two_reapers_end_each_lease_exactly_once(pair: Pair) -> None:
    token = register_bot(pair.a.addr)
    db = managed_db(pair.cluster)
    agent = {"Authorization": f"Bearer {token}"}
    with pair.a.ops() as ops:
        assert ops.put("/v1/engines/pg-main", json=db.engine_body()).status_code == 200
        ids = []
        for _ in range(12):  # issued through A and through B alike
            for server in (pair.a, pair.b):
                body = {"engine": "pg-main", "role": "readonly", "ttl": 2}
                issued = httpx.post(f"{server.addr}/v1/leases", json=body, headers=agent)
                assert issued.status_code == 201, issued.text
                ids.append(issued.json()["lease"]["id"])
        deadline = time.monotonic() + 60
        while db.roles():  # both reapers (1 s rounds) end them once due
            assert time.monotonic() < deadline, f"roles left: {db.roles()}"
            time.sleep(0.2)
        ended = ops.get("/v1/audit", params={"type_prefix": "lease.ended", "limit": 1000})
        states = {ops.get(f"/v1/leases/{i}").json()["state"] for i in ids}
    subjects = [r["subject"] for r in ended.json()["records"]]
    assert sorted(subjects) == sorted(f"lease:{i}" for i in ids)  # each once, none twice
    assert states == {"expired"}


def test_a_paused_replica_issues_no_token_to_an_instance_revoked_meanwhile(pair: Pair) -> None:
    register_bot(pair.a.addr, instance="pod-0")
    agent, key = _bot(pair)
    assert pair.b.proc is not None
    os.kill(pair.b.proc.pid, signal.SIGSTOP)
    try:
        _revoke_instance(pair, "pod-new")
        time.sleep(3.0)
        form = client_credentials(key, client_id=agent, audience=f"{pair.a.addr}/oauth2/token",
                                  now=int(time.time()), instance_id="pod-new")  # fmt: skip
        with ThreadPoolExecutor(1) as pool:
            asked = pool.submit(httpx.post, f"{pair.b.addr}/oauth2/token", data=form, timeout=30)
            time.sleep(0.3)
            os.kill(pair.b.proc.pid, signal.SIGCONT)
            answer = asked.result(timeout=30)
    finally:
        os.kill(pair.b.proc.pid, signal.SIGCONT)
    assert answer.status_code == 503, answer.text  # not a token the checkpoint would refuse
    assert answer.json()["error"] == "temporarily_unavailable"


@pytest.mark.parametrize("where", ["a", "b"])
def test_a_record_deleted_from_either_replicas_chain_is_detected(pair: Pair, where: str) -> None:
    token = register_bot(pair.a.addr)
    for server in (pair.a, pair.b):
        for _ in range(5):
            assert _asked(server.addr, token) == 200
    with pair.a.ops() as ops:
        before = ops.get("/v1/audit/verify").json()
    logs = {log["log"].rsplit("/", 1)[-1]: log for log in before["logs"]}
    assert before["ok"] is True, before
    assert {"a", "b"} <= set(logs), before
    victim = logs[where]["log"]
    with psycopg.connect(pair.cluster.url(pair.database).replace("+psycopg", "")) as conn:
        conn.execute("SET session_replication_role = replica")  # past any guard a trigger keeps
        deleted = conn.execute(
            "DELETE FROM audit_records WHERE log = %s AND log_index = 2", (victim,)
        ).rowcount
    assert deleted == 1
    with pair.b.ops() as ops:  # either replica verifies every chain
        after = ops.get("/v1/audit/verify").json()
    reports = {log["log"]: log for log in after["logs"]}
    assert after["ok"] is False
    assert reports[victim]["ok"] is False
    assert all(r["ok"] for name, r in reports.items() if name != victim)


def _bot(pair: Pair) -> tuple[str, bytes]:
    """faq-bot's SPIFFE ID, and a new key of its (registered through A)."""
    from tether.crypto.assertion import generate_agent_key  # noqa: PLC0415

    key = generate_agent_key()
    with pair.a.ops() as ops:
        assert ops.post("/v1/agents/faq-bot/keys", json={"jwk": key.public_jwk}).is_success
        spiffe_id: str = ops.get("/v1/agents/faq-bot").json()["spiffe_id"]
    return spiffe_id, key.private_pem

"""Crash test for leases: ``kill -9`` the server while leases are live, let some expire while
it is down, start it again.

The rule (issue "strip standing privileges"): within 10 s of the restart every expired lease's
role is gone, every unexpired one still logs in, and the managed roles equal the live leases.
No issued password shows in the server's output.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import PgCluster
from tests.integration.api.leases import POLICIES, ManagedDb, managed_db
from tests.support.tokens import client_credentials
from tether.crypto.assertion import generate_agent_key

from .conftest import ServerProcess

SHORT_TTL = 3
LONG_TTL = 120


def _agent_token(ops: httpx.Client, addr: str) -> str:
    created = ops.post("/v1/agents", json={"name": "faq-bot", "owners": ["ops"],
                                           "declarations": {"resources": ["pg-main"]}})  # fmt: skip
    assert created.status_code == 201, created.text
    key = generate_agent_key()
    assert ops.post("/v1/agents/faq-bot/keys", json={"jwk": key.public_jwk}).status_code == 201
    form = client_credentials(
        key.private_pem,
        client_id=created.json()["spiffe_id"],
        audience=f"{addr}/oauth2/token",
        now=int(time.time()),
    )
    issued = ops.post("/oauth2/token", data=form)
    assert issued.status_code == 200, issued.text
    token: str = issued.json()["access_token"]
    return token


def _issue(ops: httpx.Client, token: str, ttl: int) -> dict[str, Any]:
    answer = ops.post(
        "/v1/leases",
        json={"engine": "pg-main", "role": "readonly", "ttl": ttl},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 201, answer.text
    issued: dict[str, Any] = answer.json()
    return issued


def _logs_in(db: ManagedDb, issued: dict[str, Any]) -> bool:
    credential = issued["credential"]
    try:
        with db.connect(credential["username"], credential["secret"]) as conn:
            conn.execute("SELECT a FROM faq").fetchall()
    except psycopg.OperationalError:
        return False
    return True


@pytest.fixture
def server(tmp_path: Path) -> Any:
    running = ServerProcess(tmp_path / "data", log=tmp_path / "server.log")
    try:
        yield running
    finally:
        running.stop()


def test_leases_that_expired_while_tether_was_down_are_gone_within_10_s_of_restart(
    server: ServerProcess, pg_cluster: PgCluster
) -> None:
    db = managed_db(pg_cluster)
    server.start()
    with server.ops() as ops:
        assert ops.put("/v1/engines/pg-main", json=db.engine_body()).status_code == 200
        assert ops.post("/v1/policies", json={"text": POLICIES}).status_code == 201
        token = _agent_token(ops, server.addr)
        short = [_issue(ops, token, SHORT_TTL) for _ in range(3)]
        long = [_issue(ops, token, LONG_TTL) for _ in range(2)]
    assert all(_logs_in(db, issued) for issued in short + long)
    server.kill()
    time.sleep(SHORT_TTL + 1)
    # Down, the short leases' roles still exist (VALID UNTIL refuses their logins already).
    assert {i["lease"]["credential"] for i in short} <= db.roles()
    restarted = time.monotonic()
    server.start()
    expired = {i["lease"]["credential"] for i in short}
    while db.roles() & expired:
        assert time.monotonic() - restarted < 10, "expired roles still there 10 s after restart"
        time.sleep(0.1)
    assert db.roles() == {i["lease"]["credential"] for i in long}
    assert all(_logs_in(db, issued) for issued in long)
    with server.ops() as ops:
        states = {lease["id"]: lease["state"] for lease in ops.get("/v1/leases").json()["leases"]}
    assert {states[i["lease"]["id"]] for i in short} == {"expired"}
    assert {states[i["lease"]["id"]] for i in long} == {"active"}
    server.stop()
    output = server.output().encode()
    for issued in short + long:
        assert issued["credential"]["secret"].encode() not in output
    assert pg_cluster.password.encode() not in output

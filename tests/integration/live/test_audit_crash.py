"""Crash test: ``kill -9`` the server again and again under concurrent decisions.

The rule (issue "proof of control"): a crash never loses an acknowledged record — every
decision answered 200 has its record — the chain stays contiguous, and every earlier signed
checkpoint is consistent with every later one. A witness file written by the same server
survives too (a torn last line is cut off at the next start). Same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.tokens import client_credentials
from tether.audit import reader
from tether.audit.bundle import signature_verifies
from tether.audit.merkle import verify_consistency
from tether.audit.notes import TreeHead, open_note, parse_verifier_key
from tether.audit.tiles import consistency_proof_at
from tether.crypto.assertion import generate_agent_key
from tether.store.sql import open_sql_store

from .conftest import ROOT, ServerProcess

CYCLES = 20
#: Decisions in flight at once while the server is killed.
IN_FLIGHT = 8
POLICY = """
@id("bot-searches")
permit (principal == Tether::Agent::"crash-bot", action == Tether::Action::"call_tool",
        resource == Tether::Tool::"search_faq");
"""


def _server(data_dir: Path, database_url: str | None, witness: Path) -> ServerProcess:
    env = {"TETHER_AUDIT_WITNESSES": str(witness)}
    if database_url:
        env["TETHER_DATABASE_URL"] = database_url
    return ServerProcess(data_dir, env=env)


def _agent_token(addr: str) -> str:
    with httpx.Client(base_url=addr, headers={"Authorization": f"Bearer {ROOT}"}) as ops:
        return _register(ops, addr)


def _register(ops: httpx.Client, addr: str) -> str:
    created = ops.post("/v1/agents", json={"name": "crash-bot", "owners": ["ops"],
                                           "declarations": {"tools": ["search_faq"]}})  # fmt: skip
    assert created.status_code == 201, created.text
    key = generate_agent_key()
    assert ops.post("/v1/agents/crash-bot/keys", json={"jwk": key.public_jwk}).status_code == 201
    assert ops.post("/v1/policies", json={"text": POLICY}).status_code == 201
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


async def _decide_until_killed(server: ServerProcess, token: str, cycle: int) -> set[str]:
    """Decisions from IN_FLIGHT loops; the server is killed part-way. The acknowledged ids."""
    acknowledged: set[str] = set()
    body = {
        "action": {"name": "call_tool"},
        "resource": {
            "type": "Tool",
            "id": "search_faq",
            "properties": {"name": "search_faq", "data_class": "public", "state_changing": False},
        },
    }

    async def loop(worker: int, client: httpx.AsyncClient) -> None:
        for n in range(10_000):
            request_id = f"c{cycle}-w{worker}-{n}"
            headers = {"Authorization": f"Bearer {token}", "X-Request-Id": request_id}
            try:
                answer = await client.post(
                    "/access/v1/evaluation", json=body, headers=headers, params={"explain": True}
                )
            except httpx.TransportError:
                return
            if answer.status_code == 200:
                assert answer.json()["decision"] is True, answer.text
                acknowledged.add(request_id)

    async with httpx.AsyncClient(base_url=server.addr, timeout=10) as client:
        workers = [asyncio.create_task(loop(w, client)) for w in range(IN_FLIGHT)]
        await asyncio.sleep(random.uniform(0.2, 0.8))
        server.kill()
        await asyncio.gather(*workers)
    return acknowledged


async def _check(database_url: str, verifier_key: str, acknowledged: set[str]) -> dict[str, Any]:
    name, public_key = parse_verifier_key(verifier_key)

    def open_checkpoint(note: bytes) -> TreeHead:
        return TreeHead.parse(
            open_note(note, name=name, public_key=public_key, verify=signature_verifies)
        )

    store = await open_sql_store(database_url)
    try:
        recorded: set[str] = set()
        after = 0
        while page := await store.list_audit(
            after_sequence=after, limit=1000, type_prefix="decision"
        ):
            recorded |= {r.correlation_id for _, r in page if r.correlation_id}
            after = page[-1][0]
        [log] = await store.audit_logs()
        report = await reader.verify_stored(store, log, open_checkpoint=open_checkpoint)
        checkpoints = await store.audit_checkpoints(log, limit=100_000)
        for older, newer in itertools.pairwise(checkpoints):
            proof = await consistency_proof_at(store, log, older.size, newer.size)
            verify_consistency(older.size, newer.size, older.root, newer.root, proof)
    finally:
        await store.close()
    return {
        "missing": acknowledged - recorded,
        "report": report,
        "checkpoints": len(checkpoints),
    }


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill_9_under_load_never_loses_an_acknowledged_record(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    database_url = request.getfixturevalue("pg_url") if backend == "postgresql" else None
    server = _server(tmp_path / "data", database_url, tmp_path / "witness" / "checkpoints.jsonl")
    acknowledged: set[str] = set()
    try:
        server.start()
        token = _agent_token(server.addr)
        key = httpx.get(
            f"{server.addr}/v1/audit/key", headers={"Authorization": f"Bearer {ROOT}"}
        ).json()["verifier_key"]
        for cycle in range(CYCLES):
            if cycle:
                server.start()
            acknowledged |= asyncio.run(_decide_until_killed(server, token, cycle))
        server.start()  # opening checks the tail and the witness, and must succeed
        ready = httpx.get(f"{server.addr}/readyz").json()
        assert ready["status"] == "ready", ready
        server.stop()
    finally:
        server.stop()
    url = database_url or f"sqlite:///{tmp_path / 'data' / 'tether.db'}"
    found = asyncio.run(_check(url, key, acknowledged))
    assert len(acknowledged) > CYCLES, "decisions were acknowledged in every cycle"
    assert found["missing"] == set(), f"{len(found['missing'])} acknowledged records lost"
    assert found["report"].ok, found["report"].to_dict()
    assert found["checkpoints"] >= CYCLES, "every start signs what it found"

"""``/v1/audit``: verify every log, prove a record offline, export, trace — over real SQLite."""

from __future__ import annotations

import base64
import json
import sqlite3
from typing import Any

import httpx
import pytest

from tether.api.app import create_app
from tether.api.services import Services
from tether.audit.bundle import BundleInvalid, verify_bundle
from tether.audit.chain import verify_log
from tether.audit.notes import TreeHead, verifier_key
from tether.config import Settings

from .conftest import ISSUER
from .decisions import evaluation
from .test_management_api import as_, operator_token


async def decide(client: httpx.AsyncClient, token: str, *, request_id: str, tool: str) -> None:
    headers = as_(token) | {"X-Request-Id": request_id}
    answer = await client.post("/access/v1/evaluation", json=evaluation(tool), headers=headers)
    assert answer.status_code == 200, answer.text


async def decision_ids(client: httpx.AsyncClient) -> list[str]:
    found = await client.get("/v1/audit", params={"type_prefix": "decision", "limit": 1000})
    return [r["id"] for r in found.json()["records"]]


async def signed(services: Services) -> None:
    """Sign now what is durable (the server does it within a second)."""
    await services.audit.sign()


async def proven(
    client: httpx.AsyncClient, token: str, services: Services, *, decisions: int = 1, pick: int = 0
) -> dict[str, Any]:
    """The proof bundle of decision ``pick`` of ``decisions`` made now, once signed."""
    for n in range(decisions):
        await decide(client, token, request_id=f"req-{n}", tool="search_faq")
    await signed(services)
    record_id = (await decision_ids(client))[pick]
    bundle: dict[str, Any] = (await client.get(f"/v1/audit/records/{record_id}/proof")).json()
    return bundle


async def test_the_live_log_verifies_and_names_this_replicas_log(
    client: httpx.AsyncClient, agent_token: str, services: Services
) -> None:
    await decide(client, agent_token, request_id="req-1", tool="search_faq")
    await signed(services)
    report = (await client.get("/v1/audit/verify")).json()
    assert report["ok"] is True
    [mine] = [log for log in report["logs"] if log["log"] == services.audit.origin]
    assert mine["size"] == services.audit.size
    assert mine["signed_size"] == mine["size"]
    assert mine["first_bad_index"] is None


async def test_a_proof_bundle_verifies_offline_with_only_the_public_key(
    client: httpx.AsyncClient, agent_token: str, services: Services
) -> None:
    bundle = await proven(client, agent_token, services)
    [record_id] = await decision_ids(client)
    key = (await client.get("/v1/audit/key")).json()["verifier_key"]
    record = verify_bundle(bundle, verifier_key=key)
    assert record["id"] == record_id
    assert record["type"] == "decision"
    # The key a third party was given out of band is the signer's public key.
    assert key == verifier_key(
        services.settings.audit_key_name, services.keyring.audit_signer.public_raw()
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda b: b | {"entry": b["entry"].replace('"allow"', '"deny"')}, "inclusion proof"),
        (lambda b: b | {"index": b["index"] + 1}, "entry"),
        (lambda b: b | {"proof": [base64.b64encode(bytes(32)).decode(), *b["proof"][1:]]}, "proof"),
        (lambda b: b | {"checkpoint": b["checkpoint"].replace("\n\n", "\n\n\n")}, "checkpoint"),
    ],
    ids=["edited-record", "other-index", "bad-proof", "broken-note"],
)
async def test_an_edited_bundle_is_refused(
    client: httpx.AsyncClient, agent_token: str, services: Services, change: Any, reason: str
) -> None:
    bundle = await proven(client, agent_token, services, decisions=3, pick=1)
    key = (await client.get("/v1/audit/key")).json()["verifier_key"]
    with pytest.raises(BundleInvalid, match=reason):
        verify_bundle(change(bundle), verifier_key=key)


async def test_a_bundle_checked_with_another_key_is_refused(
    client: httpx.AsyncClient, agent_token: str, services: Services
) -> None:
    bundle = await proven(client, agent_token, services)
    other = verifier_key(services.settings.audit_key_name, bytes(range(32)))
    with pytest.raises(BundleInvalid):
        verify_bundle(bundle | {"verifier_key": other}, verifier_key=other)


async def test_the_jsonl_export_is_the_exact_log_and_verifies_against_the_checkpoint(
    client: httpx.AsyncClient, agent_token: str, services: Services
) -> None:
    for n in range(5):
        await decide(client, agent_token, request_id=f"e{n}", tool="search_faq")
    await signed(services)
    exported = (await client.get("/v1/audit/export", params={"format": "jsonl"})).content
    entries = exported.splitlines()
    [mine] = [log for log in (await client.get("/v1/audit/logs")).json()["logs"]]
    head = TreeHead.parse(mine["checkpoint"].encode().split(b"\n\n")[0] + b"\n")
    state = verify_log(entries, origin=mine["log"], checkpoints={head.size: head.root})
    assert state.size == len(entries) == head.size


async def test_the_ocsf_export_has_one_event_per_entry(
    client: httpx.AsyncClient, agent_token: str
) -> None:
    await decide(client, agent_token, request_id="o1", tool="search_faq")
    await decide(client, agent_token, request_id="o2", tool="drop_tables")
    lines = (await client.get("/v1/audit/export", params={"format": "ocsf"})).content.splitlines()
    events = [json.loads(line) for line in lines]
    decisions = [e for e in events if e["class_uid"] == 6003]
    assert [e["status_id"] for e in decisions] == [1, 2]  # allowed, then denied
    assert [e["metadata"]["sequence"] for e in events] == list(range(len(events)))


async def test_a_trace_draws_the_agent_instance_action_and_resource_with_the_policy(
    client: httpx.AsyncClient, agent_token: str
) -> None:
    await decide(client, agent_token, request_id="trace-7", tool="search_faq")
    trace = (await client.get("/v1/audit/trace/trace-7")).json()
    [step] = trace["steps"]
    assert [(h["kind"], h["id"]) for h in step["path"]] == [
        ("agent", "faq-bot"),
        ("instance", "pod-1"),
        ("action", "call_tool"),
        ("resource", 'Tool::"search_faq"'),
    ]
    assert step["policy_ids"] == ["faq-bot-searches"]
    assert step["effect"] == "allow"
    missing = await client.get("/v1/audit/trace/no-such-request")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "audit_record_not_found"


async def test_an_auditor_reads_and_proves_and_a_developer_may_not(
    client: httpx.AsyncClient, agent_token: str
) -> None:
    auditor = await operator_token(client, "auditor", "ada")
    developer = await operator_token(client, "developer", "dev")
    for path in ("/v1/audit/verify", "/v1/audit/key", "/v1/audit/logs", "/v1/audit/export"):
        assert (await client.get(path, headers=as_(auditor))).status_code == 200, path
        assert (await client.get(path, headers=as_(developer))).status_code == 403, path


async def test_a_row_changed_in_the_database_is_named_by_its_index(
    client: httpx.AsyncClient, agent_token: str, services: Services, settings: Settings
) -> None:
    for n in range(4):
        await decide(client, agent_token, request_id=f"t{n}", tool="search_faq")
    await signed(services)
    size = services.audit.size
    with sqlite3.connect(settings.data_dir / "tether.db") as db:
        [(entry,)] = db.execute(
            "SELECT entry FROM audit_records WHERE log_index = ?", (size - 2,)
        ).fetchall()
        db.execute(
            "UPDATE audit_records SET entry = ? WHERE log_index = ?",
            (bytes(entry).replace(b"pod-1", b"pod-2"), size - 2),
        )
    report = (await client.get("/v1/audit/verify")).json()
    assert report["ok"] is False
    [mine] = report["logs"]
    assert mine["first_bad_index"] == size - 2


def test_the_verifier_key_round_trips() -> None:
    key = verifier_key("acme.org/audit", bytes(32))
    name, _, rest = key.partition("+")
    assert name == "acme.org/audit"
    assert base64.b64decode(rest.split("+")[1])[0] == 1


#: What the issue asks of every decision record (``time``, ``id`` and ``outcome`` are the
#: record's own; the rest are its details, null where they do not apply).
DECISION_FIELDS = {
    "decision_id", "enforcement_point", "agent", "instance", "user", "app", "act", "grant_id",
    "purpose", "session", "action", "resource", "effect", "policy_ids", "approval_id",
    "approver", "lease_id", "risk_tier",
}  # fmt: skip


async def test_a_decision_record_carries_every_field_an_auditor_asks_for(
    client: httpx.AsyncClient, agent_token: str
) -> None:
    await decide(client, agent_token, request_id="fields-1", tool="search_faq")
    [record] = (await client.get("/v1/audit", params={"correlation_id": "fields-1"})).json()[
        "records"
    ]
    assert {"time", "id", "correlation_id", "outcome"} <= set(record)
    assert record["correlation_id"] == "fields-1"
    assert set(record["details"]) >= DECISION_FIELDS
    details = record["details"]
    # An agent's own token delegates nothing: no user, no acting chain, no grant.
    assert (details["user"], details["act"], details["grant_id"]) == (None, [], None)
    assert (details["agent"], details["instance"], details["risk_tier"]) == (
        "faq-bot",
        "pod-1",
        "low",
    )


async def test_a_server_that_opens_a_changed_log_is_not_ready_and_denies_every_decision(
    client: httpx.AsyncClient, agent_token: str, services: Services, settings: Settings
) -> None:
    await decide(client, agent_token, request_id="before", tool="search_faq")
    await signed(services)
    with sqlite3.connect(settings.data_dir / "tether.db") as db:
        [(entry,)] = db.execute(
            "SELECT entry FROM audit_records WHERE correlation_id = 'before'"
        ).fetchall()
        db.execute(
            "UPDATE audit_records SET entry = ? WHERE correlation_id = 'before'",
            (bytes(entry).replace(b"pod-1", b"pod-9"),),
        )
    reopened = await Services.open(settings)
    try:
        assert reopened.audit.invalid is not None
        app = create_app(settings, services=reopened)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as again:
            ready = await again.get("/readyz")
            assert ready.status_code == 503
            assert "does not verify" in ready.json()["audit"]
            answer = await again.post(
                "/access/v1/evaluation", json=evaluation(), headers=as_(agent_token)
            )
            assert answer.json()["decision"] is False, "nothing recorded, nothing allowed"
    finally:
        await reopened.close()


async def test_a_record_whose_columns_were_edited_is_refused_not_shown(
    client: httpx.AsyncClient, agent_token: str, settings: Settings
) -> None:
    await decide(client, agent_token, request_id="edited", tool="search_faq")
    with sqlite3.connect(settings.data_dir / "tether.db") as db:
        # The record is its entry; what queries find it by (id, type, correlation id) is
        # checked against the entry, so a row moved under another type is caught.
        db.execute(
            "UPDATE audit_records SET type = 'agent.registered' WHERE correlation_id = 'edited'"
        )
    for path in ("/v1/audit", "/v1/audit/trace/edited"):
        answer = await client.get(path)
        assert answer.status_code == 503, path
        assert answer.json()["error"]["code"] == "audit_log_invalid"

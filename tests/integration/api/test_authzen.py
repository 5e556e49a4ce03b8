"""The checkpoint behind the AuthZEN API: real tokens, real policies, real audit records."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from tether.api.app import create_app
from tether.api.services import Services
from tether.audit.records import AuditReceipt, AuditRecord
from tether.checkpoint import Checkpoint
from tether.errors import InvalidPolicySet, StoreUnavailable
from tether.policy._cedar import CedarEngine, CedarPolicies
from tether.policy.service import PolicySets

from .conftest import ISSUER
from .decisions import POLICIES, evaluation, tool
from .test_management_api import as_, operator_token


async def decisions(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    records = await client.get("/v1/audit", params={"type_prefix": "decision", "limit": 1000})
    return [r["details"] for r in records.json()["records"]]


async def test_permitted_call_is_true_and_recorded(
    client: httpx.AsyncClient, agent_token: str
) -> None:
    answer = await client.post(
        "/access/v1/evaluation",
        json=evaluation(),
        headers=as_(agent_token),
        params={"explain": True},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["decision"] is True
    assert body["context"]["policy_ids"] == ["faq-bot-searches"]
    [record] = await decisions(client)
    assert record["decision_id"] == body["context"]["id"]
    assert (record["agent"], record["instance"], record["effect"]) == ("faq-bot", "pod-1", "allow")
    assert record["policy_version"] == 1


async def test_what_no_policy_permits_is_false(client: httpx.AsyncClient, agent_token: str) -> None:
    answer = await client.post(
        "/access/v1/evaluation", json=evaluation("drop_tables"), headers=as_(agent_token)
    )
    assert answer.json()["decision"] is False
    assert (await decisions(client))[0]["effect"] == "deny"


async def test_approval_obligation_answers_with_the_call_digest(
    client: httpx.AsyncClient, agent_token: str
) -> None:
    ask = evaluation("transfer")
    ask["action"]["properties"] = {"arguments": {"amount": 100, "to": "bob"}}
    first = (await client.post("/access/v1/evaluation", json=ask, headers=as_(agent_token))).json()
    assert first["decision"] is False
    assert first["context"]["effect"] == "approval_required"
    assert first["context"]["obligations"] == ["approval"]
    ask["action"]["properties"]["arguments"]["amount"] = 10_000
    second = (await client.post("/access/v1/evaluation", json=ask, headers=as_(agent_token))).json()
    assert second["context"]["call_digest"] != first["context"]["call_digest"], (
        "a changed amount is a different call"
    )


async def test_forged_token_is_denied_and_recorded(
    client: httpx.AsyncClient, agent_token: str
) -> None:
    forged = agent_token[:-4] + ("AAAA" if not agent_token.endswith("AAAA") else "BBBB")
    answer = await client.post("/access/v1/evaluation", json=evaluation(), headers=as_(forged))
    assert answer.json()["decision"] is False
    [record] = await decisions(client)
    assert record["effect"] == "deny"
    assert record["agent"] is None


async def test_suspended_agent_is_refused_with_a_live_token(
    client: httpx.AsyncClient, agent_token: str
) -> None:
    assert (await client.post("/v1/agents/faq-bot/suspend")).status_code == 200
    answer = await client.post("/access/v1/evaluation", json=evaluation(), headers=as_(agent_token))
    assert answer.json()["decision"] is False


async def test_subject_that_is_not_the_token_is_denied(
    client: httpx.AsyncClient, agent_token: str
) -> None:
    impersonating = evaluation(subject={"type": "agent", "id": "bank-bot"})
    answer = await client.post(
        "/access/v1/evaluation", json=impersonating, headers=as_(agent_token)
    )
    assert answer.json()["decision"] is False
    assert "subject" in (await decisions(client))[0]["reasons"][0]


async def test_enforcement_point_asks_for_an_agent_with_its_own_token(
    client: httpx.AsyncClient, agent_token: str
) -> None:
    gateway = await operator_token(client, "platform-admin", "gateway")
    on_behalf = evaluation(
        subject={"type": "agent", "id": "faq-bot", "properties": {"token": agent_token}}
    )
    answer = await client.post("/access/v1/evaluation", json=on_behalf, headers=as_(gateway))
    assert answer.json()["decision"] is True
    developer = await operator_token(client, "developer", "dev")
    refused = await client.post("/access/v1/evaluation", json=on_behalf, headers=as_(developer))
    assert refused.status_code == 403
    no_token = evaluation(subject={"type": "agent", "id": "faq-bot"})
    assert (
        await client.post("/access/v1/evaluation", json=no_token, headers=as_(gateway))
    ).status_code == 400


@pytest.mark.parametrize(
    ("semantic", "answered"),
    [("execute_all", 3), ("deny_on_first_deny", 2), ("permit_on_first_permit", 1)],
)
async def test_batch_semantics(
    client: httpx.AsyncClient, agent_token: str, semantic: str, answered: int
) -> None:
    batch = {
        "action": {"name": "call_tool"},
        "evaluations": [
            {"resource": tool("search_faq")},
            {"resource": tool("drop_tables")},
            {"resource": tool("search_faq")},
        ],
        "options": {"evaluations_semantic": semantic},
    }
    answer = await client.post("/access/v1/evaluations", json=batch, headers=as_(agent_token))
    assert answer.status_code == 200, answer.text
    results = [e["decision"] for e in answer.json()["evaluations"]]
    assert results == [True, False, True][:answered]


@pytest.mark.parametrize(
    "body",
    [
        {"resource": tool("search_faq")},
        {"action": {"name": "call_tool"}, "resource": {"type": "Tool"}},
        {"action": {"name": "call_tool"}, "resource": tool("x"), "surprise": 1},
    ],
    ids=["missing_action", "resource_without_id", "unknown_member"],
)
async def test_malformed_request_is_400(
    client: httpx.AsyncClient, agent_token: str, body: dict[str, Any]
) -> None:
    answer = await client.post("/access/v1/evaluation", json=body, headers=as_(agent_token))
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "invalid_input")


@pytest.mark.parametrize(
    ("path", "content", "field"),
    [
        ("/access/v1/evaluation", b"{not json", "body"),
        ("/access/v1/evaluation", b'{"action": {"name": "call_tool"}}', "resource"),
        ("/access/v1/evaluations", b'{"evaluations": [{"action": {"name": 7}}]}', "evaluations"),
        ("/access/v1/evaluations", b'{"options": {"evaluations_semantic": "maybe"}}', "options"),
    ],
    ids=["not_json", "missing_resource", "batch_item_wrong_type", "unknown_semantic"],
)
async def test_malformed_body_names_the_field_and_is_400(
    client: httpx.AsyncClient, agent_token: str, path: str, content: bytes, field: str
) -> None:
    answer = await client.post(
        path,
        content=content,
        headers=as_(agent_token) | {"content-type": "application/json"},
    )
    error = answer.json()["error"]
    assert (answer.status_code, error["code"]) == (400, "invalid_input")
    assert error["details"]["field"].startswith(field)


async def test_openapi_publishes_the_decision_request_bodies(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path, required in (
        ("/access/v1/evaluation", ["action", "resource"]),
        ("/access/v1/evaluations", []),
    ):
        body = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert sorted(body.get("required", [])) == required
        assert {"subject", "action", "resource", "context"} <= set(body["properties"])
        assert any(p["name"] == "explain" for p in paths[path]["post"]["parameters"])
        assert "$ref" not in str(body)  # self-contained: nothing that does not resolve


async def test_unknown_entity_type_is_deny_with_a_reason(
    client: httpx.AsyncClient, agent_token: str
) -> None:
    body = {"action": {"name": "call_tool"}, "resource": {"type": "Spaceship", "id": "x"}}
    answer = await client.post(
        "/access/v1/evaluation", json=body, headers=as_(agent_token), params={"explain": True}
    )
    assert answer.json()["decision"] is False
    assert answer.json()["context"]["reasons"]


class FlakySink:
    """The real sink, with a switch that makes appends fail or hang (fault injection)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.mode = "ok"

    async def append(self, record: AuditRecord) -> AuditReceipt:
        if self.mode == "fail":
            raise StoreUnavailable("the audit store is down")
        if self.mode == "hang":
            await asyncio.sleep(3600)
        receipt: AuditReceipt = await self.inner.append(record)
        return receipt


def on_flaky_sink(services: Services, *, audit_timeout: float = 2.0) -> FlakySink:
    """Put the services' checkpoint on a :class:`FlakySink` over the real one."""
    sink = FlakySink(services.audit)
    services.checkpoint = Checkpoint(
        svids=services.svids,
        policies=services.policies,
        engine=services.checkpoint._engine,
        audit=sink,
        clock=services.clock,
        directory=services.directory,
        events=services.events,
        audit_timeout=audit_timeout,
    )
    return sink


async def test_no_audit_no_access_and_service_resumes(
    client: httpx.AsyncClient, services: Services, agent_token: str
) -> None:
    sink = on_flaky_sink(services, audit_timeout=0.2)
    for mode in ("fail", "hang"):
        sink.mode = mode
        started = time.monotonic()
        refused = await client.post(
            "/access/v1/evaluation", json=evaluation(), headers=as_(agent_token)
        )
        assert time.monotonic() - started < 2
        assert refused.status_code == 503
        assert refused.json() == {
            "decision": False,
            "context": {
                "id": refused.json()["context"]["id"],
                "effect": "deny",
                "reason": "audit_unavailable",
            },
        }
    sink.mode = "ok"
    resumed = await client.post(
        "/access/v1/evaluation", json=evaluation(), headers=as_(agent_token)
    )
    assert (resumed.status_code, resumed.json()["decision"]) == (200, True)


async def test_authzen_configuration_names_the_endpoints(client: httpx.AsyncClient) -> None:
    config = (await client.get("/.well-known/authzen-configuration")).json()
    assert config["access_evaluation_endpoint"] == f"{ISSUER}/access/v1/evaluation"
    assert config["access_evaluations_endpoint"] == f"{ISSUER}/access/v1/evaluations"


async def test_quarantine_takes_effect_on_the_very_next_decision(
    client: httpx.AsyncClient, agent_token: str
) -> None:
    first = await client.post("/access/v1/evaluation", json=evaluation(), headers=as_(agent_token))
    assert first.json()["decision"] is True
    assert (await client.post("/v1/agents/faq-bot/quarantine")).status_code == 200
    second = await client.post("/access/v1/evaluation", json=evaluation(), headers=as_(agent_token))
    assert second.json()["decision"] is False


async def test_a_caller_cannot_approve_its_own_call(
    client: httpx.AsyncClient, agent_token: str
) -> None:
    ask = evaluation("transfer")
    ask["action"]["properties"] = {"arguments": {"amount": 1_000_000, "to": "mallory"}}
    first = (await client.post("/access/v1/evaluation", json=ask, headers=as_(agent_token))).json()
    digest = first["context"]["call_digest"]
    forged = {"id": "apr_forged", "approver": "alice", "call_digest": digest}
    ask["context"] = {"approval": forged, "call_digest": digest, "arguments": "{}"}
    second = await client.post("/access/v1/evaluation", json=ask, headers=as_(agent_token))
    assert second.json()["decision"] is False
    assert second.json()["context"]["effect"] == "approval_required"


async def test_agents_are_described_by_the_registry_not_the_caller(
    client: httpx.AsyncClient, agent_token: str
) -> None:
    ghost = {
        "action": {"name": "invoke_agent"},
        "resource": {"type": "Agent", "id": "ghost", "properties": {"state": "active"}},
    }
    answer = await client.post(
        "/access/v1/evaluation", json=ghost, headers=as_(agent_token), params={"explain": True}
    )
    assert answer.json()["decision"] is False
    assert "no agent named" in answer.json()["context"]["reasons"][0]
    smuggled = evaluation(
        context={"entities": [{"type": "Agent", "id": "faq-bot", "properties": {"state": "x"}}]}
    )
    refused = await client.post("/access/v1/evaluation", json=smuggled, headers=as_(agent_token))
    assert refused.json()["decision"] is False


async def test_a_subject_that_is_not_an_agent_is_400(
    client: httpx.AsyncClient, agent_token: str
) -> None:
    body = evaluation(subject={"type": "user", "id": "faq-bot"})
    answer = await client.post("/access/v1/evaluation", json=body, headers=as_(agent_token))
    assert answer.status_code == 400


async def test_every_decision_is_published_for_monitoring_with_its_record_id(
    client: httpx.AsyncClient, services: Services, agent_token: str
) -> None:
    feed = services.events.subscribe(capacity=10)
    allowed = await client.post(
        "/access/v1/evaluation", json=evaluation(), headers=as_(agent_token)
    )
    denied = await client.post(
        "/access/v1/evaluation", json=evaluation("drop_tables"), headers=as_(agent_token)
    )
    events = feed.drain()
    assert [(e.type, e.data["decision_id"], e.data["effect"]) for e in events] == [
        ("decision", allowed.json()["context"]["id"], "allow"),
        ("decision", denied.json()["context"]["id"], "deny"),
    ]
    recorded = {d["decision_id"]: d for d in await decisions(client)}
    for event in events:  # the event says what the durable record says
        record = recorded[str(event.data["decision_id"])]
        for key in ("agent", "instance", "action", "resource", "call_digest"):
            assert event.data[key] == record[key], key
        assert event.data["policy_ids"] == tuple(record["policy_ids"])  # a tuple: immutable
        assert event.data["audit_failed"] is False
    feed.close()


async def test_a_decision_that_could_not_be_recorded_is_still_published_as_deny(
    client: httpx.AsyncClient, services: Services, agent_token: str
) -> None:
    on_flaky_sink(services).mode = "fail"
    feed = services.events.subscribe(capacity=10)
    refused = await client.post(
        "/access/v1/evaluation", json=evaluation(), headers=as_(agent_token)
    )
    assert refused.status_code == 503
    [event] = feed.drain()
    assert (event.data["effect"], event.data["audit_failed"]) == ("deny", True)


async def test_a_full_monitor_queue_never_blocks_or_changes_a_decision(
    client: httpx.AsyncClient, services: Services, agent_token: str
) -> None:
    feed = services.events.subscribe(capacity=1)
    answers = [
        await client.post("/access/v1/evaluation", json=evaluation(), headers=as_(agent_token))
        for _ in range(3)
    ]
    assert [a.json()["decision"] for a in answers] == [True, True, True]
    assert (len(feed.drain()), feed.dropped) == (1, 2)
    assert services.events.dropped == 2


@pytest.mark.parametrize(
    ("flag", "explained"),
    [("yes", True), ("TRUE", True), ("1", True), ("t", True), ("off", False), ("n", False)],
)
async def test_explain_takes_the_usual_boolean_spellings(
    client: httpx.AsyncClient, agent_token: str, flag: str, explained: bool
) -> None:
    answer = await client.post(
        "/access/v1/evaluation",
        json=evaluation(),
        headers=as_(agent_token),
        params={"explain": flag},
    )
    assert ("policy_ids" in answer.json()["context"]) is explained


async def test_explain_that_is_not_a_boolean_is_400(
    client: httpx.AsyncClient, agent_token: str
) -> None:
    for path, body in (("/access/v1/evaluation", evaluation()), ("/access/v1/evaluations", {})):
        answer = await client.post(
            path, json=body, headers=as_(agent_token), params={"explain": "maybe"}
        )
        assert (answer.status_code, answer.json()["error"]["details"]["field"]) == (
            400,
            "explain",
        )


async def test_other_methods_on_the_decision_paths_are_405(client: httpx.AsyncClient) -> None:
    assert (await client.get("/access/v1/evaluation")).status_code == 405
    assert (await client.put("/access/v1/evaluations", json={})).status_code == 405


async def test_decision_body_over_the_cap_is_413_before_any_parsing(
    client: httpx.AsyncClient, services: Services, agent_token: str
) -> None:
    huge = b'{"pad": "' + b"x" * (services.settings.max_body_bytes + 1) + b'"}'
    answer = await client.post(
        "/access/v1/evaluation",
        content=huge,
        headers=as_(agent_token) | {"content-type": "application/json"},
    )
    assert (answer.status_code, answer.json()["error"]["code"]) == (413, "body_too_large")


async def test_an_unexpected_fault_on_the_decision_path_is_a_500_without_internals(
    services: Services, agent_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(_request: object) -> object:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(services.checkpoint, "check", broken)
    app = create_app(services.settings, services=services)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
        answer = await client.post(
            "/access/v1/evaluation", json=evaluation(), headers=as_(agent_token)
        )
    assert answer.status_code == 500
    assert answer.json() == {
        "error": {"code": "internal_error", "message": "internal error", "details": {}}
    }
    assert "secret" not in answer.text


async def test_a_streamed_body_over_the_cap_is_413_and_logs_nothing_unexpected(
    client: httpx.AsyncClient, services: Services, agent_token: str
) -> None:
    chunk = b"x" * 8192
    chunks = services.settings.max_body_bytes // len(chunk) + 2

    async def body() -> AsyncIterator[bytes]:  # no Content-Length: the cap counts as it reads
        yield b'{"pad": "'
        for _ in range(chunks):
            yield chunk
        yield b'"}'

    with capture_logs() as logs:
        answer = await client.post(
            "/access/v1/evaluation",
            content=body(),
            headers=as_(agent_token) | {"content-type": "application/json"},
        )
    assert (answer.status_code, answer.json()["error"]["code"]) == (413, "body_too_large")
    assert not [e for e in logs if e["event"] == "unhandled_error"]


@pytest.mark.parametrize("media", ["text/plain", "application/x-www-form-urlencoded"])
async def test_a_body_that_is_not_declared_json_is_415(
    client: httpx.AsyncClient, agent_token: str, media: str
) -> None:
    answer = await client.post(
        "/access/v1/evaluation",
        content=json.dumps(evaluation()).encode(),
        headers=as_(agent_token) | {"content-type": media},
    )
    error = answer.json()["error"]
    assert (answer.status_code, error["code"], error["details"]["field"]) == (
        415,
        "unsupported_media_type",
        "content-type",
    )


async def test_json_with_a_charset_or_a_json_suffix_is_accepted(
    client: httpx.AsyncClient, agent_token: str
) -> None:
    for media in ("application/json; charset=utf-8", "application/authzen+json"):
        answer = await client.post(
            "/access/v1/evaluation",
            content=json.dumps(evaluation()).encode(),
            headers=as_(agent_token) | {"content-type": media},
        )
        assert answer.json()["decision"] is True, media


async def test_the_next_decision_follows_a_changed_declaration_not_a_kept_entity(
    client: httpx.AsyncClient, agent_token: str
) -> None:
    """The agent's policy entity (and its Cedar form) are kept per registry record: a change
    to the record is a new entity at once, on this replica."""
    declared_only = (
        '@id("declared-tools-only")\n@reason("the agent did not declare this tool")\n'
        'forbid (principal, action == Tether::Action::"call_tool", resource)\n'
        "unless { principal.tools.contains(resource.name) };"
    )
    applied = await client.post("/v1/policies", json={"text": POLICIES + declared_only})
    assert applied.status_code == 201, applied.text
    first = await client.post("/access/v1/evaluation", json=evaluation(), headers=as_(agent_token))
    assert first.json()["decision"] is True
    narrowed = {"declarations": {"tools": ["transfer"]}}  # search_faq no longer declared
    changed = await client.patch("/v1/agents/faq-bot", json=narrowed)
    assert changed.status_code == 200, changed.text
    answer = await client.post(
        "/access/v1/evaluation",
        json=evaluation(),
        headers=as_(agent_token),
        params={"explain": "true"},
    )
    assert answer.json()["decision"] is False
    assert answer.json()["context"]["policy_ids"] == ["declared-tools-only"]


async def test_a_replica_that_cannot_compile_the_active_set_denies_and_is_not_ready(
    client: httpx.AsyncClient, services: Services, agent_token: str
) -> None:
    """Rolling upgrade: the active set was written for a schema this replica does not know.
    Deciding on its older set would allow what the active one forbids, so it denies."""

    class OlderEngine(CedarEngine):
        def compile(self, text: str, *, version: int | None) -> CedarPolicies:
            if version is not None and version > 1:
                raise InvalidPolicySet(f"unknown to this schema: v{version}")
            return super().compile(text, version=version)

    older = await PolicySets.open(
        store=services.store, engine=OlderEngine(), audit=services.audit, clock=services.clock
    )
    services.policies = older
    services.checkpoint = Checkpoint(
        svids=services.svids,
        policies=older,
        engine=services.checkpoint._engine,
        audit=services.audit,
        clock=services.clock,
        directory=services.directory,
    )
    allowed = await client.post(
        "/access/v1/evaluation", json=evaluation(), headers=as_(agent_token)
    )
    assert allowed.json()["decision"] is True  # v1, compiled here
    assert (await client.get("/readyz")).status_code == 200
    newer = (
        POLICIES
        + '\n@id("v2-rule")\npermit (principal, action == Tether::Action::"read", resource);'
    )
    stored = await services.store.add_policy_set(
        text=newer,
        sha256="0" * 64,
        created_at=services.clock.now(),
        created_by="operator:other-replica",
        comment=None,
        activate=True,
        expected_active=1,
    )
    with pytest.raises(InvalidPolicySet):
        await older.refresh()
    refused = await client.post(
        "/access/v1/evaluation", json=evaluation(), headers=as_(agent_token), params={"explain": 1}
    )
    assert refused.json()["decision"] is False
    assert refused.json()["context"]["reasons"] == [
        f"the active policy set v{stored.version} cannot be compiled here"
    ]
    ready = await client.get("/readyz")
    assert (ready.status_code, ready.json()["status"]) == (503, "unavailable")

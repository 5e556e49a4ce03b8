"""OCSF export: each record type lands in its OCSF 1.3.0 class and activity, with the record's
time, id, correlation and position; nothing large or unmapped is copied wholesale; a malformed
record is refused."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tether.audit.ocsf import OCSF_VERSION, to_ocsf
from tether.audit.records import AuditRecord, Outcome

LOG = "tether.example/audit/r1"
#: 2026-12-01T12:30:15.123456Z, written with a +02:00 offset.
TIME = datetime(2026, 12, 1, 14, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
TIME_MS = 1796128215123
AGENT = "spiffe://acme.org/agent/faq-bot"
INSTANCE = f"{AGENT}/i/pod-1"


def decision(*, effect: str, action: str, **extra: object) -> AuditRecord:
    allowed = effect == "allow"
    details: dict[str, object] = {
        "decision_id": "dec_1",
        "enforcement_point": "mcp",
        "agent": "faq-bot",
        "instance": "pod-1",
        "risk_tier": "low",
        "action": action,
        "resource": 'Tool::"search_faq"',
        "effect": effect,
        "policy_ids": ["faq-bot-may-search"] if allowed else ["no-deletes"],
        "policy_version": 4,
        "reasons": [] if allowed else ["forbidden by no-deletes", "agent is not an owner"],
        "obligations": [],
        "call_digest": "sha256:0f1e",
        "request": '{"principal": "..."}',
    }
    return AuditRecord.new(
        type="decision",
        actor=INSTANCE,
        subject='Tool::"search_faq"',
        time=TIME,
        outcome=Outcome.SUCCESS if allowed else Outcome.FAILURE,
        correlation_id="corr-42",
        details=details | extra,
    )


def change(
    type: str,
    details: dict[str, object],
    *,
    actor: str = "operator:alice",
    subject: str | None = AGENT,
    outcome: Outcome = Outcome.SUCCESS,
) -> AuditRecord:
    return AuditRecord.new(
        type=type,
        actor=actor,
        subject=subject,
        time=TIME,
        outcome=outcome,
        correlation_id="corr-42",
        details=details,
    )


# (record, class_uid, category_uid, activity_id, status_id)
CASES = {
    "decision allow": (decision(effect="allow", action="call_tool"), 6003, 6, 99, 1),
    "decision read": (decision(effect="allow", action="read"), 6003, 6, 2, 1),
    "decision deny with reasons": (decision(effect="deny", action="delete"), 6003, 6, 4, 2),
    "agent.registered": (change("agent.registered", {"name": "faq-bot"}), 3004, 3, 1, 1),
    "agent.state_changed to suspended": (
        change("agent.state_changed", {"from": "active", "to": "suspended", "reason": "x"}),
        3004,
        3,
        12,
        1,
    ),
    "agent.state_changed to quarantined": (
        change("agent.state_changed", {"from": "active", "to": "quarantined"}),
        3004,
        3,
        3,
        1,
    ),
    "agent.key_added": (change("agent.key_added", {"kid": "k1", "alg": "ES256"}), 3004, 3, 1, 1),
    "svid.revoked": (
        change(
            "svid.revoked",
            {"revocation_id": "rev_1", "kind": "jti", "target": "jti-9", "reason": "leaked"},
        ),
        3004,
        3,
        99,
        1,
    ),
    "client.authentication_failed": (
        change(
            "client.authentication_failed",
            {"method": "private_key_jwt", "reason": "no_matching_key"},
            actor="unauthenticated",
            subject=AGENT,
            outcome=Outcome.FAILURE,
        ),
        3002,
        3,
        1,
        2,
    ),
    "svid.jwt_issued": (
        change(
            "svid.jwt_issued",
            {"jti": "jti-9", "exp": 1796128515, "aud": ["mcp"], "kid": "k1"},
            actor=INSTANCE,
            subject=INSTANCE,
        ),
        3002,
        3,
        1,
        1,
    ),
    "keyring.key_created": (
        change(
            "keyring.key_created",
            {"purpose": "jwt", "kid": "k2"},
            actor="system:tether",
            subject="key:k2",
        ),
        3004,
        3,
        1,
        1,
    ),
    "operator.token_created": (
        change(
            "operator.token_created",
            {"token_id": "opt_1", "role": "developer", "expires_at": "None"},
            subject="operator:bob",
        ),
        3004,
        3,
        1,
        1,
    ),
    "a change that failed to apply": (
        change("agent.registered", {"name": "faq-bot"}).failure("conflict", time=TIME),
        3004,
        3,
        1,
        2,
    ),
    # A type this version does not know (written by a newer one): made past AuditRecord.new.
    "an unknown type": (
        replace(change("agent.updated", {"grant_id": "g1"}), type="grant.frobnicated"),
        3004,
        3,
        99,
        1,
    ),
}


@pytest.mark.parametrize(
    ("record", "class_uid", "category_uid", "activity_id", "status_id"),
    CASES.values(),
    ids=CASES.keys(),
)
def test_each_record_type_maps_to_its_class_activity_and_status(
    record: AuditRecord, class_uid: int, category_uid: int, activity_id: int, status_id: int
) -> None:
    event = to_ocsf(record.to_dict(), log=LOG, index=17)
    assert (event["class_uid"], event["category_uid"]) == (class_uid, category_uid)
    assert (event["activity_id"], event["status_id"]) == (activity_id, status_id)
    assert event["type_uid"] == class_uid * 100 + activity_id
    assert event["status"] == ("Success" if status_id == 1 else "Failure")
    assert isinstance(event["activity_name"], str)
    assert event["activity_name"]


@pytest.mark.parametrize("record", [case[0] for case in CASES.values()], ids=CASES.keys())
def test_every_event_carries_the_records_time_identity_and_position(record: AuditRecord) -> None:
    event = to_ocsf(record.to_dict(), log=LOG, index=17)
    assert event["time"] == TIME_MS
    assert event["timezone_offset"] == 120
    metadata = event["metadata"]
    assert isinstance(metadata, dict)
    assert metadata["version"] == OCSF_VERSION == "1.3.0"
    assert metadata["product"] == {
        "name": "Tether",
        "vendor_name": "Tether",
        "version": metadata["product"]["version"],
    }
    assert metadata["uid"] == record.id
    assert metadata["correlation_uid"] == record.correlation_id
    assert (metadata["log_name"], metadata["sequence"]) == (LOG, 17)
    assert metadata["event_code"] == record.type


@pytest.mark.parametrize("record", [case[0] for case in CASES.values()], ids=CASES.keys())
def test_every_event_is_plain_json(record: AuditRecord) -> None:
    event = to_ocsf(record.to_dict(), log=LOG, index=0)
    assert json.loads(json.dumps(event, allow_nan=False)) == event


def test_time_in_milliseconds_is_exact_for_any_offset() -> None:
    record = change("agent.updated", {}).to_dict()
    for text in ("2026-12-01T12:30:15.123999+00:00", "2026-12-01T07:30:15.123999-05:00"):
        assert to_ocsf(record | {"time": text}, log=LOG, index=0)["time"] == TIME_MS


def test_a_deny_is_a_failure_with_its_reasons_and_determining_policies() -> None:
    event = to_ocsf(decision(effect="deny", action="delete").to_dict(), log=LOG, index=0)
    assert event["status_detail"] == "forbidden by no-deletes; agent is not an owner"
    assert (event["severity_id"], event["severity"]) == (2, "Low")
    actor = event["actor"]
    assert isinstance(actor, dict)
    assert actor["authorizations"] == [
        {"decision": "deny", "policy": {"uid": "no-deletes", "name": "no-deletes", "version": "4"}}
    ]


def test_a_decision_names_the_agent_the_call_and_the_resource() -> None:
    event = to_ocsf(decision(effect="allow", action="call_tool").to_dict(), log=LOG, index=0)
    assert event["activity_name"] == "call_tool"
    assert "status_detail" not in event
    actor = event["actor"]
    assert isinstance(actor, dict)
    assert (actor["app_name"], actor["app_uid"]) == ("faq-bot", INSTANCE)
    assert "user" not in actor  # no delegated user: the agent acts for itself
    assert event["api"] == {"operation": "call_tool", "request": {"uid": "dec_1"}}
    assert event["resources"] == [
        {"uid": 'Tool::"search_faq"', "type": "Tool", "name": "search_faq"}
    ]
    assert event["src_endpoint"] == {"uid": "pod-1", "name": "faq-bot"}


def test_the_large_request_is_not_copied_but_the_small_facts_are_kept() -> None:
    request = json.dumps({"context": {"arguments": "x" * 100_000}})
    record = decision(effect="allow", action="call_tool", request=request)
    event = to_ocsf(record.to_dict(), log=LOG, index=0)
    dumped = json.dumps(event)
    assert "x" * 100 not in dumped
    assert len(dumped) < 4_000
    unmapped = event["unmapped"]
    assert isinstance(unmapped, dict)
    assert "request" not in unmapped
    assert unmapped["call_digest"] == "sha256:0f1e"
    assert unmapped["policy_version"] == 4
    assert unmapped["obligations"] == []


def test_delegation_details_are_mapped_when_present() -> None:
    record = decision(
        effect="allow",
        action="read",
        user="alice@acme.org",
        act=["spiffe://acme.org/agent/planner/i/p1"],
        session="sess_1",
        grant_id="grt_1",
        purpose="support",
        approval_id="apr_1",
        approver="operator:bob",
        lease_id="lse_1",
    )
    event = to_ocsf(record.to_dict(), log=LOG, index=0)
    actor = event["actor"]
    assert isinstance(actor, dict)
    assert actor["user"] == {
        "uid": "alice@acme.org",
        "name": "alice@acme.org",
        "type_id": 1,
        "type": "User",
    }
    assert actor["session"] == {"uid": "sess_1"}
    unmapped = event["unmapped"]
    assert isinstance(unmapped, dict)
    assert unmapped["act"] == ["spiffe://acme.org/agent/planner/i/p1"]
    for key, value in {
        "grant_id": "grt_1",
        "purpose": "support",
        "approval_id": "apr_1",
        "approver": "operator:bob",
        "lease_id": "lse_1",
    }.items():
        assert unmapped[key] == value


def test_an_authentication_failure_names_the_claimed_subject_and_the_reason() -> None:
    record = change(
        "client.authentication_failed",
        {"method": "private_key_jwt", "reason": "unknown_client", "claimed_client_id": "evil"},
        actor="unauthenticated",
        subject=None,
        outcome=Outcome.FAILURE,
    )
    event = to_ocsf(record.to_dict(), log=LOG, index=0)
    assert event["user"] == {"uid": "evil", "name": "evil", "type_id": 0, "type": "Unknown"}
    assert event["status_detail"] == "unknown_client"
    assert event["activity_name"] == "Logon"


def test_an_issued_jwt_svid_is_a_logon_whose_token_is_the_session() -> None:
    record, *_ = CASES["svid.jwt_issued"]
    event = to_ocsf(record.to_dict(), log=LOG, index=0)
    assert event["user"] == {"uid": INSTANCE, "name": "faq-bot", "type_id": 99, "type": "Agent"}
    assert event["session"] == {"uid": "jti-9", "expiration_time": 1796128515000}
    assert (event["auth_protocol_id"], event["auth_protocol"]) == (6, "OAUTH 2.0")


def test_a_managed_entity_is_named_by_its_identifying_detail() -> None:
    registered = to_ocsf(CASES["agent.registered"][0].to_dict(), log=LOG, index=0)
    assert registered["entity"] == {
        "type": "Agent",
        "uid": AGENT,
        "name": "faq-bot",
        "data": {"name": "faq-bot"},
    }
    revoked = to_ocsf(CASES["svid.revoked"][0].to_dict(), log=LOG, index=0)
    entity = revoked["entity"]
    assert isinstance(entity, dict)
    assert (entity["type"], entity["uid"]) == ("SVID", "jti-9")
    assert (revoked["activity_name"], revoked["comment"]) == ("Revoke", "leaked")
    assert revoked["unmapped"] == {"subject": AGENT}


def test_an_unknown_type_is_an_other_entity_activity_named_by_the_type() -> None:
    event = to_ocsf(CASES["an unknown type"][0].to_dict(), log=LOG, index=0)
    assert (event["activity_id"], event["activity_name"]) == (99, "grant.frobnicated")
    assert event["entity"] == {"type": "grant", "uid": AGENT, "data": {"grant_id": "g1"}}


def test_operators_and_the_system_are_users_of_their_kind() -> None:
    operator = to_ocsf(CASES["agent.registered"][0].to_dict(), log=LOG, index=0)
    system = to_ocsf(CASES["keyring.key_created"][0].to_dict(), log=LOG, index=0)
    assert operator["actor"] == {
        "user": {"uid": "operator:alice", "name": "alice", "type_id": 1, "type": "User"}
    }
    assert system["actor"] == {
        "user": {"uid": "system:tether", "name": "tether", "type_id": 3, "type": "System"}
    }


def test_the_input_record_is_not_changed() -> None:
    record = decision(effect="deny", action="delete").to_dict()
    before = json.dumps(record, sort_keys=True)
    to_ocsf(record, log=LOG, index=0)
    assert json.dumps(record, sort_keys=True) == before


@pytest.mark.parametrize("key", ["id", "type", "time", "actor", "outcome"])
def test_a_record_missing_a_required_key_is_refused(key: str) -> None:
    record = change("agent.registered", {}).to_dict()
    del record[key]
    with pytest.raises(ValueError, match=f"no '{key}'"):
        to_ocsf(record, log=LOG, index=0)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("type", "", "'type' must be a non-empty string"),
        ("time", "yesterday", "not ISO 8601"),
        ("time", "2026-12-01T12:00:00", "UTC offset"),
        ("outcome", "maybe", "success or failure"),
        ("details", ["a"], "'details' must be a mapping"),
    ],
)
def test_a_malformed_record_is_refused_with_a_clear_message(
    field: str, value: object, message: str
) -> None:
    record = change("agent.registered", {}).to_dict() | {field: value}
    with pytest.raises(ValueError, match=message):
        to_ocsf(record, log=LOG, index=0)


@pytest.mark.parametrize(("log", "index"), [("", 0), (LOG, -1), (LOG, True)])
def test_a_bad_log_position_is_refused(log: str, index: int) -> None:
    with pytest.raises(ValueError, match=r"log|index"):
        to_ocsf(change("agent.registered", {}).to_dict(), log=log, index=index)


def test_a_record_time_given_as_a_datetime_is_accepted() -> None:
    record = change("agent.updated", {}).to_dict() | {"time": TIME.astimezone(UTC)}
    assert to_ocsf(record, log=LOG, index=0)["time"] == TIME_MS

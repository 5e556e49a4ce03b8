"""The posture report: each rule names exactly its problems, and the report is stable."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

import pytest

from tether.identity.models import Agent, AgentState, Declarations, RiskTier
from tether.monitor.least_privilege import Capability
from tether.monitor.models import Alert, AlertState, Severity, Usage
from tether.monitor.posture import (
    LEASE_GRACE,
    AgentAccess,
    GrantFacts,
    LeaseFacts,
    LoginFacts,
    PostureInputs,
    SecretSource,
    assess,
    standing_lease,
)
from tether.monitor.sprawl import ManagedSecret, SecretMatch, digest, match_digests

NOW = datetime(2026, 1, 31, tzinfo=UTC)
TD = "spiffe://acme.org/agent/"


def make_agent(
    name: str,
    *,
    state: AgentState = AgentState.ACTIVE,
    owners: tuple[str, ...] = ("alice",),
    tier: RiskTier = RiskTier.LOW,
    tools: tuple[str, ...] = (),
) -> Agent:
    return Agent(
        id=f"agt_{name}",
        name=name,
        spiffe_id=TD + name,
        owners=owners,
        description="",
        declarations=Declarations(tools=tools),
        state=state,
        state_reason=None,
        risk_score=10,
        risk_tier=tier,
        created_at=NOW,
        updated_at=NOW,
        created_by="root",
    )


def alert(
    kind: str,
    key: str,
    *,
    count: int = 1,
    point: str = "mcp",
    days_ago: float = 1,
    agent: str | None = None,
    state: AlertState = AlertState.OPEN,
) -> Alert:
    at = NOW - timedelta(days=days_ago)
    return Alert(
        id=f"alr_{kind}_{key}_{days_ago}",
        kind=kind,
        key=key,
        severity=Severity.HIGH,
        state=state,
        summary="",
        agent=agent,
        owners=(),
        details=MappingProxyType({"enforcement_point": point}),
        first_seen=at,
        last_seen=at,
        count=count,
    )


def lease(
    lease_id: str = "lse_1",
    *,
    state: str = "active",
    lifetime: int = 300,
    ttl: int = 60,
    role_max_ttl: int | None = 300,
    age: int = 10,
) -> LeaseFacts:
    created = NOW - timedelta(seconds=age)
    return LeaseFacts(
        id=lease_id,
        engine="pg-main",
        role="readonly",
        agent="faq-bot",
        state=state,
        created_at=created,
        expires_at=created + timedelta(seconds=ttl),
        max_expires_at=created + timedelta(seconds=lifetime),
        role_max_ttl=role_max_ttl,
    )


def problems(inputs: PostureInputs, *, days: int = 30) -> set[tuple[str, str]]:
    return {(p.kind, p.subject) for p in assess(inputs, now=NOW, days=days).problems}


def test_agent_counts_name_every_state_and_tier() -> None:
    agents = [make_agent("a"), make_agent("b", state=AgentState.SUSPENDED, tier=RiskTier.HIGH)]
    counts = assess(PostureInputs(agents=agents), now=NOW, days=30).agents
    assert counts["total"] == 2
    assert counts["by_state"] == {
        "pending_review": 0,
        "active": 1,
        "suspended": 1,
        "quarantined": 0,
        "retired": 0,
    }
    assert counts["by_tier"] == {"low": 1, "medium": 0, "high": 1, "critical": 0}


@pytest.mark.parametrize(
    ("owners", "people", "state", "reason"),
    [
        (("bob",), {"bob": False}, AgentState.ACTIVE, "owners_disabled"),
        (
            ("bob", "carol@acme.org"),
            {"bob": False, "carol@acme.org": False},
            AgentState.SUSPENDED,
            "owners_disabled",
        ),
        ((), {}, AgentState.ACTIVE, "no_owners"),
        (("bob", "carol"), {"bob": False, "carol": True}, AgentState.ACTIVE, None),
        (("bob",), {}, AgentState.ACTIVE, None),  # unknown: cannot be judged
        (("bob",), {"bob": False}, AgentState.RETIRED, None),  # retired: nobody needs to
    ],
)
def test_agent_without_owner_is_one_whose_every_owner_is_gone(
    owners: tuple[str, ...], people: dict[str, bool], state: AgentState, reason: str | None
) -> None:
    inputs = PostureInputs(agents=[make_agent("x", owners=owners, state=state)], people=people)
    report = assess(inputs, now=NOW, days=30)
    assert [o.reason for o in report.ownerless_agents] == ([reason] if reason else [])
    assert problems(inputs) == ({("agent_without_owner", "x")} if reason else set())


def test_unregistered_caller_leaves_out_identities_now_in_the_registry() -> None:
    agents = [make_agent("crm-bot")]
    alerts = [
        alert("unknown_caller", "ghost-bot", count=3),
        alert(
            "unknown_caller",
            "ghost-bot",
            count=2,
            days_ago=3,
            point="ext_authz",
            state=AlertState.RESOLVED,
        ),
        alert("unknown_caller", TD + "evil-bot/i/pod-1"),
        alert("unknown_caller", "crm-bot"),
        alert("unknown_caller", TD + "crm-bot"),
        alert("unknown_caller", TD + "crm-bot/i/pod-9"),
        alert("unknown_caller", "spiffe://evil.org/agent/crm-bot"),
    ]
    report = assess(PostureInputs(agents=agents, alerts=alerts), now=NOW, days=30)
    seen = {s.key: s for s in report.unregistered_callers}
    assert set(seen) == {"ghost-bot", TD + "evil-bot/i/pod-1", "spiffe://evil.org/agent/crm-bot"}
    ghost = seen["ghost-bot"]
    assert (ghost.count, ghost.enforcement_points) == (5, ("ext_authz", "mcp"))
    assert ghost.first_seen == NOW - timedelta(days=3)
    assert {p.kind for p in report.problems} == {"unregistered_caller"}


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        (lease(), None),
        (lease(state="irrevocable"), "irrevocable"),
        (lease(state="revoking", age=400), "live_past_max_expiry"),  # max expiry + 60 s grace
        (lease(state="revoking", age=330), None),  # within the reaper's grace
        (lease(lifetime=7200), "longer_than_role_max_ttl"),
        (lease(lifetime=7200, role_max_ttl=None), None),  # the role is gone: nothing to hold to
        (lease(ttl=600, lifetime=300), "expiry_past_max"),
    ],
)
def test_lease_beyond_max_ttl(facts: LeaseFacts, reason: str | None) -> None:
    assert standing_lease(facts, now=NOW, grace=LEASE_GRACE) == reason
    expected = {("lease_beyond_max_ttl", facts.id)} if reason else set()
    assert problems(PostureInputs(agents=[], leases=[facts])) == expected


def test_grant_beyond_max_ttl_is_a_standing_grant() -> None:
    day = timedelta(days=1)
    grants = [
        GrantFacts(
            id="grt_ok",
            user="alice",
            agent="crm-bot",
            created_at=NOW - day,
            expires_at=NOW + 29 * day,
        ),
        GrantFacts(
            id="grt_long",
            user="bob",
            agent="crm-bot",
            created_at=NOW - day,
            expires_at=NOW + 729 * day,
        ),
    ]
    inputs = PostureInputs(agents=[], grants=grants, grant_max_ttl=30 * 24 * 3600)
    report = assess(inputs, now=NOW, days=30)
    assert [(g.grant.id, g.lifetime_seconds) for g in report.standing_grants] == [
        ("grt_long", 730 * 24 * 3600)
    ]
    assert problems(inputs) == {("grant_beyond_max_ttl", "grt_long")}


def test_unmanaged_logins_and_engines_not_scanned_are_problems() -> None:
    inputs = PostureInputs(
        agents=[],
        logins=[
            LoginFacts(engine="pg-main", login="legacy_app"),
            LoginFacts(engine="pg-old", login="etl", source="alert"),
        ],
        scan_failures=[("pg-old", "engine_unavailable")],
    )
    assert problems(inputs) == {
        ("unmanaged_login", "pg-main/legacy_app"),
        ("unmanaged_login", "pg-old/etl"),
        ("engine_scan_failed", "pg-old"),
    }


def test_user_credential_used_names_the_user_whose_token_an_agent_presented() -> None:
    alerts = [
        alert("impersonation", "alice", agent="crm-bot", count=2),
        alert("impersonation", "alice", point="ext_authz", days_ago=2),
    ]
    report = assess(PostureInputs(agents=[], alerts=alerts), now=NOW, days=30)
    (seen,) = report.user_credentials
    assert (seen.key, seen.count, seen.agents) == ("alice", 3, ("crm-bot",))
    assert {(p.kind, p.subject, p.agent) for p in report.problems} == {
        ("user_credential_used", "alice", "crm-bot")
    }


def test_unused_permissions_cover_active_agents_only() -> None:
    agents = [
        make_agent("crm-bot", tools=("crm/search", "crm/delete")),
        make_agent("old-bot", state=AgentState.SUSPENDED, tools=("x",)),
    ]
    access = [
        AgentAccess(
            agent="crm-bot",
            allowed=(
                Capability("call_tool", 'Tool::"crm/delete"'),
                Capability("call_tool", 'Tool::"crm/search"'),
            ),
        )
    ]
    usage = [
        Usage(
            agent="crm-bot",
            action="call_tool",
            resource='Tool::"crm/search"',
            last_used=NOW - timedelta(days=1),
            count=4,
        )
    ]
    inputs = PostureInputs(agents=agents, access=access, usage=usage)
    report = assess(inputs, now=NOW, days=30)
    assert [r.agent for r in report.least_privilege] == ["crm-bot"]
    assert problems(inputs) == {
        ("unused_declaration", "crm-bot: tools crm/delete"),
        ("unused_permission", 'crm-bot: call_tool Tool::"crm/delete"'),
    }
    assert 'resource == Tether::Tool::"crm/search"' in report.least_privilege[0].policy


def test_report_json_is_stable_sorted_and_every_problem_has_a_kind() -> None:
    inputs = PostureInputs(
        agents=[make_agent("b-bot", owners=("bob",)), make_agent("a-bot", owners=("bob",))],
        people={"bob": False},
        leases=[lease("lse_2", state="irrevocable"), lease("lse_1", state="irrevocable")],
        sources=[
            SecretSource(
                engine="vault",
                kind="vault",
                location={},
                roles=("crm",),
                secret_set=True,
                secrets=2,
            ),
            SecretSource(
                engine="pg-main",
                kind="postgres",
                location={"host": "db"},
                roles=("readonly",),
                secret_set=True,
            ),
        ],
    )
    first = assess(inputs, now=NOW, days=30).to_json()
    again = assess(replace(inputs, agents=list(reversed(inputs.agents))), now=NOW, days=30)
    assert json.dumps(first, sort_keys=True) == json.dumps(again.to_json(), sort_keys=True)
    subjects = [(p["kind"], p["subject"]) for p in first["problems"]]
    assert subjects == sorted(subjects)
    assert subjects == [
        ("agent_without_owner", "a-bot"),
        ("agent_without_owner", "b-bot"),
        ("lease_beyond_max_ttl", "lse_1"),
        ("lease_beyond_max_ttl", "lse_2"),
    ]
    standing = first["standing_privileges"]
    assert [x["lease_id"] for x in standing["leases"]] == ["lse_1", "lse_2"]
    assert all(x["kind"] == "lease_beyond_max_ttl" for x in standing["leases"])
    assert [s["engine"] for s in first["secret_sources"]] == ["pg-main", "vault"]
    assert first["secret_sources"][1]["secrets"] == 2


def test_a_clean_fleet_has_no_problems() -> None:
    inputs = PostureInputs(agents=[make_agent("a-bot")], people={"alice": True}, leases=[lease()])
    assert assess(inputs, now=NOW, days=30).problems == ()


# -- secret sprawl ---------------------------------------------------------------------------


def test_found_secret_digest_matches_the_engine_that_holds_it_and_nothing_else() -> None:
    held = [
        ManagedSecret(engine="pg-main", kind="postgres", name="tether", sha256=digest("pw-1")),
        ManagedSecret(engine="vault", kind="vault", name="crm-api-key", sha256=digest("k-123")),
        ManagedSecret(engine="pg-copy", kind="postgres", name="tether", sha256=digest("pw-1")),
    ]
    found = [digest("pw-1"), digest("unmanaged"), digest("k-123").upper()]
    assert match_digests(found, held) == sorted(
        [
            SecretMatch(digest=digest("pw-1"), engine="pg-copy", kind="postgres", name="tether"),
            SecretMatch(digest=digest("pw-1"), engine="pg-main", kind="postgres", name="tether"),
            SecretMatch(digest=digest("k-123"), engine="vault", kind="vault", name="crm-api-key"),
        ]
    )
    assert match_digests([], held) == []

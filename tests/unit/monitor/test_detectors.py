"""Detectors by event and over a window (pure: events in, findings out)."""

from __future__ import annotations

from typing import Any

import pytest

from tether.identity.models import Declarations
from tether.monitor.detectors import (
    KINDS,
    DecisionRules,
    EventRules,
    OutOfDeclaration,
    Thresholds,
)
from tether.monitor.events import Event
from tether.monitor.least_privilege import covers
from tether.monitor.models import Severity
from tether.monitor.windows import DeniedBurst, RateSpikes


def decision(at: float = 0.0, **data: Any) -> Event:
    return Event(type="decision", time=at, data={"effect": "allow", **data})


@pytest.mark.parametrize(
    ("event", "kind", "key"),
    [
        (Event(type="impersonation", time=0, data={"subject": "alice",
                                                   "enforcement_point": "mcp"}),
         "impersonation", "alice"),
        (Event(type="lease.revocation_failed", time=0, data={"id": "lse_1", "agent": "bot",
                                                             "error": "engine_unavailable"}),
         "lease_revocation_failed", "lse_1"),
        (Event(type="lease.irrevocable", time=0, data={"id": "lse_1", "agent": "bot"}),
         "lease_irrevocable", "lse_1"),
        (Event(type="credential.unmanaged_login", time=0, data={"engine": "pg",
                                                                "login": "mallory"}),
         "unmanaged_login", "pg/mallory"),
        (Event(type="credential.scan_failed", time=0, data={"engine": "pg", "error": "x"}),
         "credential_scan_failed", "pg"),
        (Event(type="lease.sweep_failed", time=0, data={"engine": "pg", "error": "x"}),
         "lease_sweep_failed", "pg"),
        (Event(type="audit.sink_failed", time=0, data={"log": "r1", "error": "disk"}),
         "audit_sink_failed", "r1"),
        (Event(type="audit.witness_failed", time=0, data={"log": "r1", "witness": "w"}),
         "audit_witness_failed", "r1"),
        (Event(type="audit.log_invalid", time=0, data={"log": "r1"}), "audit_log_invalid", "r1"),
        (Event(type="policy.refresh_failed", time=0, data={"error": "store_unavailable"}),
         "policy_store_failed", "refresh"),
        (Event(type="alert", time=0, data={"kind": "tool_definition_changed", "server": "crm",
                                           "tool": "search"}),
         "tool_definition_changed", "crm/search"),
        (Event(type="alert", time=0, data={"kind": "tool_held", "server": "crm",
                                           "tool": "new"}),
         "tool_held", "crm/new"),
    ],
)  # fmt: skip
async def test_each_reported_trouble_is_a_finding_of_its_kind(
    event: Event, kind: str, key: str
) -> None:
    [found] = await EventRules().observe(event)
    assert (found.kind, found.key, found.severity) == (kind, key, KINDS[kind])


async def test_events_that_are_no_trouble_are_no_finding() -> None:
    rules = EventRules()
    assert await rules.observe(Event(type="audit.sink_recovered", time=0, data={})) == []
    assert await rules.observe(decision()) == []


@pytest.mark.parametrize(
    ("data", "kinds"),
    [
        ({"refusal": "revoked", "presented": "spiffe://td/agent/bot/i/1"},
         ["revoked_credential_used"]),
        ({"refusal": "unknown_agent", "presented": "spiffe://td/agent/ghost/i/1"},
         ["unknown_caller"]),
        ({"refusal": "invalid_token", "refusal_cause": "bad_signature", "presented": "x"},
         ["unknown_caller"]),
        ({"refusal": "invalid_token", "refusal_cause": None, "presented": None},
         ["unknown_caller"]),
        # An agent whose token aged out is routine, not an intruder.
        ({"refusal": "invalid_token", "refusal_cause": "expired", "presented": "x"}, []),
        ({"refusal": "invalid_token", "refusal_cause": "wrong_audience", "presented": "x"}, []),
        ({"refusal": "agent_not_active", "presented": "x"}, []),
        ({"refusal": "chain_too_deep", "agent": "bot"}, ["chain_too_deep"]),
        ({"refusal": "policy_unusable", "agent": "bot"}, ["policy_store_failed"]),
        ({"audit_failed": True}, ["audit_sink_failed"]),
        ({"effect": "deny"}, []),
    ],
)  # fmt: skip
async def test_refused_decisions_are_findings_by_their_refusal(
    data: dict[str, Any], kinds: list[str]
) -> None:
    assert [f.kind for f in await DecisionRules().observe(decision(**data))] == kinds


async def test_a_revoked_agent_token_names_the_agent_a_revoked_user_token_does_not() -> None:
    rules = DecisionRules()
    [agent] = await rules.observe(
        decision(refusal="revoked", presented="spiffe://td/agent/bot/i/pod-1")
    )
    [user] = await rules.observe(decision(refusal="revoked", presented="alice"))
    assert (agent.agent, user.agent) == ("bot", None)


async def test_an_unreadable_token_is_one_unknown_caller() -> None:
    [found] = await DecisionRules().observe(decision(refusal="invalid_token"))
    assert found.key == "unreadable"


@pytest.mark.parametrize(
    ("declared", "uid", "expected"),
    [
        (Declarations(tools=("search",)), 'Tool::"crm/search"', True),
        (Declarations(tools=("crm/search",)), 'Tool::"crm/search"', True),
        (Declarations(tools=("crm/*",)), 'Tool::"crm/delete"', True),
        (Declarations(tools=("search",)), 'Tool::"crm/delete"', False),
        # A tool name declared is not a database, and the other way round.
        (Declarations(tools=("faq",)), 'Database::"faq"', False),
        (Declarations(resources=("faq",)), 'Database::"faq"', True),
        (Declarations(resources=('Database::"faq"',)), 'Database::"faq"', True),
        (Declarations(resources=("faq",)), 'Tool::"faq"', False),
        # A kind prefix, and a database's tables, as the posture reads declarations too.
        (Declarations(resources=("postgres:faq",)), 'Database::"faq"', True),
        (Declarations(resources=("faq",)), 'Table::"faq.public.answers"', True),
        (Declarations(resources=("faq",)), 'Table::"faqs.public.answers"', False),
    ],
)
def test_what_counts_as_declared(declared: Declarations, uid: str, expected: bool) -> None:
    assert covers(declared, uid) is expected


async def test_use_of_an_undeclared_resource_is_out_of_declaration() -> None:
    async def declarations(name: str) -> Declarations | None:
        return Declarations(tools=("search_faq",)) if name == "bot" else None

    detector = OutOfDeclaration(declarations)
    used = decision(agent="bot", action="call_tool", resource='Tool::"transfer"', effect="deny")
    [found] = await detector.observe(used)
    # One alert per agent (the resource is in its details), not one per resource.
    assert (found.kind, found.agent, found.key) == ("out_of_declaration", "bot", "bot")
    assert found.details["resource"] == 'Tool::"transfer"'
    assert await detector.observe(decision(agent="bot", resource='Tool::"search_faq"')) == []
    # Unknown agents and refusals before any policy ran are not uses.
    assert await detector.observe(decision(agent="ghost", resource='Tool::"x"')) == []
    refused = decision(agent="bot", resource='Tool::"transfer"', refusal="chain_too_deep")
    assert await detector.observe(refused) == []


def test_a_burst_is_said_once_per_window_per_agent() -> None:
    burst = DeniedBurst(limit=3, window=10.0)
    said = [burst.observe_now(decision(at=t, agent="bot", effect="deny")) for t in range(6)]
    assert [len(s) for s in said] == [0, 0, 1, 0, 0, 0]
    # Another agent has its own count; an allow is not counted.
    assert burst.observe_now(decision(at=6, agent="other", effect="deny")) == []
    assert burst.observe_now(decision(at=7, agent="bot")) == []
    # A window later, a new burst is said again.
    later = [burst.observe_now(decision(at=20 + t, agent="bot", effect="deny")) for t in range(3)]
    assert [len(s) for s in later] == [0, 0, 1]


def test_denials_spread_wider_than_the_window_are_no_burst() -> None:
    burst = DeniedBurst(limit=3, window=10.0)
    assert not any(burst.observe_now(decision(at=t * 6, agent="bot", effect="deny"))
                   for t in range(10))  # fmt: skip


def spikes(**changes: Any) -> RateSpikes:
    return RateSpikes(Thresholds(spike_window=10.0, spike_min_decisions=10, **changes))


async def feed(detector: RateSpikes, start: float, n: int, **data: Any) -> None:
    for i in range(n):
        await detector.observe(decision(at=start + i * 0.01, **data))


async def test_a_deny_rate_spike_is_said_once_per_window() -> None:
    rates = spikes()
    await feed(rates, 0, 4)
    await feed(rates, 0.5, 8, effect="deny")
    [found] = rates.tick(1.0)
    assert (found.kind, found.severity) == ("deny_rate_spike", Severity.HIGH)
    assert rates.tick(2.0) == []


async def test_too_few_decisions_say_nothing() -> None:
    rates = spikes()
    await feed(rates, 0, 9, effect="deny")
    assert rates.tick(1.0) == []


async def test_a_service_that_always_denies_much_is_not_a_spike_every_window() -> None:
    rates = spikes(deny_rate=0.5, deny_rate_factor=3.0)
    said = []
    for window in range(6):  # 60% denied, window after window: the baseline learns it
        start = window * 10.0
        await feed(rates, start, 4)
        await feed(rates, start + 0.1, 6, effect="deny")
        said += [f.kind for f in rates.tick(start + 5)]
        said += [f.kind for f in rates.tick(start + 10)]
    assert said.count("deny_rate_spike") == 1  # the first window only: no baseline yet


async def test_failed_decisions_are_an_error_rate_spike() -> None:
    rates = spikes(error_rate=0.2)
    await feed(rates, 0, 8)
    await feed(rates, 0.5, 3, audit_failed=True, effect="deny")
    await feed(rates, 0.6, 1, refusal="engine_error", effect="deny")
    kinds = [f.kind for f in rates.tick(1.0)]
    assert "error_rate_spike" in kinds


async def test_the_window_forgets_old_decisions() -> None:
    rates = spikes()
    await feed(rates, 0, 20, effect="deny")
    assert rates.tick(30.0) == []

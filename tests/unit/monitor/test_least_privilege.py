"""Least privilege from observed use: unused declarations and permissions, and a suggested
policy that compiles with the real Cedar engine and allows exactly what was used."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import pytest

from tether.checkpoint._entities import agent_entity
from tether.identity.models import Agent, AgentState, Declarations, RiskTier
from tether.monitor.least_privilege import (
    Capability,
    UnusedDeclaration,
    declaration_used,
    parse_uid,
    recommend,
    suggested_policy,
)
from tether.monitor.models import Usage
from tether.policy._cedar import CedarEngine
from tether.policy.models import DecisionRequest, Effect, Entity, EntityRef

NOW = datetime(2026, 1, 31, tzinfo=UTC)
SINCE = NOW - timedelta(days=30)


def make_agent(
    name: str = "crm-bot", *, tools: tuple[str, ...] = (), resources: tuple[str, ...] = ()
) -> Agent:
    return Agent(
        id=f"agt_{name}",
        name=name,
        spiffe_id=f"spiffe://acme.org/agent/{name}",
        owners=("alice",),
        description="",
        state=AgentState.ACTIVE,
        state_reason=None,
        declarations=Declarations(tools=tools, resources=resources),
        risk_score=10,
        risk_tier=RiskTier.LOW,
        created_at=NOW,
        updated_at=NOW,
        created_by="root",
    )


def use(
    action: str, resource: str, *, agent: str = "crm-bot", days_ago: float = 1, count: int = 1
) -> Usage:
    return Usage(
        agent=agent,
        action=action,
        resource=resource,
        last_used=NOW - timedelta(days=days_ago),
        count=count,
    )


@pytest.mark.parametrize(
    ("field", "entry", "resource", "used"),
    [
        ("tools", "crm/search", 'Tool::"crm/search"', True),
        ("tools", "search", 'Tool::"crm/search"', True),  # the tool alone names it
        ("tools", "crm/*", 'Tool::"crm/search"', True),
        ("tools", "crm/delete", 'Tool::"crm/search"', False),
        ("tools", "search", 'Tool::"crm/research"', False),  # not a suffix match
        ("tools", "crm/search", 'Api::"crm/search"', False),  # a tool is a Tool
        ("resources", "postgres:faq", 'Database::"faq"', True),
        ("resources", "postgres:faq", 'Table::"faq.public.t"', True),  # a table of it
        ("resources", "pg-main", 'Database::"pg-main"', True),
        ("resources", "api:crm", 'Api::"crm"', True),
        ("resources", "postgres:faq/*", 'Table::"faq/x"', True),
        ("resources", "postgres:faq", 'Database::"faqs"', False),
        ("resources", "crm/search", 'Tool::"crm/search"', False),  # tools are tools
    ],
)
def test_declaration_is_used_when_a_use_matches_it(
    field: str, entry: str, resource: str, used: bool
) -> None:
    assert declaration_used(field, entry, [Capability("call_tool", resource)]) is used


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ('Tool::"crm/search"', ("Tool", "crm/search")),
        ('Table::"a\\"b"', ("Table", 'a\\"b')),
        ("Tool::crm", None),
        ('Tether::Tool::"x"', None),
        ("", None),
    ],
)
def test_parse_uid_reads_only_type_and_quoted_id(text: str, parsed: tuple[str, str] | None) -> None:
    assert parse_uid(text) == parsed


def test_unused_permission_is_what_is_allowed_minus_what_was_used_in_the_window() -> None:
    allowed = [
        Capability("call_tool", 'Tool::"crm/search"'),
        Capability("call_tool", 'Tool::"crm/delete"'),
        Capability("use_credential", 'Database::"pg-main"'),
    ]
    usage = [
        use("call_tool", 'Tool::"crm/search"'),
        use("use_credential", 'Database::"pg-main"', days_ago=31),
    ]
    advice = recommend(agent=make_agent(), allowed=allowed, usage=usage, since=SINCE, days=30)
    assert advice.unused_permissions == (
        Capability("call_tool", 'Tool::"crm/delete"'),
        Capability("use_credential", 'Database::"pg-main"'),  # used, but 31 days ago
    )
    assert [(u.action, u.resource) for u in advice.used] == [("call_tool", 'Tool::"crm/search"')]


def test_unused_declaration_names_each_declared_entry_no_use_matches() -> None:
    agent = make_agent(tools=("crm/search", "crm/delete"), resources=("postgres:faq",))
    advice = recommend(
        agent=agent,
        allowed=(),
        usage=[use("call_tool", 'Tool::"crm/search"')],
        since=SINCE,
        days=30,
    )
    assert advice.unused_declarations == (
        UnusedDeclaration(field="resources", entry="postgres:faq"),
        UnusedDeclaration(field="tools", entry="crm/delete"),
    )


def test_another_agents_use_does_not_count() -> None:
    agent = make_agent(tools=("crm/search",))
    usage = [use("call_tool", 'Tool::"crm/search"', agent="other-bot")]
    advice = recommend(agent=agent, allowed=(), usage=usage, since=SINCE, days=30)
    assert advice.used == ()
    assert advice.unused_declarations == (UnusedDeclaration(field="tools", entry="crm/search"),)


# -- the suggested policy, compiled and evaluated with the real engine ----------------------


def _tool(ident: str) -> Entity:
    attrs: dict[str, Any] = {"name": ident, "data_class": "internal", "state_changing": False}
    return Entity(
        ref=EntityRef("Tool", ident),
        attrs=MappingProxyType(attrs),
        parents=(EntityRef("McpServer", "crm"),),
    )


def _named(kind: str, ident: str, *parents: EntityRef) -> Entity:
    attrs = {"name": ident, "data_class": "internal"}
    return Entity(ref=EntityRef(kind, ident), attrs=MappingProxyType(attrs), parents=parents)


def _effect(text: str, agent: Agent, action: str, resource: Entity) -> Effect:
    engine = CedarEngine()
    compiled = engine.compile(text, version=1)
    context = {
        "now": int(NOW.timestamp()),
        "instance": "i1",
        "scopes": set(),
        "act_chain": set(),
        "act_depth": 0,
    }
    request = DecisionRequest(
        principal=agent_entity(agent), action=action, resource=resource, context=context
    )
    return engine.decide(compiled, request).effect


def test_suggested_policy_compiles_and_allows_exactly_the_used_pairs() -> None:
    used = [
        Capability("call_tool", 'Tool::"crm/search"'),
        Capability("call_tool", 'Tool::"crm/read"'),
        Capability("query", 'Database::"faq"'),
    ]
    text = suggested_policy("crm-bot", used, days=30)
    assert CedarEngine().check(text) == []
    agent = make_agent()
    faq = EntityRef("Database", "faq")
    cases = [
        ("call_tool", _tool("crm/search"), Effect.ALLOW),
        ("call_tool", _tool("crm/read"), Effect.ALLOW),
        ("call_tool", _tool("crm/delete"), Effect.DENY),
        ("query", _named("Database", "faq"), Effect.ALLOW),
        # a table *in* the used database is not allowed: no `resource in` widening
        ("query", _named("Table", "faq.secrets", faq), Effect.DENY),
        ("select", _named("Database", "faq"), Effect.DENY),
    ]
    for action, resource, effect in cases:
        assert _effect(text, agent, action, resource) is effect, (action, resource.ref)
    other = make_agent("other-bot")
    assert _effect(text, other, "call_tool", _tool("crm/search")) is Effect.DENY


def test_suggested_policy_escapes_quotes_backslashes_and_control_characters() -> None:
    ident = 'crm/we"ird\\name\n\u202e'
    text = suggested_policy("crm-bot", [Capability("call_tool", f'Tool::"{ident}"')], days=7)
    assert "\u202e" not in text  # the bidi override is escaped, as is the line break
    assert "\\u{202e}" in text
    assert CedarEngine().check(text) == []
    assert _effect(text, make_agent(), "call_tool", _tool(ident)) is Effect.ALLOW
    assert _effect(text, make_agent(), "call_tool", _tool("crm/weird")) is Effect.DENY


def test_suggested_policy_with_nothing_used_permits_nothing() -> None:
    text = suggested_policy("crm-bot", [], days=30)
    assert all(line.startswith("//") for line in text.splitlines())
    assert CedarEngine().check(text) == []
    assert _effect(text, make_agent(), "call_tool", _tool("crm/search")) is Effect.DENY


def test_suggested_policy_leaves_out_uses_that_are_not_cedar_and_says_so() -> None:
    used = [
        Capability("call_tool", "not a uid"),
        Capability("drop table", 'Tool::"x"'),
        Capability("call_tool", 'Tool::"crm/search"'),
    ]
    text = suggested_policy("crm-bot", used, days=30)
    assert "// 2 observed use(s) left out" in text
    assert CedarEngine().check(text) == []
    assert _effect(text, make_agent(), "call_tool", _tool("crm/search")) is Effect.ALLOW

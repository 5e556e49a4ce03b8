"""Declarative policy tests: requests and the decisions they must get, in TOML.

``tether policy test POLICIES TESTS`` compiles the policies (with the shipped defaults, as the
server would) and runs every case; a case names the agent, the action, the resource and the
context, and expects an effect and, optionally, the determining policy ids. A test file::

    [[case]]
    name = "faq-bot may search the FAQ"
    agent = { name = "faq-bot", tools = ["search_faq"] }      # unset attributes: see AGENT
    action = "call_tool"
    expect = "allow"
    policies = ["faq-bot-searches"]
    [case.resource]
    type = "Tool"
    id = "search_faq"
    properties = { name = "search_faq", data_class = "public", state_changing = false }

    [[case]]
    name = "a suspended faq-bot may not"
    agent = { name = "faq-bot", state = "suspended" }
    action = "call_tool"
    expect = "deny"
    policies = ["tether.forbid-inactive-agent"]
    [case.resource]
    type = "Tool"
    id = "search_faq"
    properties = { name = "search_faq", data_class = "public", state_changing = false }
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tether.errors import InvalidInput
from tether.policy.engine import CompiledPolicies, PolicyEngine
from tether.policy.models import (
    Decision,
    DecisionRequest,
    Effect,
    Entity,
    EntityRef,
    parse_entity,
)

__all__ = ["AGENT", "CONTEXT", "CaseResult", "PolicyCase", "load_cases", "run_cases"]

#: What an agent in a test case is unless the case says otherwise.
AGENT: Mapping[str, Any] = {
    "state": "active",
    "risk_tier": "low",
    "risk_score": 10,
    "owners": [],
    "tools": [],
    "resources": [],
    "data_classes": ["public"],
    "external_connections": "none",
    "autonomy": "supervised",
    "may_call_agents": False,
}
#: The context of a test case unless it says otherwise (``now``: 2026-01-01).
CONTEXT: Mapping[str, Any] = {
    "now": 1_767_225_600,
    "instance": "test",
    "scopes": [],
    "act_chain": [],
    "act_depth": 0,
}
_SETS = frozenset({"owners", "tools", "resources", "data_classes", "scopes", "act_chain", "groups"})


@dataclass(frozen=True, kw_only=True)
class PolicyCase:
    name: str
    request: DecisionRequest
    expect: Effect
    policies: tuple[str, ...] | None


@dataclass(frozen=True, kw_only=True)
class CaseResult:
    case: PolicyCase
    decision: Decision

    @property
    def passed(self) -> bool:
        if self.decision.effect is not self.case.expect:
            return False
        expected = self.case.policies
        return expected is None or sorted(expected) == sorted(self.decision.policy_ids)


def _setify(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: set(v) if k in _SETS and isinstance(v, list) else v for k, v in values.items()}


def _entity(raw: Any, where: str) -> Entity:
    if not isinstance(raw, Mapping):
        raise InvalidInput(f"{where}: an entity is {{ type, id, properties?, parents? }}")
    entity = parse_entity(raw, what=where)
    return replace(entity, attrs=_setify(entity.attrs))


def _case(raw: Mapping[str, Any], where: str) -> PolicyCase:
    try:
        name = str(raw["name"])
        agent = dict(raw["agent"])
        expect = Effect(raw["expect"])
        action = str(raw["action"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"{where}: a case needs name, agent, action, resource, expect") from exc
    agent_name = str(agent.pop("name", ""))
    principal = Entity(
        ref=EntityRef("Agent", agent_name),
        attrs=_setify({"name": agent_name, **AGENT, **agent}),
    )
    context = _setify({**CONTEXT, **dict(raw.get("context", {}))})
    if isinstance(context.get("user"), str):
        context["user"] = EntityRef("User", context["user"])
    policies = raw.get("policies")
    return PolicyCase(
        name=name,
        request=DecisionRequest(
            principal=principal,
            action=action,
            resource=_entity(raw.get("resource"), f"{where} resource"),
            context=context,
            entities=tuple(_entity(e, f"{where} entities") for e in raw.get("entities", [])),
        ),
        expect=expect,
        policies=tuple(str(p) for p in policies) if isinstance(policies, list) else None,
    )


def load_cases(text: str, *, source: str) -> list[PolicyCase]:
    """The cases of one TOML test file; ``InvalidInput`` naming the file and case if malformed."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{source}: not TOML: {exc}") from exc
    cases = document.get("case", [])
    if not isinstance(cases, list) or not cases:
        raise InvalidInput(f"{source}: no [[case]] tables")
    return [_case(c, f"{source} case {i + 1}") for i, c in enumerate(cases)]


def run_cases(
    engine: PolicyEngine, compiled: CompiledPolicies, cases: Sequence[PolicyCase]
) -> list[CaseResult]:
    return [CaseResult(case=c, decision=engine.decide(compiled, c.request)) for c in cases]

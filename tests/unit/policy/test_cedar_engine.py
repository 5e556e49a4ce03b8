"""The rule engine on the real Cedar binding: deny by default, fail closed, obligations."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tether._internal.kept import Kept
from tether.errors import InvalidPolicySet
from tether.policy._cedar import MAX_CACHED_ENTITY_TEXT, CedarEngine, CedarPolicies
from tether.policy.engine import PolicyEngine
from tether.policy.models import DecisionRequest, Effect, Entity, EntityRef

NOW = 1_800_000_000

OPERATORS = """
@id("faq-bot-searches-the-faq")
permit (
  principal == Tether::Agent::"faq-bot",
  action == Tether::Action::"call_tool",
  resource == Tether::Tool::"search_faq"
);

@id("bank-bot-transfers-with-approval")
@obligation("approval")
permit (
  principal == Tether::Agent::"bank-bot",
  action == Tether::Action::"call_tool",
  resource == Tether::Tool::"transfer"
)
when { context has user };

@id("no-restricted-tools-for-low-trust")
@reason("restricted tools need a reviewed agent")
forbid (principal, action == Tether::Action::"call_tool", resource)
when { resource.data_class == "restricted" && principal.risk_tier == "critical" };
"""


@pytest.fixture(scope="module")
def engine() -> CedarEngine:
    return CedarEngine()


@pytest.fixture(scope="module")
def compiled(engine: CedarEngine) -> CedarPolicies:
    return engine.compile(OPERATORS, version=7)


def agent(name: str = "faq-bot", **attrs: Any) -> Entity:
    base: dict[str, Any] = {
        "name": name,
        "state": "active",
        "risk_tier": "low",
        "risk_score": 10,
        "owners": {"alice"},
        "tools": {"search_faq"},
        "resources": set(),
        "data_classes": {"public"},
        "external_connections": "none",
        "autonomy": "supervised",
        "may_call_agents": False,
    }
    return Entity(ref=EntityRef("Agent", name), attrs=base | attrs)


def tool(name: str = "search_faq", data_class: str = "public") -> Entity:
    return Entity(
        ref=EntityRef("Tool", name),
        attrs={"name": name, "data_class": data_class, "state_changing": False},
        parents=(EntityRef("McpServer", "kb"),),
    )


AGENT_REF = EntityRef("Agent", "faq-bot")
KB = Entity(ref=EntityRef("McpServer", "kb"), attrs={"name": "kb"})
ALICE = Entity(ref=EntityRef("User", "alice"), attrs={"name": "alice", "groups": set()})


def alice_in(group: str) -> Entity:
    return Entity(ref=EntityRef("User", "alice"), attrs={"name": "alice", "groups": {group}})


def context(**extra: Any) -> dict[str, Any]:
    base = {"now": NOW, "instance": "pod-1", "scopes": set(), "act_chain": set(), "act_depth": 0}
    return base | extra


def request(
    principal: Entity | None = None,
    resource: Entity | None = None,
    action: str = "call_tool",
    entities: tuple[Entity, ...] = (KB,),
    **ctx: Any,
) -> DecisionRequest:
    return DecisionRequest(
        principal=principal or agent(),
        action=action,
        resource=resource or tool(),
        context=context(**ctx),
        entities=entities,
    )


def test_cedar_engine_fulfils_the_engine_contract(engine: CedarEngine) -> None:
    contract: PolicyEngine = engine
    assert contract.check(OPERATORS) == []


def test_a_permit_allows_and_names_its_policy(engine: CedarEngine, compiled: CedarPolicies) -> None:
    decision = engine.decide(compiled, request())
    assert decision.effect is Effect.ALLOW
    assert decision.policy_ids == ("faq-bot-searches-the-faq",)
    assert decision.policy_version == 7


def test_what_no_policy_permits_is_denied(engine: CedarEngine, compiled: CedarPolicies) -> None:
    decision = engine.decide(compiled, request(resource=tool("delete_everything")))
    assert decision.effect is Effect.DENY
    assert decision.reasons == ("no policy permits this",)


def test_a_kept_entity_graph_never_answers_for_a_changed_agent(
    compiled: CedarPolicies,
) -> None:
    """Parsed entity graphs are reused, keyed by their exact text: the same agent after a
    suspension is a different graph, decided afresh each time, in any order."""
    engine = CedarEngine()  # its own cache of parsed graphs
    active, suspended = request(), request(principal=agent(state="suspended"))
    effects = [engine.decide(compiled, r).effect for r in (active, suspended, active, suspended)]
    assert effects == [Effect.ALLOW, Effect.DENY, Effect.ALLOW, Effect.DENY]


def test_large_entity_graphs_are_decided_but_never_kept(compiled: CedarPolicies) -> None:
    """A caller cannot fill memory with big, unique graphs: only small ones are kept."""
    engine = CedarEngine()
    padding = "x" * MAX_CACHED_ENTITY_TEXT
    big = request(resource=tool(data_class="public"), entities=(KB, alice_in(padding)))
    assert engine.decide(compiled, big).effect is Effect.ALLOW
    assert engine.decide(compiled, request()).effect is Effect.ALLOW
    assert len(engine._parsed) == 1  # the small one only


def test_a_full_cache_of_entity_graphs_starts_over_and_still_decides(
    compiled: CedarPolicies, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tether.policy._cedar.MAX_PARSED_ENTITIES", 2)
    engine = CedarEngine()
    tiers = ("low", "medium", "high", "low")
    decisions = [engine.decide(compiled, request(agent(risk_tier=t))) for t in tiers]
    assert [d.effect for d in decisions] == [Effect.ALLOW] * 4


@pytest.mark.parametrize("state", ["suspended", "quarantined", "retired", "pending_review"])
def test_inactive_agent_is_forbidden_whatever_operators_permit(
    engine: CedarEngine, compiled: CedarPolicies, state: str
) -> None:
    decision = engine.decide(compiled, request(principal=agent(state=state)))
    assert decision.effect is Effect.DENY
    assert decision.policy_ids == ("tether.forbid-inactive-agent",)


def test_expired_grant_is_forbidden(engine: CedarEngine, compiled: CedarPolicies) -> None:
    expired = request(grant_id="g1", grant_expires_at=NOW - 1)
    assert engine.decide(compiled, expired).policy_ids == ("tether.forbid-expired-grant",)
    live = request(grant_id="g1", grant_expires_at=NOW + 60)
    assert engine.decide(compiled, live).effect is Effect.ALLOW


def test_forbid_wins_over_permit_and_gives_its_reason(
    engine: CedarEngine, compiled: CedarPolicies
) -> None:
    risky = agent(risk_tier="critical")
    restricted = tool(data_class="restricted")
    decision = engine.decide(compiled, request(principal=risky, resource=restricted))
    assert decision.effect is Effect.DENY
    assert decision.policy_ids == ("no-restricted-tools-for-low-trust",)
    assert decision.reasons == ("restricted tools need a reviewed agent",)


def _bank(**ctx: Any) -> DecisionRequest:
    return request(
        principal=agent("bank-bot"),
        resource=tool("transfer"),
        entities=(KB, ALICE),
        user=EntityRef("User", "alice"),
        **ctx,
    )


def test_permit_with_approval_obligation_asks_for_approval(
    engine: CedarEngine, compiled: CedarPolicies
) -> None:
    decision = engine.decide(compiled, _bank(call_digest="d1"))
    assert decision.effect is Effect.APPROVAL_REQUIRED
    assert decision.obligations == ("approval",)


def test_approval_bound_to_this_call_allows(engine: CedarEngine, compiled: CedarPolicies) -> None:
    approval = {"id": "apr_1", "approver": "alice", "call_digest": "d1"}
    decision = engine.decide(compiled, _bank(call_digest="d1", approval=approval))
    assert decision.effect is Effect.ALLOW
    assert decision.policy_ids == ("bank-bot-transfers-with-approval",)


def test_approval_for_another_call_does_not_allow(
    engine: CedarEngine, compiled: CedarPolicies
) -> None:
    # The amount was changed after the approval: the digest no longer matches.
    approval = {"id": "apr_1", "approver": "alice", "call_digest": "d1"}
    decision = engine.decide(compiled, _bank(call_digest="d2", approval=approval))
    assert decision.effect is Effect.APPROVAL_REQUIRED


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda r: DecisionRequest(**{**r.__dict__, "action": "launch_missiles"}), "action"),
        (
            lambda r: DecisionRequest(
                **{**r.__dict__, "resource": Entity(ref=EntityRef("Spaceship", "x"))}
            ),
            "entity type",
        ),
        (lambda r: DecisionRequest(**{**r.__dict__, "context": {"now": "noon"}}), "context"),
        (
            lambda r: DecisionRequest(**{**r.__dict__, "principal": Entity(ref=AGENT_REF)}),
            "missing attributes",
        ),
    ],
    ids=["unknown_action", "unknown_entity_type", "context_of_wrong_type", "missing_attributes"],
)
def test_requests_that_do_not_fit_the_schema_are_denied_with_a_reason(
    engine: CedarEngine, compiled: CedarPolicies, mutate: Any, why: str
) -> None:
    decision = engine.decide(compiled, mutate(request()))
    assert decision.effect is Effect.DENY, why
    assert decision.reasons
    assert decision.policy_ids == ()


@pytest.mark.parametrize(
    "value",
    [2**70, -(2**70), float("nan"), float("inf"), 1.5, [2**64], {"deep": float("-inf")}],
    ids=["int_beyond_64_bits", "negative_beyond_64_bits", "nan", "infinity", "float",
         "big_int_in_a_list", "infinity_in_a_record"],
)  # fmt: skip
def test_context_values_cedar_cannot_take_are_denied_not_raised(
    engine: CedarEngine, compiled: CedarPolicies, value: Any
) -> None:
    """A caller-supplied context value outside Cedar's JSON (no floats, 64-bit longs): the
    engine reaches no decision, so the call is denied — whichever JSON writer wrote it."""
    decision = engine.decide(compiled, request(extra=value))
    assert decision.effect is Effect.DENY
    assert decision.reasons
    assert decision.policy_ids == ()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("permit (principal, action, resource", "parse error"),
        ("permit (principal, action, resource);", "@id"),
        (
            '@id("a") permit (principal, action, resource);'
            '@id("a") forbid (principal, action, resource);',
            "twice",
        ),
        ('@id("tether.mine") permit (principal, action, resource);', "reserved"),
        ('@id("tether.forbid-inactive-agent") permit (principal, action, resource);', "reserved"),
        ('@id("x") @obligation("coffee") permit (principal, action, resource);', "obligation"),
        ('@id("x") @obligation("approval") forbid (principal, action, resource);', "only a permit"),
        (
            '@id("x") permit (principal, action == Tether::Action::"fly", resource);',
            "unrecognized action",
        ),
        (
            '@id("x") permit (principal, action, resource) when { principal.riks == "low" };',
            "riks",
        ),
        ('@id("t") permit (principal == ?principal, action, resource);', "template"),
        (
            '@id("x") @obligations("approval") permit (principal, action, resource);',
            "unknown annotation",
        ),
    ],
    ids=[
        "syntax_error",
        "missing_id",
        "duplicate_id",
        "reserved_prefix",
        "shadowing_a_default",
        "unknown_obligation",
        "obligation_on_forbid",
        "unknown_action",
        "misspelt_attribute",
        "template",
        "misspelt_annotation",
    ],
)
def test_invalid_policy_set_is_refused_with_every_error(
    engine: CedarEngine, text: str, fragment: str
) -> None:
    with pytest.raises(InvalidPolicySet) as caught:
        engine.compile(text, version=1)
    errors = caught.value.details["errors"]
    assert isinstance(errors, list)
    assert any(fragment in e for e in errors), errors


def test_empty_operator_set_keeps_only_the_defaults(engine: CedarEngine) -> None:
    defaults_only = engine.compile("", version=None)
    assert all(i.startswith("tether.") for i in defaults_only.policy_ids)
    assert engine.decide(defaults_only, request()).effect is Effect.DENY


SLICED = """
@id("a1-search") permit (principal == Tether::Agent::"a1", action == Tether::Action::"call_tool", resource == Tether::Tool::"search_faq");
@id("a2-any-tool") permit (principal == Tether::Agent::"a2", action == Tether::Action::"call_tool", resource);
@id("a3-not-search") forbid (principal == Tether::Agent::"a3", action, resource == Tether::Tool::"search_faq");
@id("everyone-search") permit (principal, action == Tether::Action::"call_tool", resource == Tether::Tool::"search_faq") when { principal.risk_tier == "low" };
@id("agents-list") permit (principal is Tether::Agent, action == Tether::Action::"list_tools", resource);
@id("no-high-risk-writes") forbid (principal, action, resource) when { resource has state_changing && resource.state_changing && principal.risk_tier == "high" };
"""  # noqa: E501 - one policy per line reads best here


WRITE_TOOL = Entity(
    ref=EntityRef("Tool", "transfer"),
    attrs={"name": "transfer", "data_class": "confidential", "state_changing": True},
    parents=(EntityRef("McpServer", "kb"),),
)


@pytest.mark.parametrize("name", ["a1", "a2", "a3", "a4"])
@pytest.mark.parametrize("tier", ["low", "high"])
def test_per_agent_slices_decide_exactly_as_the_whole_set(
    engine: CedarEngine, name: str, tier: str
) -> None:
    sliced = engine.compile(SLICED, version=3)
    whole = replace(sliced, policies_json={}, _slices=Kept(limit=1))
    cases = [
        ("call_tool", tool("search_faq")),
        ("call_tool", WRITE_TOOL),
        ("list_tools", KB),
    ]
    for action, resource in cases:
        req = request(principal=agent(name, risk_tier=tier), resource=resource, action=action)
        if resource is KB:
            req = replace(req, entities=())
        a, b = engine.decide(sliced, req), engine.decide(whole, req)
        assert (a.effect, sorted(a.policy_ids)) == (b.effect, sorted(b.policy_ids)), (
            name,
            tier,
            action,
        )
    assert len(sliced.for_principal(EntityRef("Agent", name)).__str__()) <= len(
        str(whole.policy_set)
    )

"""Fuzzing the Cedar entities and context built from what callers send: tool arguments and
context through the checkpoint (a real JWT-SVID, the shipped policies plus the operators'
set of the fuzz world), entities from their wire shape (``parse_entity``, as AuthZEN takes
them), an agent's entity from any declarations (``agent_entity``), and the engine's decision
on all of it.

The rule: the checkpoint answers every call with a verdict carrying a ``Decision`` (a request
Cedar cannot evaluate is a deny, never an exception); the entity parser returns an entity or
refuses with ``InvalidInput``; the engine never raises for a bad request; and nothing turns
a forbidden call into an allowed one.
"""

from __future__ import annotations

import contextlib
import dataclasses
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz._profiles import FUZZ
from tests.fuzz._strategies import hostile_text, ijson_values, json_values, wire_text
from tests.fuzz._world import POLICIES, World
from tether.checkpoint import CheckRequest, agent_entity
from tether.checkpoint._entities import agent_context
from tether.enforcement.mcp._relay import server_entity
from tether.enforcement.mcp.gateway import _tool_entity
from tether.errors import InvalidInput
from tether.identity.models import Agent, Autonomy, Connectivity, DataClass, Declarations
from tether.policy._cedar import CedarEngine, CedarPolicies
from tether.policy.models import Decision, DecisionRequest, Effect, Entity, parse_entity

_TOOLS = st.one_of(st.sampled_from(["add", "whoami", "transfer", "delete_all"]), wire_text)
_arguments = st.one_of(ijson_values(), st.dictionaries(wire_text, ijson_values(), max_size=6))
_KEYS = st.sampled_from(["now", "instance", "scopes", "approval", "act_depth", "user",
                         "arguments", "call_digest", "grant_id", "x"])  # fmt: skip
#: Context as a JSON body can carry it (the AuthZEN API's), and with any text at all.
_context = st.dictionaries(st.one_of(_KEYS, wire_text), ijson_values(5), max_size=5)
_any_context = st.dictionaries(st.one_of(_KEYS, hostile_text), json_values(5), max_size=5)


@FUZZ
@given(tool=_TOOLS, definition=json_values(8), arguments=_arguments, context=_context)
def test_checkpoint_decides_any_tool_call_and_context_never_raises(
    world: World, tool: str, definition: object, arguments: object, context: dict[str, Any]
) -> None:
    resource = _tool_entity("tools", tool, definition if isinstance(definition, dict) else {})
    request = CheckRequest(
        token=world.svid, action="call_tool", resource=resource,
        entities=(server_entity("tools"),), arguments=arguments,
        context=MappingProxyType(context), enforcement_point="fuzz",
    )  # fmt: skip
    verdict = world.call(world.services.checkpoint.check(request))
    assert isinstance(verdict.decision, Decision)
    if tool == "delete_all" or "DROP" in repr(arguments):
        assert not verdict.allowed, "a forbidden call was allowed"


@pytest.mark.parametrize(
    "arguments", [{"a": 2**53}, {"a": -(2**60)}, {"a": ["\ud800"]}],
    ids=["integer-beyond-2^53", "negative-beyond-2^53", "lone-surrogate"],
)  # fmt: skip
def test_checkpoint_records_a_deny_for_arguments_canonical_json_cannot_carry(
    world: World, arguments: dict[str, Any]
) -> None:
    """Found by the fuzz: such values (which the gateway's JSON parser passes on) were
    refused unrecorded, as if the audit log had failed. Now: a recorded invalid_input deny."""
    request = CheckRequest(
        token=world.svid, action="call_tool", resource=_tool_entity("tools", "add", {}),
        entities=(server_entity("tools"),), arguments=arguments, enforcement_point="fuzz",
    )  # fmt: skip
    verdict = world.call(world.services.checkpoint.check(request))
    assert not verdict.allowed
    assert not verdict.audit_failed, "the refusal is recorded, the log has not failed"
    assert verdict.decision.reasons[0].startswith("not canonical JSON")


def test_the_checkpoint_allows_the_baseline_call(world: World) -> None:
    """The fuzz above, unfuzzed: a permitted call is allowed, so a deny there means
    something."""
    request = CheckRequest(
        token=world.svid, action="call_tool", resource=_tool_entity("tools", "add", {}),
        entities=(server_entity("tools"),), arguments={"a": 1}, enforcement_point="fuzz",
    )  # fmt: skip
    assert world.call(world.services.checkpoint.check(request)).allowed


@st.composite
def _wire_entity(draw: st.DrawFn) -> dict[str, Any]:
    """``{"type", "id", "properties", "parents"}`` with any values in the members, the
    members' own shapes included (an object or not, a list or not)."""
    kind = draw(st.one_of(st.sampled_from(["Tool", "Api"]), hostile_text))
    entity: dict[str, Any] = {"type": kind, "id": draw(hostile_text)}
    if draw(st.booleans()):
        entity["properties"] = draw(st.one_of(
            st.dictionaries(st.one_of(st.just("parents"), hostile_text), json_values(5),
                            max_size=4),
            json_values(3)))  # fmt: skip
    if draw(st.booleans()):
        entity["parents"] = draw(st.one_of(st.lists(json_values(5), max_size=3), json_values(3)))
    return entity


@FUZZ
@given(value=_wire_entity())
def test_entity_parser_refuses_any_wire_shape_with_invalid_input_only(value: Any) -> None:
    with contextlib.suppress(InvalidInput):
        parse_entity(value, what="resource")


@pytest.mark.parametrize(
    "value",
    [{"properties": 1}, {"properties": "ab"}, {"properties": [1]}, {"parents": 1},
     {"properties": {"parents": 1}}],
    ids=["properties-number", "properties-text", "properties-list", "parents-number",
         "properties-parents-number"],
)  # fmt: skip
def test_entity_parser_refuses_members_of_the_wrong_shape_with_invalid_input(
    value: dict[str, Any],
) -> None:
    with pytest.raises(InvalidInput):
        parse_entity({"type": "Tool", "id": "t", **value}, what="resource")


_ENGINE = CedarEngine()
_COMPILED: CedarPolicies = _ENGINE.compile(POLICIES, version=1)


@st.composite
def _declarations(draw: st.DrawFn) -> Declarations:
    names = st.lists(hostile_text, max_size=4).map(tuple)
    return Declarations(
        tools=draw(names), resources=draw(names),
        data_classes=tuple(draw(st.lists(st.sampled_from(list(DataClass)), max_size=3))),
        external_connections=draw(st.sampled_from(list(Connectivity))),
        autonomy=draw(st.sampled_from(list(Autonomy))), may_call_agents=draw(st.booleans()),
    )  # fmt: skip


@FUZZ
@given(
    declarations=_declarations(), owners=st.lists(hostile_text, max_size=3),
    attrs=st.dictionaries(hostile_text, json_values(5), max_size=5), tool=hostile_text,
    context=_any_context, arguments=hostile_text,
)  # fmt: skip
def test_engine_decides_entities_built_from_any_input_never_raises(
    world: World, declarations: Declarations, owners: list[str], attrs: dict[str, Any],
    tool: str, context: dict[str, Any], arguments: str,
) -> None:  # fmt: skip
    agent: Agent | None = world.call(world.services.store.get_agent("shop-bot"))
    assert agent is not None
    principal = agent_entity(dataclasses.replace(agent, declarations=declarations,
                                                 owners=tuple(owners)))  # fmt: skip
    resource = Entity(ref=_tool_entity("tools", tool, {}).ref, attrs=MappingProxyType(attrs),
                      parents=(server_entity("tools").ref,))  # fmt: skip
    proven = agent_context(now=1_700_000_000.5, instance="pod-1", scopes={"a", tool})
    request = DecisionRequest(
        principal=principal, action="call_tool", resource=resource,
        context=context | proven | {"arguments": arguments}, entities=(server_entity("tools"),),
    )  # fmt: skip
    decision = _ENGINE.decide(_COMPILED, request)
    assert isinstance(decision, Decision)
    if "DROP" in arguments:
        assert decision.effect is not Effect.ALLOW

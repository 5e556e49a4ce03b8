"""The record's form of an evaluated request: the same as redacting ``to_json()`` whole, with
entity forms made once per entity object."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.audit.redact import Redactor
from tether.checkpoint._forms import MAX_KEPT, RecordForms
from tether.policy.models import DecisionRequest, Entity, EntityRef

REDACTOR = Redactor(b"r" * 32)
_KEYS = st.sampled_from(["name", "password", "api_key", "owners", "token", "note", "state"])
_LEAVES = st.one_of(st.text(max_size=8), st.integers(), st.booleans(),
                    st.frozensets(st.text(max_size=4), max_size=3))  # fmt: skip
_VALUES = st.recursive(_LEAVES, lambda inner: st.dictionaries(_KEYS, inner, max_size=3),
                       max_leaves=8)  # fmt: skip


def _entity(kind: str, name: str, attrs: dict[str, Any]) -> Entity:
    return Entity(ref=EntityRef(kind, name), attrs=MappingProxyType(attrs),
                  parents=(EntityRef("McpServer", "kb"),))  # fmt: skip


def _reference(evaluated: DecisionRequest) -> Any:
    """What the checkpoint recorded before forms were kept: ``to_json`` redacted whole."""
    data = evaluated.to_json()
    context = data["context"]
    if isinstance(context.get("arguments"), str):
        context["arguments"] = REDACTOR.redact_text(context["arguments"])
    if isinstance(context.get("call_digest"), str):
        context["call_digest"] = REDACTOR.hash(context["call_digest"])
    return REDACTOR.redact(data)


# The first text drawn in a fresh checkout builds Hypothesis's Unicode tables (about 2 s here),
# which its speed check blames on this strategy when this test happens to run first.
@settings(suppress_health_check=[HealthCheck.too_slow])
@given(principal=st.dictionaries(_KEYS, _VALUES, max_size=5),
       context=st.dictionaries(_KEYS, _VALUES, max_size=5),
       arguments=st.sampled_from(['{"q":"hours"}', '{"password":"hunter2"}', "null"]))  # fmt: skip
def test_a_kept_form_records_exactly_what_redacting_the_whole_request_records(
    principal: dict[str, Any], context: dict[str, Any], arguments: str
) -> None:
    forms = RecordForms(REDACTOR)
    bot = _entity("Agent", "faq-bot", principal)
    context = context | {"arguments": arguments, "call_digest": "sha256:abc"}
    tool, server = _entity("Tool", "t", {}), _entity("McpServer", "kb", {})
    asked = DecisionRequest(principal=bot, action="call_tool", resource=tool, context=context,
                            entities=(server,))  # fmt: skip
    assert forms.request(asked) == _reference(asked)
    assert forms.request(asked) == _reference(asked)  # the second time from the kept form


def test_a_secret_in_a_principal_attribute_is_hidden_in_the_kept_form_too() -> None:
    forms = RecordForms(REDACTOR)
    bot = _entity("Agent", "faq-bot", {"api_key": "sk-live-123"})
    asked = DecisionRequest(principal=bot, action="a", resource=bot, context={})
    for _ in range(2):
        shown = forms.request(asked)["principal"]["attrs"]["api_key"]
        assert shown.startswith("hmac-sha256:")
        assert "sk-live" not in shown


def test_a_changed_agent_is_a_new_object_and_gets_a_new_form() -> None:
    forms = RecordForms(REDACTOR)
    before = forms.entity(_entity("Agent", "faq-bot", {"state": "active"}))
    after = forms.entity(_entity("Agent", "faq-bot", {"state": "suspended"}))
    assert (before["attrs"]["state"], after["attrs"]["state"]) == ("active", "suspended")


def test_forms_kept_are_bounded() -> None:
    forms = RecordForms(REDACTOR)
    entities = [_entity("Tool", f"t{n}", {}) for n in range(MAX_KEPT + 10)]
    for entity in entities:
        forms.entity(entity)
    assert len(forms._kept) <= MAX_KEPT  # the bound is the behaviour under test

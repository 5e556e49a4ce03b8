"""SPIFFE IDs and names: the rules, table-driven, each bad input naming the rule it broke."""

from __future__ import annotations

import pytest

from tether.errors import InvalidName, InvalidSpiffeId
from tether.identity.names import (
    AgentRef,
    agent_spiffe_id,
    check_agent_name,
    check_instance_id,
    instance_spiffe_id,
    parse_agent_spiffe_id,
    parse_spiffe_id,
)


@pytest.mark.parametrize("name", ["ab", "faq-bot", "a1", "billing-agent-2", "x" * 63])
def test_valid_agent_names_pass(name: str) -> None:
    assert check_agent_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a",
        "Faq",
        "1bot",
        "bot-",
        "-bot",
        "faq_bot",
        "faq bot",
        "faq--bot",
        "x" * 64,
        "faq/bot",
        "ä-bot",
        "bot\n",
    ],
)
def test_bad_agent_names_are_refused_with_the_rule(name: str) -> None:
    with pytest.raises(InvalidName, match="lowercase letters") as info:
        check_agent_name(name)
    assert "rule" in info.value.details


@pytest.mark.parametrize("instance", ["pod-1", "i", "7f3a.worker_2", "A" * 64])
def test_valid_instance_ids_pass(instance: str) -> None:
    assert check_instance_id(instance) == instance


@pytest.mark.parametrize("instance", ["", "-x", "a/b", "a b", "A" * 65, "..", "x\x00", "pod-1\n"])
def test_bad_instance_ids_are_refused(instance: str) -> None:
    with pytest.raises(InvalidName, match="instance id"):
        check_instance_id(instance)


def test_agent_and_instance_spiffe_ids_have_the_documented_shape() -> None:
    assert agent_spiffe_id("acme.org", "faq-bot") == "spiffe://acme.org/agent/faq-bot"
    assert (
        instance_spiffe_id("acme.org", "faq-bot", "pod-1")
        == "spiffe://acme.org/agent/faq-bot/i/pod-1"
    )


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("http://acme.org/agent/a", "scheme"),
        ("SPIFFE://acme.org/agent/a", "scheme"),
        ("spiffe://ACME.org/agent/a", "trust domain"),
        ("spiffe://acme.org:443/agent/a", "trust domain"),
        ("spiffe://user@acme.org/agent/a", "trust domain"),
        ("spiffe:///agent/a", "trust domain"),
        ("spiffe://acme.org/agent//a", "empty"),
        ("spiffe://acme.org/agent/a/", "empty"),
        ("spiffe://acme.org/agent/../root", "'..'"),
        ("spiffe://acme.org/agent/./a", "'.'"),
        ("spiffe://acme.org/agent/a?x=1", "path segments"),
        ("spiffe://acme.org/agent/a#frag", "path segments"),
        ("spiffe://acme.org/agent/a%20b", "path segments"),
        ("spiffe://acme.org/" + "a" * 2100, "2048"),
    ],
)
def test_malformed_spiffe_ids_are_refused_with_the_rule(value: str, rule: str) -> None:
    with pytest.raises(InvalidSpiffeId, match=rule):
        parse_spiffe_id(value)


def test_agent_spiffe_id_from_another_trust_domain_is_refused() -> None:
    with pytest.raises(InvalidSpiffeId, match="trust domain must be"):
        parse_agent_spiffe_id("spiffe://evil.org/agent/faq-bot", trust_domain="acme.org")


@pytest.mark.parametrize(
    "value",
    [
        "spiffe://acme.org/agent",
        "spiffe://acme.org/user/alice",
        "spiffe://acme.org/agent/faq-bot/x/pod-1",
        "spiffe://acme.org/agent/faq-bot/i/pod-1/extra",
        "spiffe://acme.org/agent/Faq/i/pod-1",
    ],
)
def test_spiffe_ids_that_are_not_agents_are_refused(value: str) -> None:
    with pytest.raises(InvalidSpiffeId):
        parse_agent_spiffe_id(value, trust_domain="acme.org")


def test_agent_and_instance_references_parse() -> None:
    td = "acme.org"
    assert parse_agent_spiffe_id("spiffe://acme.org/agent/a1", trust_domain=td) == AgentRef(
        name="a1", instance_id=None
    )
    assert parse_agent_spiffe_id("spiffe://acme.org/agent/a1/i/pod-9", trust_domain=td) == AgentRef(
        name="a1", instance_id="pod-9"
    )


def test_a_kept_agent_spiffe_id_answers_only_for_its_own_trust_domain() -> None:
    """Parsed IDs are kept: the same string in another trust domain is still refused, and
    a refusal is worked out again each time, never kept as an answer."""
    value = "spiffe://kept.example/agent/kept-bot/i/pod-1"
    ref = parse_agent_spiffe_id(value, trust_domain="kept.example")
    assert parse_agent_spiffe_id(value, trust_domain="kept.example") == ref
    assert (ref.name, ref.instance_id) == ("kept-bot", "pod-1")
    for _ in range(2):
        with pytest.raises(InvalidSpiffeId):
            parse_agent_spiffe_id(value, trust_domain="other.example")
    with pytest.raises(InvalidSpiffeId):
        parse_agent_spiffe_id(["not", "a", "string"], trust_domain="kept.example")  # type: ignore[arg-type]

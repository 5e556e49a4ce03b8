"""Declarative policy tests: the documented example runs, failures show, bad files are refused."""

from __future__ import annotations

import pytest

import tether.policy.testing as testing_module
from tether.errors import InvalidInput
from tether.policy._cedar import CedarEngine
from tether.policy.testing import load_cases, run_cases

POLICIES = """
@id("faq-bot-searches")
permit (principal == Tether::Agent::"faq-bot", action == Tether::Action::"call_tool",
        resource == Tether::Tool::"search_faq");
"""


def _doc_example() -> str:
    doc = testing_module.__doc__ or ""
    start = doc.index("[[case]]")
    return "\n".join(line[4:] for line in doc[start - 4 :].splitlines())


def test_the_documented_example_passes() -> None:
    engine = CedarEngine()
    cases = load_cases(_doc_example(), source="doc")
    results = run_cases(engine, engine.compile(POLICIES, version=None), cases)
    assert [(r.case.name, r.passed) for r in results] == [
        ("faq-bot may search the FAQ", True),
        ("a suspended faq-bot may not", True),
    ]


def test_a_wrong_expectation_fails() -> None:
    engine = CedarEngine()
    wrong = _doc_example().replace('expect = "deny"', 'expect = "allow"')
    results = run_cases(
        engine, engine.compile(POLICIES, version=None), load_cases(wrong, source="x")
    )
    assert [r.passed for r in results] == [True, False]
    assert results[1].decision.policy_ids == ("tether.forbid-inactive-agent",)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("[[case]", "not TOML"), ("title = 'x'", "no [[case]]"), ("[[case]]\nname = 'x'", "case 1")],
    ids=["not_toml", "no_cases", "incomplete_case"],
)
def test_malformed_test_file_is_refused_naming_the_place(text: str, fragment: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        load_cases(text, source="bad.toml")
    assert fragment in caught.value.message

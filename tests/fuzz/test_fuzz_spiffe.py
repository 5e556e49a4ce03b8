"""Fuzzing the SPIFFE ID parser (``parse_spiffe_id``, ``parse_agent_spiffe_id``).

The rule: any input parses or is refused with ``InvalidSpiffeId``; what parses is printed back
exactly as given (one ID, one spelling) and holds only the characters the SPIFFE-ID spec
allows; an ID over 2048 bytes is refused as such.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz._profiles import FUZZ
from tests.fuzz._strategies import hostile_text, json_values, mutated_text
from tether.errors import InvalidSpiffeId
from tether.identity.names import parse_agent_spiffe_id, parse_spiffe_id

TD = "acme.org"
_VALID = ["spiffe://acme.org/agent/faq-bot", "spiffe://acme.org/agent/faq-bot/i/pod-7",
          "spiffe://acme.org", "spiffe://a.b-c_d/x/y.z"]  # fmt: skip
_ALLOWED = re.compile(r"spiffe://[a-z0-9._-]+(/[A-Za-z0-9._-]+)*")
_PIECES = ["spiffe://", "SPIFFE://", "acme.org", "/", "//", "agent", "i", ".", "..", "faq-bot",
           ":8080", "@", "?q", "#f", "%2F", "\x00", "\ud800", "é", "\u212a", " ", "\n"]  # fmt: skip


@st.composite
def _spiffe_like(draw: st.DrawFn) -> str:
    """IDs assembled from the pieces that matter, valid ones changed, and any text at all."""
    choice = draw(st.integers(0, 2))
    if choice == 0:
        return "".join(draw(st.lists(st.sampled_from(_PIECES), max_size=12)))
    if choice == 1:
        return draw(mutated_text(draw(st.sampled_from(_VALID))))
    return draw(hostile_text)


def _parsed_or_refused(value: object) -> None:
    try:
        sid = parse_spiffe_id(value)  # type: ignore[arg-type]
    except InvalidSpiffeId:
        return
    assert str(sid) == value
    assert _ALLOWED.fullmatch(str(sid))


@FUZZ
@given(value=st.one_of(_spiffe_like(), json_values(5)))
def test_spiffe_parser_refuses_any_input_with_invalid_spiffe_id_only(value: object) -> None:
    _parsed_or_refused(value)
    try:
        ref = parse_agent_spiffe_id(value, trust_domain=TD)  # type: ignore[arg-type]
    except InvalidSpiffeId:
        return
    assert isinstance(value, str)
    assert value.startswith(f"spiffe://{TD}/agent/{ref.name}")


@FUZZ
@given(size=st.integers(min_value=2049, max_value=1024 * 1024), td=st.sampled_from(["a", "é"]))
def test_spiffe_parser_refuses_an_id_over_2048_bytes(size: int, td: str) -> None:
    value = "spiffe://" + td * size
    with pytest.raises(InvalidSpiffeId, match="2048 bytes"):
        parse_spiffe_id(value)


def test_spiffe_id_with_a_lone_surrogate_is_refused_as_invalid_spiffe_id() -> None:
    """Found by the fuzz: measuring the length encoded a lone surrogate and raised
    ``UnicodeEncodeError`` (a 500 for a token whose ``sub`` held one)."""
    with pytest.raises(InvalidSpiffeId):
        parse_spiffe_id("spiffe://acme.org/agent/\ud800")

"""The call digest: SHA-256 over the RFC 8785 form of ``{action, arguments, resource}``."""

from __future__ import annotations

import enum
import hashlib
from typing import Any

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from tether._internal.canonical import call_digest, call_digest_of, canonical_json
from tether.errors import InvalidInput

# JSON values RFC 8785 can carry exactly: integers within 2^53, finite floats, any text.
_SAFE_INT = st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | _SAFE_INT
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def _whole(action: str, resource: str, arguments: Any) -> str:
    body = rfc8785.dumps({"resource": resource, "arguments": arguments, "action": action})
    return "sha256:" + hashlib.sha256(body).hexdigest()


@given(action=st.text(), resource=st.text(), arguments=_JSON)
def test_digest_assembled_around_canonical_arguments_is_the_whole_objects(
    action: str, resource: str, arguments: Any
) -> None:
    expected = _whole(action, resource, arguments)
    assert call_digest(action, resource, arguments) == expected
    assert call_digest_of(action, resource, canonical_json(arguments)) == expected


def test_a_changed_argument_is_a_different_call() -> None:
    one = call_digest("call_tool", 'Tool::"transfer"', {"amount": 100, "to": "bob"})
    other = call_digest("call_tool", 'Tool::"transfer"', {"amount": 1000, "to": "bob"})
    same = call_digest("call_tool", 'Tool::"transfer"', {"to": "bob", "amount": 100})
    assert one != other
    assert one == same  # key order is not a difference


def test_values_json_cannot_carry_exactly_are_refused() -> None:
    with pytest.raises(InvalidInput, match="not canonical JSON"):
        canonical_json({"amount": float("nan")})


_TEXT = st.text(
    alphabet=st.characters(codec="utf-8") | st.sampled_from("\x00\x1f\x7f\u2028\ue000\U0001f600")
)
_PLAIN = st.recursive(
    st.none() | st.booleans() | _SAFE_INT | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=16,
)


@given(value=_PLAIN | _JSON)
def test_the_fast_path_writes_exactly_what_rfc8785_writes(value: Any) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


def test_keys_beyond_the_bmp_sort_by_utf16_code_units_as_rfc8785_says() -> None:
    value = {"\U0001f600": 1, "\ue000": 2}  # code points sort the other way round
    assert canonical_json(value) == rfc8785.dumps(value)
    assert canonical_json(value).index("\U0001f600".encode()) < canonical_json(value).index(
        "\ue000".encode()
    )


@pytest.mark.parametrize(
    "value",
    [{"n": 2**53}, {"n": -(2**53)}, {"text": "\ud800"}, {1: "key not text"}, {"x": b"bytes"}],
    ids=["above-2^53", "below-minus-2^53", "lone-surrogate", "int-key", "bytes"],
)
def test_values_outside_i_json_are_refused_not_written(value: Any) -> None:
    with pytest.raises(InvalidInput, match="not canonical JSON"):
        canonical_json(value)


class Tier(enum.StrEnum):
    HIGH = "high"


def test_subclasses_and_tuples_write_what_rfc8785_writes() -> None:
    value: Any = {"tier": Tier.HIGH, "pair": (1, "two"), "flag": True, "nested": [{"b": 1}]}
    assert canonical_json(value) == rfc8785.dumps(value)

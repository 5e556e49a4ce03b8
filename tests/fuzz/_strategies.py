"""Strategies shared by the fuzz targets: hostile JSON, hostile text, and mutations of valid
inputs (a bit flipped, a byte cut or repeated, a character swapped)."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import strategies as st

__all__ = [
    "b64url",
    "deep_json",
    "hostile_text",
    "ijson_values",
    "json_bytes",
    "json_values",
    "mutated_bytes",
    "mutated_text",
    "wire_text",
]

#: Characters that break naive parsers: controls, a lone surrogate, BOM, RTL override,
#: zero-width, a combining mark, characters beyond the BMP, the line and paragraph separators.
_EDGE = "\x00\x1f\x7f\ud800\udfff\ufeff\u202e\u200b\u0301\U0001f600\U0010ffff\u2028\u2029"
_EDGE_TEXT = st.text(alphabet=st.sampled_from(_EDGE), max_size=8)

hostile_text = st.one_of(
    st.text(max_size=200),
    _EDGE_TEXT,
    st.text(alphabet=st.characters(codec="ascii"), max_size=200),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
)

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    hostile_text,
)


def json_values(max_leaves: int = 20) -> st.SearchStrategy[Any]:
    """Any JSON value (finite numbers; text with edge-case characters)."""
    return st.recursive(
        _scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=5), st.dictionaries(hostile_text, inner, max_size=5)
        ),
        max_leaves=max_leaves,
    )


#: Text a JSON parser of the wire can produce: no lone surrogate.
wire_text = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=100)
_ijson_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
    st.floats(min_value=-(2.0**52), max_value=2.0**52),
    wire_text,
    st.text(alphabet=st.sampled_from(_EDGE.replace("\ud800\udfff", "")), max_size=8),
)


def ijson_values(max_leaves: int = 20) -> st.SearchStrategy[Any]:
    """I-JSON values (RFC 7493): what the gateway's JSON parser hands on and what canonical
    JSON (RFC 8785) can carry — numbers within 2^53, no lone surrogates."""
    return st.recursive(
        _ijson_scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=5), st.dictionaries(wire_text, inner, max_size=5)
        ),
        max_leaves=max_leaves,
    )


@st.composite
def deep_json(draw: st.DrawFn, max_depth: int = 50_000) -> str:
    """JSON nested ``depth`` deep (arrays or objects): past the standard library's recursion
    limit at the high end."""
    depth = draw(st.integers(min_value=1, max_value=max_depth))
    if draw(st.booleans()):
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def mutated_bytes(draw: st.DrawFn, original: bytes) -> bytes:
    """``original`` with one change that makes it different: a bit flipped, a byte removed,
    a byte inserted, or the tail cut."""
    kind = draw(st.sampled_from(["flip", "drop", "insert", "cut"]))
    if not original:
        return draw(st.binary(min_size=1, max_size=4))
    at = draw(st.integers(min_value=0, max_value=len(original) - 1))
    if kind == "flip":
        bit = 1 << draw(st.integers(min_value=0, max_value=7))
        return original[:at] + bytes([original[at] ^ bit]) + original[at + 1 :]
    if kind == "drop":
        return original[:at] + original[at + 1 :]
    if kind == "insert":
        return original[:at] + draw(st.binary(min_size=1, max_size=3)) + original[at:]
    return original[:at]


@st.composite
def mutated_text(draw: st.DrawFn, original: str) -> str:
    """``original`` with one byte of its UTF-8 changed, removed or added (bytes that are no
    longer UTF-8 come back as lone surrogates, as ``surrogateescape`` decodes them)."""
    raw = original.encode("utf-8", "surrogatepass")
    return draw(mutated_bytes(raw)).decode("utf-8", "surrogateescape")

"""Request targets are decoded once; anything another parser could read differently is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.enforcement.http.paths import MAX_SEGMENTS, MAX_TARGET, Target, parse_target
from tether.errors import UnsafePath


@pytest.mark.parametrize(
    ("target", "segments", "query"),
    [
        ("/", (), ""),
        ("/orders", ("orders",), ""),
        ("/orders/", ("orders", ""), ""),  # a trailing '/' is kept: another path
        ("/orders/42?full=1&x=%2F", ("orders", "42"), "full=1&x=%2F"),
        ("/a%20b/caf%C3%A9", ("a b", "café"), ""),
        ("/files/report.v2.pdf", ("files", "report.v2.pdf"), ""),
        ("/x/...", ("x", "..."), ""),  # three dots are a name, not a dot segment
        ("/o?q=../admin", ("o",), "q=../admin"),  # the query is never matched
    ],
)
def test_a_plain_target_reads_as_its_decoded_segments(
    target: str, segments: tuple[str, ...], query: str
) -> None:
    assert parse_target(target) == Target(segments=segments, query=query)


@pytest.mark.parametrize(
    "target",
    [
        "/orders/../admin",
        "/orders/./42",
        "/orders/%2e%2e/admin",
        "/orders/%2E./admin",
        "/orders/.%2e",
        "/public/..;/admin",  # Tomcat and Spring read '..;' as '..'
        "/public/.;x/admin",
    ],
)
def test_dot_segments_raw_or_encoded_are_refused(target: str) -> None:
    with pytest.raises(UnsafePath, match=r"'\.' or '\.\.'"):
        parse_target(target)


@pytest.mark.parametrize(
    "target",
    [
        "/orders%2F42",  # an encoded '/' splits differently upstream
        "/orders%2f..%2fadmin",
        "/orders/%5C..%5Cadmin",  # '\' is '/' to some servers
        "/orders/%252e%252e",  # double encoding: '%2e%2e' after one decode
        "/orders/%00",  # NUL
        "/orders/%0a",  # a line feed
        "/orders/%E2%80%8B",  # zero-width space: not printable
    ],
)
def test_encoded_separators_double_encoding_and_controls_are_refused(target: str) -> None:
    with pytest.raises(UnsafePath):
        parse_target(target)


@pytest.mark.parametrize(
    "target",
    [
        "/orders//42",
        "//orders",
        "/orders/%",
        "/orders/%zz",
        "/orders/%4",
        "/orders/%ff",  # not UTF-8
        "/orders/a b",  # a raw space
        "/orders/a\\b",  # a raw backslash
        "/orders/café",  # raw non-ASCII
        "/orders/42#top",  # a fragment
        "orders/42",  # not origin-form
        "http://evil/orders/42",  # absolute-form
        "*",
        "",
        "/o?q=a b",  # a raw space in the query
        "/o?q=%zz",
    ],
)
def test_malformed_targets_are_refused(target: str) -> None:
    with pytest.raises(UnsafePath):
        parse_target(target)


def test_oversized_targets_are_refused() -> None:
    with pytest.raises(UnsafePath, match="longer than"):
        parse_target("/" + "a" * MAX_TARGET)
    with pytest.raises(UnsafePath, match="segments"):
        parse_target("/a" * (MAX_SEGMENTS + 1))


_SEGMENT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Cf", "Zl", "Zp", "Co", "Cn")),
    min_size=1,
    max_size=12,
).filter(lambda s: s not in (".", "..") and not any(c in s for c in "/\\%;"))


@given(st.lists(_SEGMENT, min_size=1, max_size=8))
def test_any_encoded_path_decodes_back_to_its_segments(segments: list[str]) -> None:
    """Percent-encoding every byte of any segment and decoding once gives it back."""
    raw = "/" + "/".join("".join(f"%{b:02X}" for b in s.encode()) for s in segments)
    if len(raw) <= MAX_TARGET and all(s.isprintable() for s in segments):
        assert parse_target(raw).segments == tuple(segments)

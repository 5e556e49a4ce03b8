"""Canonical JSON (RFC 8785, JSON Canonicalization Scheme) and digests over it.

The same value always gives the same bytes, whoever serialises it, so a digest of a call
(tool name + arguments) computed by the SDK, the gateway and the approval flow agree.

The ``rfc8785`` package serialises in Python, about 150 µs for an audit record — more than
everything else an audit append does. For the values that are nearly all of ours (no floats,
integers within I-JSON's 2^53, text within the Basic Multilingual Plane) RFC 8785's output is
exactly what ``orjson`` writes with sorted keys: compact, UTF-8, the same escapes (the short
ones for backspace, form feed, newline, return and tab, other controls as lowercase ``u00xx``),
and key order by UTF-16 code units equals code-point order when no character lies beyond
U+FFFF. Those values take that path (about 3 µs for an audit entry, of which the type check
is most); any other value — a float (RFC 8785 writes numbers as ECMAScript does, and orjson
would write NaN as ``null``), a character beyond U+FFFF, a value JSON cannot carry — goes to
``rfc8785`` (a property test holds the two equal). ``orjson`` itself refuses integers beyond
2^53 (``OPT_STRICT_INTEGER``), keys that are not text and lone surrogates, which then go the
same way.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson
import rfc8785

from tether.errors import InvalidInput

__all__ = ["call_digest", "call_digest_of", "canonical_json", "is_plain"]


_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER
#: What a 4-byte UTF-8 sequence starts with: a character beyond U+FFFF.
_BEYOND_BMP = re.compile(rb"[\xf0-\xf4]")
_SCALARS = frozenset({str, int, bool, type(None)})
_CONTAINERS = frozenset({dict, list, tuple})
_KINDS = _SCALARS | _CONTAINERS


def _plain(value: Any) -> bool:
    """Whether ``value`` holds only text, integers, booleans, null, dicts, lists and tuples
    (exact types; a subclass goes the slow way). A set of each container's value types is
    built in C, so a container of scalars costs one check."""
    if type(value) not in _CONTAINERS:
        return type(value) in _SCALARS
    todo = [value]
    while todo:
        item = todo.pop()
        values = item.values() if type(item) is dict else item
        kinds = set(map(type, values))
        if kinds <= _SCALARS:
            continue
        if not kinds <= _KINDS:
            return False
        todo += [v for v in values if type(v) in _CONTAINERS]
    return True


def is_plain(value: Any) -> bool:
    """Whether ``value`` takes the fast path: only text, integers, booleans, null, dicts,
    lists and tuples (exact types)."""
    return _plain(value)


def canonical_json(value: Any, *, plain: bool = False) -> bytes:
    """RFC 8785 bytes; ``InvalidInput`` for values JSON cannot carry exactly (NaN, huge ints).
    ``plain``: the caller checked that :func:`is_plain` holds for ``value`` (or for each part
    of it that is not text), so it is not checked again."""
    if plain or _plain(value):
        try:
            text = orjson.dumps(value, option=_OPTIONS)
        except orjson.JSONEncodeError:
            pass  # a huge integer, a key that is not text, a lone surrogate: rfc8785 names it
        else:
            if text.isascii() or not _BEYOND_BMP.search(text):
                return text
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise InvalidInput(f"not canonical JSON: {exc}") from exc


def call_digest(action: str, resource: str, arguments: Any) -> str:
    """``sha256:`` + hex of the canonical ``{"action", "arguments", "resource"}`` object: what an
    approval is bound to, so a changed argument is a different call."""
    return call_digest_of(action, resource, canonical_json(arguments))


def call_digest_of(action: str, resource: str, canonical_arguments: bytes) -> str:
    """:func:`call_digest` for arguments already in canonical form (the checkpoint needs that
    form anyway, so they are serialised once). The object is assembled around them with its
    keys in RFC 8785 order, so the bytes are the whole object's canonical form."""
    body = b"".join(
        (
            b'{"action":',
            canonical_json(action),
            b',"arguments":',
            canonical_arguments,
            b',"resource":',
            canonical_json(resource),
            b"}",
        )
    )
    return "sha256:" + hashlib.sha256(body).hexdigest()

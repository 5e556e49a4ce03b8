"""Canonical JSON (RFC 8785, JSON Canonicalization Scheme) and digests over it.

The same value always gives the same bytes, whoever serialises it, so a digest of a call
(tool name + arguments) computed by the SDK, the gateway and the approval flow agree.

The ``rfc8785`` package serialises in Python, about 150 µs for an audit record — more than
everything else an audit append does. For the values that are nearly all of ours (no floats,
integers within I-JSON's 2^53, text within the Basic Multilingual Plane) RFC 8785's output is
exactly what the standard library's C encoder writes with sorted keys, compact separators and
UTF-8 output: the same escapes (the short ones for backspace, form feed, newline, return
and tab, other controls as lowercase ``u00xx`` escapes), and key order by UTF-16 code
units equals code-point order when no character lies beyond U+FFFF. Those values take that
path (about 15 µs); any other value — a float, a character beyond U+FFFF, a value JSON cannot
carry — goes to ``rfc8785`` (a property test holds the two equal).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import rfc8785

from tether.errors import InvalidInput

__all__ = ["call_digest", "call_digest_of", "canonical_json"]


_SAFE_INT = 2**53 - 1
_BEYOND_BMP = re.compile("[\U00010000-\U0010ffff]")


def _plain(value: Any) -> bool:
    """Whether ``value`` is JSON without floats, with safe integers and text keys (a walk
    with a stack: recursion and generators cost more than the encoding itself)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if item is None or isinstance(item, str | bool):
            continue
        if isinstance(item, int):
            if not -_SAFE_INT <= item <= _SAFE_INT:
                return False
        elif isinstance(item, dict):
            if not all(isinstance(key, str) for key in item):
                return False
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        else:
            return False
    return True


def canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes; ``InvalidInput`` for values JSON cannot carry exactly (NaN, huge ints)."""
    if _plain(value):
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        if not _BEYOND_BMP.search(text):
            try:
                return text.encode()
            except UnicodeEncodeError:
                pass  # a lone surrogate: rfc8785 names the problem
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

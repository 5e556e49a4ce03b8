"""Canonical JSON (RFC 8785, JSON Canonicalization Scheme) and digests over it.

The same value always gives the same bytes, whoever serialises it, so a digest of a call
(tool name + arguments) computed by the SDK, the gateway and the approval flow agree.
"""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785

from tether.errors import InvalidInput

__all__ = ["call_digest", "call_digest_of", "canonical_json"]


def canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes; ``InvalidInput`` for values JSON cannot carry exactly (NaN, huge ints)."""
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

"""Canonical JSON (RFC 8785, JSON Canonicalization Scheme) and digests over it.

The same value always gives the same bytes, whoever serialises it, so a digest of a call
(tool name + arguments) computed by the SDK, the gateway and the approval flow agree.
"""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785

from tether.errors import InvalidInput

__all__ = ["call_digest", "canonical_json"]


def canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes; ``InvalidInput`` for values JSON cannot carry exactly (NaN, huge ints)."""
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise InvalidInput(f"not canonical JSON: {exc}") from exc


def call_digest(action: str, resource: str, arguments: Any) -> str:
    """``sha256:`` + hex of the canonical ``{"action", "arguments", "resource"}`` object: what an
    approval is bound to, so a changed argument is a different call."""
    body = canonical_json({"action": action, "resource": resource, "arguments": arguments})
    return "sha256:" + hashlib.sha256(body).hexdigest()

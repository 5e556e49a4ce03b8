"""Identifiers and random values.

Ids are a short type prefix plus 128 random bits in base32 (``agt_…``), so they are unguessable,
sortable by nothing and readable in logs. Secrets use :func:`secrets.token_urlsafe`.
"""

from __future__ import annotations

import base64
import hashlib
import secrets

__all__ = ["new_id", "new_secret", "sha256_hex"]


def new_id(prefix: str) -> str:
    """A new id such as ``agt_5mz2k…`` with 128 random bits."""
    raw = base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=").lower()
    return f"{prefix}_{raw}"


def new_secret(nbytes: int = 32) -> str:
    """A URL-safe random secret of ``nbytes`` random bytes."""
    return secrets.token_urlsafe(nbytes)


def sha256_hex(value: str | bytes) -> str:
    data = value.encode("utf-8") if isinstance(value, str) else value
    return hashlib.sha256(data).hexdigest()

"""Sealed values: short-lived facts the server hands to a browser or client and reads back —
an authorization request between its pages, an authorization code, a sign-in session cookie.

Sealing is AES-256-GCM with a key derived from the key-encryption key (every replica holds the
same), so no replica needs a shared table to recognise what another issued, and the holder can
neither read nor alter it. Each use has its own ``purpose``, bound as associated data, so a
value sealed for one use never opens as another; each carries its expiry, checked on opening.
Values are JSON objects; the text form is base64url without padding.

Example::

    sealer = Sealer(kek.derive(b"tether sealed values v1"))
    code = sealer.seal({"user": "alice"}, purpose="code", expires_at=now + 60)
    sealer.open(code, purpose="code", now=now)     # {"user": "alice", "exp": …}
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tether.errors import TokenInvalid

__all__ = ["MAX_SEALED", "Sealer"]

_NONCE = 12
#: The longest sealed text opened at all (a cookie or form field is far shorter).
MAX_SEALED = 8192


class Sealer:
    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "Sealer(<hidden>)"

    def seal(self, value: Mapping[str, Any], *, purpose: str, expires_at: int) -> str:
        payload = json.dumps({**value, "exp": expires_at}, separators=(",", ":")).encode()
        nonce = os.urandom(_NONCE)
        sealed = nonce + self._aead.encrypt(nonce, payload, purpose.encode())
        return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")

    def open(self, text: str, *, purpose: str, now: int) -> dict[str, Any]:
        """The value, or ``TokenInvalid`` if it was altered, sealed for another purpose or by
        another key, malformed, or expired."""
        if not isinstance(text, str) or not 0 < len(text) <= MAX_SEALED:
            raise TokenInvalid("not a sealed value", details={"reason": "format"})
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            payload = self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], purpose.encode())
            value = json.loads(payload)
        except (binascii.Error, ValueError, InvalidTag) as exc:
            raise TokenInvalid("not a sealed value", details={"reason": "format"}) from exc
        if not isinstance(value, dict) or not isinstance(value.get("exp"), int):
            raise TokenInvalid("not a sealed value", details={"reason": "format"})
        if value["exp"] <= now:
            raise TokenInvalid("the sealed value has expired", details={"reason": "expired"})
        return value

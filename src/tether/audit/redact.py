"""Sensitive values in audit records, replaced by their HMAC (as Vault's audit devices do).

A decision record keeps what the engine evaluated, so that a proposed policy set can be
replayed against it; that includes the call's arguments and context, which may carry a
password, an API key or a token an agent passes to a tool. Every value under a key that names
such a thing (:data:`SENSITIVE`, matched in any case, as a part of the key: ``db_password``,
``X-Api-Key``, ``privateKey``; :data:`SENSITIVE_NAMES` as the whole key) is written as
``hmac-sha256:<hex>`` instead: the log never holds it, yet an auditor who has a value can
find the records that carried it — ``tether audit hash VALUE`` asks the server for its HMAC,
as ``vault write sys/audit-hash`` does. The call's digest (a plain SHA-256 of the arguments,
from which a redacted value could be guessed) is recorded as its HMAC too.

The HMAC key is derived from the key-encryption key (HKDF, purpose ``tether audit hmac v1``):
not in the database, the same on every replica, and so stable across restarts.

Example::

    >>> redactor = Redactor(bytes(32))
    >>> redacted = redactor.redact({"query": "hours", "api_key": "sk-live-123"})
    >>> redacted["query"], redacted["api_key"] == redactor.hash("sk-live-123")
    ('hours', True)
    >>> redacted["api_key"][:12]
    'hmac-sha256:'
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from typing import Any

from tether._internal.canonical import canonical_json

__all__ = ["SENSITIVE", "SENSITIVE_NAMES", "Redactor"]


def _folded(key: str) -> str:
    return key.lower().replace("_", "").replace("-", "")


#: Parts of a key whose value is sensitive, compared with the key lowercased and without
#: ``_`` or ``-`` (``privateKey``, ``private_key`` and ``X-Private-Key`` alike).
SENSITIVE = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "token",
        "apikey",
        "accesskey",
        "privatekey",
        "signingkey",
        "bearer",
        "cookie",
        "credential",
        "assertion",
    }
)
#: Keys sensitive only as a whole name (as parts they would catch ``author`` or
#: ``authorization_details``, which are not secrets).
SENSITIVE_NAMES = frozenset({"pwd", "auth", "authorization", "proxyauthorization"})
PREFIX = "hmac-sha256:"
#: Keys whose verdict is kept.
_MAX_KNOWN = 4096


class Redactor:
    """HMACs the values of sensitive keys in JSON values (see the module docstring)."""

    __slots__ = ("_key", "_known", "_names", "_sensitive")

    def __init__(
        self,
        key: bytes,
        *,
        sensitive: Iterable[str] = SENSITIVE,
        names: Iterable[str] = SENSITIVE_NAMES,
    ) -> None:
        if len(key) < 32:
            raise ValueError("an HMAC key is at least 32 bytes")
        self._key = key
        self._sensitive = tuple(_folded(s) for s in sensitive)
        self._names = frozenset(_folded(n) for n in names)
        #: Keys already judged: the same few names come back on every decision.
        self._known: dict[str, bool] = {}

    def __repr__(self) -> str:
        return "Redactor(<key hidden>)"

    def hash(self, value: str) -> str:
        """``hmac-sha256:<hex>`` of ``value`` (UTF-8)."""
        digest = hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()
        return PREFIX + digest

    def is_sensitive(self, key: str) -> bool:
        known = self._known.get(key)
        if known is None:
            name = _folded(key)
            known = name in self._names or any(part in name for part in self._sensitive)
            if len(self._known) >= _MAX_KNOWN:
                self._known.clear()  # many distinct keys: start over (bounded memory)
            self._known[key] = known
        return known

    def redact(self, value: Any) -> Any:
        """``value`` with every sensitive key's value replaced by its HMAC (a string as its
        UTF-8 text, anything else as its compact sorted JSON); the rest as it was."""
        if isinstance(value, dict):
            return {
                k: self._hidden(v)
                if isinstance(k, str) and self.is_sensitive(k)
                else self.redact(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.redact(v) for v in value]
        return value

    def redact_text(self, text: str) -> str:
        """:meth:`redact` for a value kept as canonical JSON text (a call's arguments, as
        policies read them). Text that names no sensitive key anywhere is returned as it is,
        unparsed: the common case on the decision path."""
        folded = _folded(text)
        if not any(part in folded for part in (*self._sensitive, *self._names)):
            return text
        return canonical_json(self.redact(json.loads(text))).decode()

    def _hidden(self, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            return self.hash(value)
        return self.hash(json.dumps(value, sort_keys=True, separators=(",", ":"), default=str))

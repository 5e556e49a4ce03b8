"""Public JWKs that agents register: parsed once, strictly, into a key that can only verify.

An agent proves who it is with a key pair it holds; Tether stores only the public half. A JWK
is refused (``invalid_key`` with the rule it broke in ``details["rule"]``) when it carries
private members, is symmetric, uses a curve or size outside the allow-list, names an ``alg``
that does not fit the key, is meant for encryption, or is larger than 4 KiB. The key id Tether
uses is the RFC 7638 thumbprint, computed by joserfc's ``key.thumbprint()`` over the required
members only (hashing a dict with ``kid`` or ``use`` gives a wrong thumbprint).

Example::

    >>> jwk = PublicJwk.parse({"kty": "OKP", "crv": "Ed25519",
    ...                        "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"})
    >>> jwk.alg, jwk.thumbprint
    ('Ed25519', 'kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k')
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey, RSAKey

from tether.errors import InvalidKey

__all__ = [
    "AGENT_KEY_ALGORITHMS",
    "MAX_JWK_BYTES",
    "MAX_SET_KEYS",
    "PublicJwk",
    "VerifyingKey",
    "parse_key_set",
]

#: The signature algorithms an agent key may use. Never ``none``, never HS* (a shared secret).
AGENT_KEY_ALGORITHMS = frozenset({"ES256", "ES384", "EdDSA", "Ed25519", "RS256", "PS256"})
MAX_JWK_BYTES = 4096
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192

VerifyingKey = ECKey | OKPKey | RSAKey

#: The most keys read from one published key set.
MAX_SET_KEYS = 50

_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_CURVE_ALGS = {"P-256": ("ES256",), "P-384": ("ES384",), "Ed25519": ("Ed25519", "EdDSA")}
_RSA_ALGS = ("RS256", "PS256")
_REQUIRED = {"EC": ("crv", "x", "y"), "OKP": ("crv", "x"), "RSA": ("n", "e")}


def _refuse(rule: str, message: str) -> InvalidKey:
    return InvalidKey(message, details={"rule": rule})


@dataclass(frozen=True, slots=True)
class PublicJwk:
    """A validated public key: its type, the one algorithm it verifies, its thumbprint."""

    kty: str
    alg: str
    thumbprint: str
    key: VerifyingKey

    @property
    def kid(self) -> str:
        return self.thumbprint

    @classmethod
    def parse(cls, data: object) -> PublicJwk:
        if not isinstance(data, Mapping):
            raise _refuse("not_an_object", "a JWK is a JSON object")
        try:
            size = len(json.dumps(dict(data), separators=(",", ":")))
        except (TypeError, ValueError, RecursionError) as exc:
            raise _refuse("not_json", "a JWK holds only JSON values") from exc
        if size > MAX_JWK_BYTES:
            raise _refuse("too_large", f"a JWK is at most {MAX_JWK_BYTES} bytes")
        kty = _check_form(data)
        allowed = _allowed_algs(kty, data.get("crv"))
        alg = data.get("alg", allowed[0])
        if not isinstance(alg, str) or alg not in AGENT_KEY_ALGORITHMS:
            raise _refuse("alg_not_allowed", f"alg must be one of {sorted(AGENT_KEY_ALGORITHMS)}")
        if alg not in allowed:
            raise _refuse("alg_mismatch", f"alg {alg} does not fit this key")
        members: dict[str, Any] = {m: data[m] for m in _REQUIRED[kty]}
        members["kty"] = kty
        if kty == "RSA" and not MIN_RSA_BITS <= _modulus_bits(members["n"]) <= MAX_RSA_BITS:
            raise _refuse("rsa_size", f"an RSA key has {MIN_RSA_BITS} to {MAX_RSA_BITS} bits")
        key = _import(kty, members)
        return cls(kty=kty, alg=str(alg), thumbprint=key.thumbprint(), key=key)

    def to_dict(self) -> dict[str, Any]:
        """The public JWK as Tether publishes it: ``kid`` = thumbprint, ``alg``, ``use`` sig."""
        public: dict[str, Any] = dict(self.key.as_dict(private=False))
        return {**public, "kid": self.thumbprint, "alg": self.alg, "use": "sig"}


def parse_key_set(document: object) -> dict[str, PublicJwk]:
    """A published JWK Set (RFC 7517 §5) as ``{kid: key}`` — the signing keys only: a key
    for encryption, a private or symmetric one, or one outside the allow-list is skipped, never
    trusted. A key without ``kid`` is known by its RFC 7638 thumbprint."""
    keys = document.get("keys") if isinstance(document, Mapping) else None
    if not isinstance(keys, list):
        raise _refuse("not_a_key_set", "a JWK Set is an object with a 'keys' list")
    found: dict[str, PublicJwk] = {}
    for data in keys[:MAX_SET_KEYS]:
        try:
            key = PublicJwk.parse(data)
        except InvalidKey:
            continue
        kid = data.get("kid") if isinstance(data.get("kid"), str) else key.thumbprint
        found[kid] = key
    return found


def _check_form(data: Mapping[str, Any]) -> str:
    """The checks that need no key material: members present, purpose, no secrets."""
    private = sorted(_PRIVATE_MEMBERS.intersection(data))
    if private:
        raise _refuse(
            "private_key_material", f"register the public key only; remove {', '.join(private)}"
        )
    kty = data.get("kty")
    if kty == "oct":
        raise _refuse("symmetric_key", "shared secrets are not accepted; register a public key")
    if not isinstance(kty, str) or kty not in _REQUIRED:
        raise _refuse("unsupported_kty", "kty must be EC, OKP or RSA")
    use = data.get("use")
    if use is not None and use != "sig":
        raise _refuse("use_must_be_sig", "an agent key signs: use must be 'sig'")
    ops = data.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or any(op != "verify" for op in ops)):
        raise _refuse("key_ops_must_be_verify", "key_ops may only contain 'verify'")
    missing = [m for m in _REQUIRED[kty] if not isinstance(data.get(m), str)]
    if missing:
        raise _refuse("missing_member", f"a {kty} key needs {', '.join(missing)}")
    return kty


def _modulus_bits(n: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(n + "=" * (-len(n) % 4))
    except (binascii.Error, ValueError) as exc:
        raise _refuse("malformed_key", "the RSA modulus is not base64url") from exc
    return int.from_bytes(raw, "big").bit_length()


def _allowed_algs(kty: str, crv: object) -> tuple[str, ...]:
    if kty == "RSA":
        return _RSA_ALGS
    if not isinstance(crv, str) or crv not in _CURVE_ALGS:
        raise _refuse("unsupported_curve", "curve must be P-256, P-384 or Ed25519")
    algs = _CURVE_ALGS[crv]
    if (kty == "OKP") != (crv == "Ed25519"):
        raise _refuse("unsupported_curve", f"curve {crv} does not belong to kty {kty}")
    return algs


def _import(kty: str, members: dict[str, Any]) -> VerifyingKey:
    try:
        if kty == "EC":
            return ECKey.import_key(members)
        if kty == "OKP":
            return OKPKey.import_key(members)
        return RSAKey.import_key(members)
    except (JoseError, ValueError, TypeError) as exc:
        # cryptography refuses points off the curve and malformed encodings here.
        raise _refuse("malformed_key", "the key's members do not form a valid public key") from exc

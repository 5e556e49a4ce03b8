"""The agent side of ``private_key_jwt`` (RFC 7523 §2.2, §3): make a key pair, sign a client
assertion. Used by the CLI's developer helpers, the demo and the tests; the SDK builds on it.

Example::

    >>> pair = generate_agent_key()
    >>> sorted(pair.public_jwk)
    ['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y']
    >>> token = sign_client_assertion(pair.private_pem, client_id="spiffe://td/agent/a",
    ...                               audience="https://tether/oauth2/token", now=1_700_000_000)
    >>> token.count(".")
    2
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwt
from joserfc.jwk import ECKey

from tether.errors import InvalidKey

__all__ = ["AgentKeyPair", "generate_agent_key", "sign_client_assertion"]

MAX_ASSERTION_LIFETIME = 300


@dataclass(frozen=True)
class AgentKeyPair:
    private_pem: bytes
    public_jwk: dict[str, str]


def generate_agent_key() -> AgentKeyPair:
    """A new P-256 key pair: PKCS#8 PEM private key, and the public JWK (``kid`` = RFC 7638
    thumbprint, ``alg`` ES256)."""
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return AgentKeyPair(private_pem=pem, public_jwk=_public_jwk(_import(pem)))


def sign_client_assertion(
    private_pem: bytes,
    *,
    client_id: str,
    audience: str,
    now: int,
    lifetime: int = 60,
) -> str:
    """A fresh single-use assertion: ``iss`` = ``sub`` = ``client_id``, ``aud``, ``iat``,
    ``exp`` = now + lifetime (at most 5 minutes), a random ``jti``."""
    if not 1 <= lifetime <= MAX_ASSERTION_LIFETIME:
        raise InvalidKey("an assertion lives between 1 second and 5 minutes")
    key = _import(private_pem)
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": now,
        "exp": now + lifetime,
        "jti": str(uuid.uuid4()),
    }
    header = {"alg": "ES256", "kid": key.thumbprint(), "typ": "JWT"}
    return jwt.encode(header, claims, key, algorithms=["ES256"])


def _import(private_pem: bytes) -> ECKey:
    try:
        key = ECKey.import_key(private_pem)
    except Exception as exc:
        raise InvalidKey("not a PEM-encoded EC private key") from exc
    if key.curve_name != "P-256" or not key.is_private:
        raise InvalidKey("an agent key here is a P-256 private key")
    return key


def _public_jwk(key: ECKey) -> dict[str, str]:
    public = {
        k: str(v) for k, v in key.as_dict(private=False).items() if k in ("kty", "crv", "x", "y")
    }
    return public | {"kid": key.thumbprint(), "alg": "ES256", "use": "sig"}

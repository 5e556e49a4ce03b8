"""Craft JWTs by hand, so tests can build exactly the malformed or hostile assertions an
attacker would (alg none, HMAC with a public key, mismatched alg, bad claims)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Mapping

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

DELETE = object()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(obj: Mapping[str, object]) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def es256_sign(private_pem: bytes, signing_input: bytes) -> bytes:
    key = serialization.load_pem_private_key(private_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def claims_for(client_id: str, audience: str, **overrides: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": now,
        "exp": now + 60,
        "jti": str(uuid.uuid4()),
    }
    for key, value in overrides.items():
        if value is DELETE:
            claims.pop(key, None)
        else:
            claims[key] = value
    return claims


def forge(
    private_pem: bytes,
    claims: Mapping[str, object],
    *,
    header: Mapping[str, object] | None = None,
    alg: str = "ES256",
    hmac_secret: bytes | None = None,
) -> str:
    head = dict(header or {"alg": alg, "typ": "JWT"})
    signing_input = f"{_segment(head)}.{_segment(claims)}".encode()
    if alg == "none":
        signature = b""
    elif hmac_secret is not None:
        signature = hmac.new(hmac_secret, signing_input, hashlib.sha256).digest()
    else:
        signature = es256_sign(private_pem, signing_input)
    return f"{signing_input.decode()}.{b64url(signature)}"

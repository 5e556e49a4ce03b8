"""Agent public keys: what is accepted, and every way a JWK is refused."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tether.crypto.jwk import PublicJwk
from tether.errors import InvalidKey


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _ec(curve: ec.EllipticCurve | None = None) -> dict[str, Any]:
    curve = curve or ec.SECP256R1()
    numbers = ec.generate_private_key(curve).public_key().public_numbers()
    size = (curve.key_size + 7) // 8
    return {
        "kty": "EC",
        "crv": "P-256" if curve.key_size == 256 else "P-384",
        "x": _b64(numbers.x.to_bytes(size, "big")),
        "y": _b64(numbers.y.to_bytes(size, "big")),
    }


def _rsa(bits: int) -> dict[str, Any]:
    numbers = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    n = numbers.public_numbers().n
    return {"kty": "RSA", "n": _b64(n.to_bytes((n.bit_length() + 7) // 8, "big")), "e": "AQAB"}


RFC8037_ED25519 = {
    "kty": "OKP",
    "crv": "Ed25519",
    "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
}


def test_rfc7638_thumbprint_is_the_kid() -> None:
    # RFC 8037 Appendix A.3 gives this key's RFC 7638 thumbprint.
    jwk = PublicJwk.parse({**RFC8037_ED25519, "kid": "my-label", "use": "sig"})
    assert jwk.thumbprint == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    assert jwk.to_dict()["kid"] == jwk.thumbprint


@pytest.mark.parametrize(
    ("jwk", "alg"),
    [
        (_ec(), "ES256"),
        (_ec(ec.SECP384R1()), "ES384"),
        (RFC8037_ED25519, "Ed25519"),
        ({**RFC8037_ED25519, "alg": "EdDSA"}, "EdDSA"),
        (_rsa(2048), "RS256"),
        ({**_rsa(2048), "alg": "PS256"}, "PS256"),
    ],
)
def test_allowed_key_types_get_their_algorithm(jwk: dict[str, Any], alg: str) -> None:
    assert PublicJwk.parse(jwk).alg == alg


GOOD = _ec()
REFUSED: dict[str, tuple[object, str]] = {
    "private_key_in_the_jwk": ({**GOOD, "d": "AAAA"}, "private_key_material"),
    "shared_secret_oct_key": ({"kty": "oct", "k": "c2VjcmV0"}, "private_key_material"),
    "symmetric_kty_without_k": ({"kty": "oct"}, "symmetric_key"),
    "unknown_kty": ({"kty": "XYZ"}, "unsupported_kty"),
    "not_an_object": (["kty", "EC"], "not_an_object"),
    "encryption_key": ({**GOOD, "use": "enc"}, "use_must_be_sig"),
    "key_ops_sign": ({**GOOD, "key_ops": ["sign"]}, "key_ops_must_be_verify"),
    "secp256k1_curve": ({**GOOD, "crv": "secp256k1"}, "unsupported_curve"),
    "x25519_is_not_a_signing_key": ({**RFC8037_ED25519, "crv": "X25519"}, "unsupported_curve"),
    "ed25519_on_an_ec_kty": ({**GOOD, "crv": "Ed25519"}, "unsupported_curve"),
    "alg_none": ({**GOOD, "alg": "none"}, "alg_not_allowed"),
    "alg_hs256": ({**GOOD, "alg": "HS256"}, "alg_not_allowed"),
    "alg_of_another_key_type": ({**GOOD, "alg": "RS256"}, "alg_mismatch"),
    "es384_on_p256": ({**GOOD, "alg": "ES384"}, "alg_mismatch"),
    "point_not_on_the_curve": ({**GOOD, "y": GOOD["x"]}, "malformed_key"),
    "missing_y": ({k: v for k, v in GOOD.items() if k != "y"}, "missing_member"),
    "rsa_1024": (_rsa(1024), "rsa_size"),
    "oversized": ({**GOOD, "x5c": ["A" * 5000]}, "too_large"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_bad_jwk_is_refused_with_the_rule(case: str) -> None:
    jwk, rule = REFUSED[case]
    with pytest.raises(InvalidKey) as caught:
        PublicJwk.parse(jwk)
    assert caught.value.details["rule"] == rule


def test_published_form_carries_only_public_members() -> None:
    published = PublicJwk.parse({**GOOD, "kid": "x", "x5u": "https://evil"}).to_dict()
    assert set(published) == {"kty", "crv", "x", "y", "kid", "alg", "use"}

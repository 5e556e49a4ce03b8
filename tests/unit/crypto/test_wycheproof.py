"""Wycheproof vectors against Tether's JWS parsing and signature check.

The rule for JWS vectors: a vector is accepted only if the key is one an agent may register,
the token parses strictly, and the signature verifies with the key's own algorithm. Every
vector labelled invalid must be refused; every valid one for an allowed algorithm accepted.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tether.crypto.jwk import AGENT_KEY_ALGORITHMS, PublicJwk
from tether.crypto.jwt import UnverifiedJws, verify_signature
from tether.errors import InvalidKey, TokenInvalid

VECTORS = Path(__file__).parents[2] / "vectors" / "wycheproof"
#: Labelled invalid but byte-identical to the valid tcId 357 (see the vectors' README).
MISLABELLED = {367, 370}
#: Labelled valid; a verifier that pins alg to the key or refuses stray characters refuses them.
STRICTER_IS_FINE = {346, 347, 350, 351, 372, 373}


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text())
    return data


def _jws_cases() -> list[Any]:
    cases = []
    for group in _load("json_web_signature_test.json")["testGroups"]:
        key = group.get("public") or group.get("private")
        for test in group["tests"]:
            if test["tcId"] in MISLABELLED:
                continue
            cases.append(pytest.param(key, test, id=f"tc{test['tcId']}-{test['comment']}"))
    return cases


def _accepts(key: dict[str, Any], token: str) -> bool:
    try:
        jwk = PublicJwk.parse(key)
        verify_signature(UnverifiedJws.parse(token), key=jwk, algorithms=(jwk.alg,))
    except (InvalidKey, TokenInvalid):
        return False
    return True


@pytest.mark.parametrize(("key", "test"), _jws_cases())
def test_wycheproof_jws_vector(key: dict[str, Any], test: dict[str, Any]) -> None:
    accepted = _accepts(key, test["jws"])
    if test["result"] == "invalid":
        assert not accepted
    elif test["tcId"] in STRICTER_IS_FINE or test["result"] == "acceptable":
        return
    elif key.get("alg") in AGENT_KEY_ALGORITHMS and "d" not in key:
        assert accepted
    else:
        assert not accepted, "a valid token for an algorithm outside the allow-list"


def _ec_jwk(public: dict[str, str]) -> dict[str, str]:
    def coordinate(hexa: str) -> str:
        raw = int(hexa, 16).to_bytes(32, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return {
        "kty": "EC",
        "crv": "P-256",
        "x": coordinate(public["wx"]),
        "y": coordinate(public["wy"]),
    }


def _signature_cases(name: str, alg: str) -> list[Any]:
    cases = []
    for group in _load(name)["testGroups"]:
        jwk = group.get("publicKeyJwk") or _ec_jwk(group["publicKey"])
        for test in group["tests"]:
            cases.append(pytest.param(jwk, alg, test, id=f"tc{test['tcId']}"))
    return cases


@pytest.mark.parametrize(
    ("jwk", "alg", "test"),
    _signature_cases("ecdsa_secp256r1_sha256_p1363_test.json", "ES256")
    + _signature_cases("ed25519_test.json", "Ed25519"),
)
def test_wycheproof_signature_vector(jwk: dict[str, Any], alg: str, test: dict[str, Any]) -> None:
    key = PublicJwk.parse({k: v for k, v in jwk.items() if k != "kid"})
    jws = UnverifiedJws(
        header={"alg": alg},
        payload=b"",
        signing_input=bytes.fromhex(test["msg"]),
        signature=bytes.fromhex(test["sig"]),
    )
    try:
        verify_signature(jws, key=key, algorithms=(alg,))
    except TokenInvalid:
        accepted = False
    else:
        accepted = True
    assert accepted == (test["result"] == "valid")

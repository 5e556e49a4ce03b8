"""The dependency-free Ed25519 verifier follows RFC 8032 §5.1.7 and agrees with pyca/cryptography.

The module under test must not import cryptography; these tests do, to sign and to compare.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.audit.ed25519 import SignatureInvalid, verify

VECTORS = Path(__file__).parents[2] / "vectors" / "wycheproof"

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, -1, P) % P
#: The encodings of the base point B and of the neutral element (x = 0, y = 1).
BASE = bytes.fromhex("58" + "66" * 31)
IDENTITY = (1).to_bytes(32, "little")

#: RFC 8032 §7.1 TEST 1, 2 and 3: (secret key, public key, message, signature).
RFC8032 = {
    "TEST 1": (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555"
        "fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    "TEST 2": (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    "TEST 3": (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
        "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
}
TEST1_KEY = bytes.fromhex(RFC8032["TEST 1"][1])
TEST1_SIGNATURE = bytes.fromhex(RFC8032["TEST 1"][3])


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text())
    return data


WYCHEPROOF = _load("ed25519_test.json")


def _wycheproof_cases() -> list[Any]:
    return [
        pytest.param(group["publicKey"]["pk"], test, id=f"tc{test['tcId']}")
        for group in WYCHEPROOF["testGroups"]
        for test in group["tests"]
    ]


WYCHEPROOF_CASES = _wycheproof_cases()


def _accepts(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        verify(public_key, message, signature)
    except SignatureInvalid:
        return False
    return True


def _pyca_accepts(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def _flip(data: bytes, bit: int) -> bytes:
    flipped = bytearray(data)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


def _off_curve_y() -> int:
    """The smallest y for which (y^2 - 1) / (d y^2 + 1) has no square root: no x exists."""
    for y in itertools.count(2):
        ratio = (y * y - 1) * pow(D * y * y + 1, -1, P) % P
        if pow(ratio, (P - 1) // 2, P) == P - 1:
            return y
    raise AssertionError("unreachable")


def test_every_wycheproof_vector_is_run() -> None:
    assert len(WYCHEPROOF_CASES) == WYCHEPROOF["numberOfTests"] == 151
    assert len({case.id for case in WYCHEPROOF_CASES}) == len(WYCHEPROOF_CASES)


@pytest.mark.parametrize(("public_key", "test"), WYCHEPROOF_CASES)
def test_wycheproof_vector_follows_its_label_and_agrees_with_pyca(
    public_key: str, test: dict[str, Any]
) -> None:
    key, message, signature = (bytes.fromhex(h) for h in (public_key, test["msg"], test["sig"]))
    assert test["result"] in {"valid", "invalid"}
    if test["result"] == "valid":
        verify(key, message, signature)
    else:
        with pytest.raises(SignatureInvalid):
            verify(key, message, signature)
    assert _pyca_accepts(key, message, signature) == (test["result"] == "valid")


RFC8032_CASES = [pytest.param(*vector, id=name) for name, vector in RFC8032.items()]


@pytest.mark.parametrize(("secret", "public", "message", "signature"), RFC8032_CASES)
def test_rfc8032_test_vector_verifies(
    secret: str, public: str, message: str, signature: str
) -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret))
    assert key.public_key().public_bytes_raw().hex() == public
    assert key.sign(bytes.fromhex(message)).hex() == signature
    verify(bytes.fromhex(public), bytes.fromhex(message), bytes.fromhex(signature))


@pytest.mark.parametrize(
    ("public", "message", "signature"),
    [pytest.param(*vector[1:], id=name) for name, vector in RFC8032.items()],
)
def test_rfc8032_signature_over_another_message_is_refused(
    public: str, message: str, signature: str
) -> None:
    with pytest.raises(SignatureInvalid, match="does not verify"):
        verify(bytes.fromhex(public), bytes.fromhex(message) + b"!", bytes.fromhex(signature))


def test_non_canonical_s_is_refused_as_malleable() -> None:
    """S + L satisfies the group equation just as S does; only S < L is accepted."""
    s = int.from_bytes(TEST1_SIGNATURE[32:], "little")
    malleated = TEST1_SIGNATURE[:32] + (s + L).to_bytes(32, "little")
    verify(TEST1_KEY, b"", TEST1_SIGNATURE)
    with pytest.raises(SignatureInvalid, match="group order"):
        verify(TEST1_KEY, b"", malleated)
    assert not _pyca_accepts(TEST1_KEY, b"", malleated)


def test_s_of_all_ones_is_refused() -> None:
    with pytest.raises(SignatureInvalid, match="group order"):
        verify(TEST1_KEY, b"", TEST1_SIGNATURE[:32] + b"\xff" * 32)


def test_the_neutral_element_as_key_verifies_cofactorless_like_openssl() -> None:
    """No small-order check on A (OpenSSL has none): with A = 0, [1]B is R for any message."""
    verify(IDENTITY, b"any message", BASE + (1).to_bytes(32, "little"))
    assert _pyca_accepts(IDENTITY, b"any message", BASE + (1).to_bytes(32, "little"))


def test_key_with_y_not_below_p_is_refused() -> None:
    """y = p + 1 encodes the neutral element non-canonically; RFC 8032 §5.1.3 refuses it.

    OpenSSL (so pyca/cryptography) reduces y modulo p and accepts this key; Wycheproof has no
    such vector. This verifier is the stricter of the two, as the RFC is.
    """
    with pytest.raises(SignatureInvalid, match=r"public key is not a canonical .*y >= p"):
        verify((P + 1).to_bytes(32, "little"), b"m", BASE + (1).to_bytes(32, "little"))


def test_key_with_x_zero_and_sign_bit_is_refused() -> None:
    """x = 0 with the sign bit set is a second encoding of the same point (RFC 8032 §5.1.3)."""
    key = (1 | 1 << 255).to_bytes(32, "little")
    with pytest.raises(SignatureInvalid, match=r"public key is not a canonical .*sign bit"):
        verify(key, b"m", BASE + (1).to_bytes(32, "little"))


def test_key_off_the_curve_is_refused() -> None:
    key = _off_curve_y().to_bytes(32, "little")
    with pytest.raises(SignatureInvalid, match="public key is not a point on the curve"):
        verify(key, b"", TEST1_SIGNATURE)


def test_r_off_the_curve_is_refused() -> None:
    r = _off_curve_y().to_bytes(32, "little")
    with pytest.raises(SignatureInvalid, match="R is not a point on the curve"):
        verify(TEST1_KEY, b"", r + TEST1_SIGNATURE[32:])


@pytest.mark.parametrize(
    ("r", "reason"),
    [
        pytest.param((P + 1).to_bytes(32, "little"), "y >= p", id="y-not-below-p"),
        pytest.param((1 | 1 << 255).to_bytes(32, "little"), "sign bit", id="x-zero-sign-bit"),
    ],
)
def test_non_canonical_r_is_refused(r: bytes, reason: str) -> None:
    """With A = 0 and S = 0, R = 0 verifies; its other encodings must not."""
    zero = (0).to_bytes(32, "little")
    verify(IDENTITY, b"m", IDENTITY + zero)
    with pytest.raises(SignatureInvalid, match=f"R is not a canonical .*{reason}"):
        verify(IDENTITY, b"m", r + zero)


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_public_key_of_the_wrong_length_is_refused(size: int) -> None:
    with pytest.raises(SignatureInvalid, match="public key is 32 bytes"):
        verify((TEST1_KEY * 2)[:size], b"", TEST1_SIGNATURE)


@pytest.mark.parametrize("size", [0, 32, 63, 65, 128])
def test_signature_of_the_wrong_length_is_refused(size: int) -> None:
    with pytest.raises(SignatureInvalid, match="signature is 64 bytes"):
        verify(TEST1_KEY, b"", (TEST1_SIGNATURE * 2)[:size])


def test_signature_invalid_is_a_value_error() -> None:
    assert issubclass(SignatureInvalid, ValueError)


SEEDS = st.binary(min_size=32, max_size=32)
MESSAGES = st.binary(max_size=200)


@settings(max_examples=50, deadline=None)
@given(seed=SEEDS, message=MESSAGES)
def test_signatures_made_by_pyca_verify(seed: bytes, message: bytes) -> None:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    verify(key.public_key().public_bytes_raw(), message, key.sign(message))


@settings(max_examples=50, deadline=None)
@given(seed=SEEDS, message=st.binary(min_size=1, max_size=200), data=st.data())
def test_a_flipped_bit_in_the_message_is_refused(
    seed: bytes, message: bytes, data: st.DataObject
) -> None:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    bit = data.draw(st.integers(0, 8 * len(message) - 1), label="bit")
    with pytest.raises(SignatureInvalid):
        verify(key.public_key().public_bytes_raw(), _flip(message, bit), key.sign(message))


@settings(max_examples=50, deadline=None)
@given(seed=SEEDS, message=MESSAGES, bit=st.integers(0, 511))
def test_a_flipped_bit_in_the_signature_is_refused(seed: bytes, message: bytes, bit: int) -> None:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    with pytest.raises(SignatureInvalid):
        verify(key.public_key().public_bytes_raw(), message, _flip(key.sign(message), bit))


@settings(max_examples=50, deadline=None)
@given(seed=SEEDS, message=MESSAGES, bit=st.integers(0, 255))
def test_a_flipped_bit_in_the_key_is_refused(seed: bytes, message: bytes, bit: int) -> None:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    with pytest.raises(SignatureInvalid):
        verify(_flip(key.public_key().public_bytes_raw(), bit), message, key.sign(message))

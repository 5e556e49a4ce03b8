"""JWT verification: every way a token is refused, named after the attack or the rule."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import types
from typing import Any
from unittest import mock

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jwt as jose_jwt
from joserfc.errors import UnsupportedKeyOperationError
from joserfc.jwk import ECKey, RSAKey

import tether.crypto.jwt as jwt_module
from tether.crypto.jwk import PublicJwk
from tether.crypto.jwt import (
    MAX_TOKEN_BYTES,
    Signer,
    UnverifiedToken,
    _b64decode,
    _json_object,
    verify_jwt,
)
from tether.errors import TokenInvalid

NOW = 1_800_000_000
AUD = "https://tether.example/oauth2/token"
PRIVATE = ECKey.generate_key("P-256")
PUBLIC = PublicJwk.parse(PRIVATE.as_dict(private=False))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**changes: Any) -> dict[str, Any]:
    claims = {"iss": "a", "sub": "a", "aud": AUD, "iat": NOW, "exp": NOW + 60, "jti": "j1"}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(claims: dict[str, Any], **header: Any) -> str:
    return jose_jwt.encode({"alg": "ES256", **header}, claims, PRIVATE, algorithms=["ES256"])


def _raw(header: dict[str, Any] | str, claims: dict[str, Any] | str, signature: bytes) -> str:
    def part(value: dict[str, Any] | str) -> str:
        text = value if isinstance(value, str) else json.dumps(value)
        return _b64(text.encode())

    return f"{part(header)}.{part(claims)}.{_b64(signature)}"


def _verify(token: str, **options: Any) -> Any:
    args: dict[str, Any] = {
        "key": PUBLIC,
        "algorithms": ("ES256",),
        "now": NOW,
        "audience": AUD,
        "max_lifetime": 300,
        "require": ("exp", "jti", "iss", "sub", "aud"),
    }
    args.update(options)
    return verify_jwt(token, **args)


def _reason(token: str, **options: Any) -> str:
    with pytest.raises(TokenInvalid) as caught:
        _verify(token, **options)
    return str(caught.value.details["reason"])


def test_good_token_verifies_and_exposes_its_claims() -> None:
    claims = _verify(_sign(_claims()))
    assert (claims.sub, claims.jti, claims.aud, claims.exp) == ("a", "j1", (AUD,), NOW + 60)


def test_alg_none_is_refused() -> None:
    token = _raw({"alg": "none"}, _claims(), b"")
    assert _reason(token) == "alg_not_allowed"


def test_hs256_signed_with_the_public_key_is_refused() -> None:
    # The classic key-confusion attack: HMAC keyed with the verifier's public key bytes.
    secret = PRIVATE.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    head = _b64(json.dumps({"alg": "HS256"}).encode())
    body = _b64(json.dumps(_claims()).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    assert _reason(f"{head}.{body}.{_b64(mac)}") == "alg_not_allowed"
    assert _reason(f"{head}.{body}.{_b64(mac)}", algorithms=("ES256", "HS256")) == "alg_not_allowed"


def test_alg_not_matching_the_key_is_refused() -> None:
    rsa = RSAKey.generate_key(2048)
    token = jose_jwt.encode({"alg": "RS256"}, _claims(), rsa, algorithms=["RS256"])
    assert _reason(token, algorithms=("ES256", "RS256")) == "alg_not_allowed"


def test_tampered_payload_is_refused() -> None:
    head, _, sig = _sign(_claims()).split(".")
    forged = _b64(json.dumps(_claims(sub="admin")).encode())
    assert _reason(f"{head}.{forged}.{sig}") == "bad_signature"


def test_signature_by_another_key_is_refused() -> None:
    other = ECKey.generate_key("P-256")
    token = jose_jwt.encode({"alg": "ES256"}, _claims(), other, algorithms=["ES256"])
    assert _reason(token) == "bad_signature"


def test_duplicate_claim_is_refused_before_any_parser_can_disagree() -> None:
    head = _b64(b'{"alg":"ES256"}')
    body = _b64(b'{"sub":"a","sub":"admin","exp":1}')
    assert _reason(f"{head}.{body}.AAAA") == "duplicate_member"


def test_critical_header_extension_is_refused() -> None:
    _head, body, sig = _sign(_claims()).split(".")
    crit = _b64(json.dumps({"alg": "ES256", "crit": ["x-policy"], "x-policy": 1}).encode())
    assert _reason(f"{crit}.{body}.{sig}") == "crit_unsupported"


def test_unencoded_payload_option_is_refused() -> None:
    head = _b64(b'{"alg":"ES256","b64":false}')
    assert _reason(f"{head}.{_b64(b'{}')}.AAAA") == "crit_unsupported"


@pytest.mark.parametrize(
    "token",
    ["", "a.b", "a.b.c.d", "é.b.c", "e30.e30.AA=", "e30.e30.A+/A", "W10.e30.AAAA", "e30.e30.AAAA"],
    ids=[
        "empty",
        "two_parts",
        "jwe_like",
        "non_ascii",
        "padding",
        "std_b64",
        "header_list",
        "no_alg",
    ],
)
def test_malformed_token_is_refused(token: str) -> None:
    assert _reason(token) == "malformed"


def test_non_canonical_base64_is_refused() -> None:
    head, body, sig = _sign(_claims()).split(".")
    last = sig[-1]
    twin = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    # The last character of an 86-char signature carries 4 unused low bits; set one.
    flipped = twin[twin.index(last) ^ 1]
    assert _reason(f"{head}.{body}.{sig[:-1]}{flipped}") == "malformed"


def test_oversized_token_is_refused() -> None:
    assert _reason(_sign(_claims(pad="x" * MAX_TOKEN_BYTES))) == "too_large"


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        (_claims(exp=NOW - 31), "expired"),
        (_claims(nbf=NOW + 31), "not_yet_valid"),
        (_claims(iat=NOW + 31, exp=NOW + 90), "issued_in_future"),
        (_claims(exp=NOW + 24 * 3600), "lifetime_too_long"),
        (_claims(aud="https://elsewhere"), "wrong_audience"),
        (_claims(aud=["https://elsewhere", "x"]), "wrong_audience"),
        (_claims(exp=None), "missing_exp"),
        (_claims(jti=None), "missing_jti"),
        (_claims(exp="tomorrow"), "malformed"),
        (_claims(exp=True), "malformed"),
        (_claims(sub=42), "malformed"),
    ],
    ids=[
        "expired",
        "not_before_in_future",
        "issued_in_future",
        "far_future_exp",
        "wrong_audience",
        "wrong_audience_list",
        "missing_exp",
        "missing_jti",
        "exp_not_a_number",
        "exp_boolean",
        "sub_not_a_string",
    ],
)
def test_bad_claims_are_refused(claims: dict[str, Any], reason: str) -> None:
    assert _reason(_sign(claims)) == reason


def test_leeway_covers_small_clock_skew() -> None:
    assert _verify(_sign(_claims(exp=NOW - 29, iat=NOW - 89))).exp == NOW - 29


def test_audience_list_with_one_match_is_accepted() -> None:
    assert _verify(_sign(_claims(aud=["https://other", AUD]))).aud == ("https://other", AUD)


def test_wrong_issuer_is_refused() -> None:
    assert _reason(_sign(_claims()), issuer="https://tether.example") == "wrong_issuer"


def test_signer_output_verifies_with_kid_and_typ() -> None:
    signer = Signer(PRIVATE, kid="k1")
    token = signer.sign_jwt(_claims())
    parsed = UnverifiedToken.parse(token)
    assert dict(parsed.header) == {"alg": "ES256", "kid": "k1", "typ": "JWT"}
    assert _verify(token).sub == "a"


def test_signer_refuses_anything_but_es256() -> None:
    with pytest.raises(ValueError, match="ES256"):
        Signer(PRIVATE, kid="k1", alg="HS256")
    with pytest.raises(ValueError, match="P-256"):
        Signer(ECKey.generate_key("P-384"), kid="k1")


def test_signer_tokens_verify_with_joserfc() -> None:
    """The signature is made with cryptography, not joserfc: another implementation of the
    standard must accept it."""
    token = Signer(PRIVATE, kid="k1").sign_jwt(_claims(sub="b"))
    public = ECKey.import_key(PRIVATE.as_dict(private=False))
    decoded = jose_jwt.decode(token, public, algorithms=["ES256"])
    assert decoded.claims["sub"] == "b"
    assert decoded.header == {"alg": "ES256", "kid": "k1", "typ": "JWT"}


def test_es256_header_with_a_p384_key_is_refused() -> None:
    other = ECKey.generate_key("P-384")
    token = Signer(PRIVATE, kid="k1").sign_jwt(_claims())
    assert _reason(token, key=ECKey.import_key(other.as_dict(private=False))) == "bad_signature"


def test_a_key_declared_for_encryption_does_not_verify() -> None:
    """A JWK's own ``use``/``key_ops`` still bind on the ES256 path that bypasses joserfc's
    algorithm."""
    token = Signer(PRIVATE, kid="k1").sign_jwt(_claims())
    public = ECKey.import_key({**PRIVATE.as_dict(private=False), "key_ops": ["encrypt"]})
    with pytest.raises(UnsupportedKeyOperationError):
        _verify(token, key=public)


def _reference_b64decode(part: str) -> bytes | None:
    """The segment rule as the standard library states it: unpadded base64url that encodes
    back to itself; None if refused."""
    raw = part.encode("ascii")
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    if not set(raw) <= set(alphabet) or len(raw) % 4 == 1:
        return None
    decoded = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    return decoded if base64.urlsafe_b64encode(decoded).rstrip(b"=") == raw else None


@settings(max_examples=2000, deadline=None)
@given(
    part=st.one_of(
        st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
        st.text(alphabet="AQgw-_+/=!. \n", max_size=12),
        st.binary(max_size=40).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")),
    )
)
def test_segment_decoding_accepts_exactly_canonical_unpadded_base64url(part: str) -> None:
    expected = _reference_b64decode(part)
    if expected is None:
        with pytest.raises(TokenInvalid) as refused:
            _b64decode(part)
        assert refused.value.details["reason"] == "malformed"
    else:
        assert _b64decode(part) == expected


_KEYS = st.sampled_from(["a", "b", "sub", "aud"])
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**64 + 2),
    st.floats(),
    st.text(max_size=4),
    st.sampled_from(["\ud800", "\ud83d\ude00", "\x00", "é", "/"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(st.tuples(_KEYS, inner), max_size=3).map(lambda pairs: ("object", pairs))
    ),
    max_leaves=8,
)


def _write(value: Any, ascii_only: bool) -> str:
    """JSON text of ``value``, where ``("object", pairs)`` is an object that may name a member
    twice."""
    if isinstance(value, tuple):
        members = (f"{json.dumps(k)}:{_write(v, ascii_only)}" for k, v in value[1])
        return "{" + ",".join(members) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_write(v, ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


def _outcome(raw: bytes) -> tuple[str, str]:
    try:
        return ("value", json.dumps(_json_object(raw, "claims set")))
    except TokenInvalid as exc:
        return ("refused", str(exc.details["reason"]))


def _strict_outcome(raw: bytes) -> tuple[str, str]:
    """:func:`_outcome` with orjson's read switched off: the strict decoder's answer alone."""
    strict = types.SimpleNamespace(
        loads=mock.Mock(side_effect=orjson.JSONDecodeError("off", "", 0)),
        dumps=orjson.dumps,
        JSONDecodeError=orjson.JSONDecodeError,
        JSONEncodeError=orjson.JSONEncodeError,
    )
    with mock.patch.object(jwt_module, "orjson", strict):
        return _outcome(raw)


@settings(max_examples=1500, deadline=None)
@given(
    pairs=st.lists(st.tuples(_KEYS, _VALUES), max_size=4),
    ascii_only=st.booleans(),
    spaced=st.booleans(),
)
def test_claims_read_fast_are_exactly_what_the_strict_decoder_reads(
    pairs: list[tuple[str, Any]], ascii_only: bool, spaced: bool
) -> None:
    """Duplicate members, NaN, huge numbers, escapes, lone surrogates: orjson's fast path
    gives the strict decoder's answer on each, or leaves the text to it."""
    text = _write(("object", pairs), ascii_only)
    if spaced:
        text = text.replace(",", ", ")
    raw = text.encode("utf-8", "surrogatepass")
    assert _outcome(raw) == _strict_outcome(raw)


@pytest.mark.parametrize("depth", [200, 300, 1100])
def test_claims_nested_deeper_than_orjson_writes_are_read_by_the_strict_decoder(
    depth: int,
) -> None:
    """orjson reads 1,024 levels but writes 254: a hostile token nested in between must get
    the strict decoder's answer, never an error of the fast path's."""
    raw = ('{"a":' * depth + "1" + "}" * depth).encode()
    assert _outcome(raw) == _strict_outcome(raw)

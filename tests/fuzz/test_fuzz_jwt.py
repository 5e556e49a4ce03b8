"""Fuzzing the token parser and verifier: ``UnverifiedJws.parse``/``UnverifiedToken.parse``,
``verify_signature``, ``PublicJwk.parse``, and the two verification paths that take tokens
from the outside — a client assertion at the token endpoint (``private_key_jwt``) and a
JWT-SVID at the checkpoint.

The rule: any input either parses or is refused with the declared error — ``TokenInvalid``
for the parser and the signature check, ``InvalidKey`` for a JWK, ``InvalidClient`` for client
authentication, ``Unauthenticated`` for the checkpoint's token check — and a valid token with
one bit, byte or character changed never verifies.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
import warnings
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from joserfc import jws
from joserfc.jwk import ECKey, OKPKey, RSAKey

from tests.fuzz._profiles import FUZZ
from tests.fuzz._strategies import (
    b64url,
    deep_json,
    hostile_text,
    json_bytes,
    json_values,
    mutated_bytes,
    mutated_text,
)
from tests.fuzz._world import World
from tether.crypto.assertion import sign_client_assertion
from tether.crypto.jwk import PublicJwk
from tether.crypto.jwt import (
    MAX_TOKEN_BYTES,
    UnverifiedJws,
    UnverifiedToken,
    declared_type,
    unverified_subject,
    verify_signature,
)
from tether.errors import InvalidClient, InvalidKey, TokenInvalid, Unauthenticated
from tether.identity.client_auth import ASSERTION_TYPE

_KEYS: dict[str, ECKey | OKPKey | RSAKey] = {
    "ES256": ECKey.generate_key("P-256"),
    "ES384": ECKey.generate_key("P-384"),
    "Ed25519": OKPKey.generate_key("Ed25519"),
    "RS256": RSAKey.generate_key(2048),
    "PS256": RSAKey.generate_key(2048),
}
_PUBLIC = {
    alg: PublicJwk.parse({**key.as_dict(private=False), "alg": alg}) for alg, key in _KEYS.items()
}
_CLAIMS = {"iss": "spiffe://acme.org/agent/a", "sub": "spiffe://acme.org/agent/a", "exp": 2**31}


def _signed(alg: str, claims: dict[str, Any] | None = None) -> str:
    payload = json.dumps(claims or _CLAIMS).encode()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        token: str = jws.serialize_compact({"alg": alg}, payload, _KEYS[alg], algorithms=[alg])
    return token


_VALID = {alg: _signed(alg) for alg in _KEYS}


def _parse_all(token: object) -> None:
    """Every reader of an untrusted token: the parsers raise only ``TokenInvalid``, the
    routing helpers never raise."""
    with contextlib.suppress(TokenInvalid):
        UnverifiedToken.parse(token)
    declared_type(token)
    unverified_subject(token)


@st.composite
def _segmented(draw: st.DrawFn) -> str:
    """Three base64url segments of hostile JSON or bytes: what gets past the outer checks."""

    def segment() -> st.SearchStrategy[str]:
        return st.one_of(
            json_values().map(lambda v: b64url(json_bytes(v))),
            st.dictionaries(st.sampled_from(["alg", "typ", "kid", "crit", "b64", "sub"]),
                            json_values(5), max_size=4).map(lambda v: b64url(json_bytes(v))),
            deep_json(max_depth=4000).map(lambda t: b64url(t.encode())),
            st.binary(max_size=64).map(b64url),
            hostile_text,
        )  # fmt: skip

    return f"{draw(segment())}.{draw(segment())}.{draw(segment())}"


@FUZZ
@given(token=st.one_of(hostile_text, _segmented(), json_values(), st.binary(max_size=64)))
def test_token_parser_refuses_any_input_with_token_invalid_only(token: object) -> None:
    _parse_all(token)


@FUZZ
@given(size=st.integers(min_value=MAX_TOKEN_BYTES + 1, max_value=4 * 1024 * 1024))
def test_token_parser_refuses_an_oversized_token_as_too_large(size: int) -> None:
    token = _VALID["ES256"] + "A" * (size - len(_VALID["ES256"]))
    with pytest.raises(TokenInvalid) as refused:
        UnverifiedToken.parse(token)
    assert refused.value.details["reason"] == "too_large"


@FUZZ
@given(alg=st.sampled_from(sorted(_KEYS)), data=st.data())
def test_token_with_one_character_changed_never_verifies(alg: str, data: st.DataObject) -> None:
    token = data.draw(mutated_text(_VALID[alg]).filter(lambda t: t != _VALID[alg]))
    with pytest.raises(TokenInvalid):
        verify_signature(UnverifiedJws.parse(token), key=_PUBLIC[alg], algorithms=(alg,))


@FUZZ
@given(alg=st.sampled_from(sorted(_KEYS)), part=st.integers(0, 2), data=st.data())
def test_token_with_a_decoded_segment_changed_never_verifies(
    alg: str, part: int, data: st.DataObject
) -> None:
    """A bit flip inside the decoded header, payload or signature, encoded back canonically:
    the parser may accept it, the signature check never does."""
    segments = _VALID[alg].split(".")
    encoded = segments[part].encode()
    original = base64.urlsafe_b64decode(encoded + b"=" * (-len(encoded) % 4))
    changed = data.draw(mutated_bytes(original).filter(lambda b: b != original))
    segments[part] = b64url(changed)
    with pytest.raises(TokenInvalid):
        verify_signature(UnverifiedJws.parse(".".join(segments)), key=_PUBLIC[alg],
                         algorithms=(alg,))  # fmt: skip


@FUZZ
@given(alg=st.sampled_from(sorted(_KEYS)), other=st.sampled_from(sorted(_KEYS)))
def test_token_never_verifies_with_another_key_or_algorithm(alg: str, other: str) -> None:
    if alg == other:
        verify_signature(UnverifiedJws.parse(_VALID[alg]), key=_PUBLIC[alg], algorithms=(alg,))
        return
    with pytest.raises(TokenInvalid):
        verify_signature(UnverifiedJws.parse(_VALID[alg]), key=_PUBLIC[other],
                         algorithms=(alg, other))  # fmt: skip


_JWK_MEMBERS = ["kty", "crv", "x", "y", "n", "e", "alg", "use", "key_ops", "kid", "d", "k"]


@st.composite
def _jwk(draw: st.DrawFn) -> object:
    """A valid public JWK with members changed, dropped or added; or any JSON at all."""
    if draw(st.booleans()):
        return draw(json_values())
    jwk: dict[str, Any] = _PUBLIC[draw(st.sampled_from(sorted(_PUBLIC)))].to_dict()
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(_JWK_MEMBERS))
        value = jwk.get(name)
        if isinstance(value, str) and value and draw(st.booleans()):
            jwk[name] = draw(mutated_text(value))
        elif draw(st.booleans()):
            jwk.pop(name, None)
        else:
            jwk[name] = draw(json_values(5))
    return jwk


@FUZZ
@given(jwk=_jwk())
def test_jwk_parser_refuses_any_input_with_invalid_key_only(jwk: object) -> None:
    with contextlib.suppress(InvalidKey):
        PublicJwk.parse(jwk)


# -- the paths tokens take into the server ----------------------------------------------------


_FORM_TEXT = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=100)


def _assertion(world: World, **changes: Any) -> str:
    return sign_client_assertion(world.key.private_pem, client_id=world.spiffe_id,
                                 audience=f"{world.addr}/oauth2/token", now=int(time.time()),
                                 **changes)  # fmt: skip


def _authenticate(world: World, assertion: object, client_id: str | None = None) -> None:
    world.call(world.services.client_auth.private_key_jwt(
        client_id=client_id, assertion_type=ASSERTION_TYPE, assertion=assertion,  # type: ignore[arg-type]
        instance_id="pod-fuzz",
    ))  # fmt: skip


def test_a_fresh_client_assertion_authenticates(world: World) -> None:
    """The baseline the fuzz below departs from: unchanged, the assertion is accepted."""
    _authenticate(world, _assertion(world))


@FUZZ
@given(data=st.data())
def test_client_assertion_changed_or_hostile_is_refused_as_invalid_client(
    world: World, data: st.DataObject
) -> None:
    valid = _assertion(world)
    assertion = data.draw(st.one_of(
        mutated_text(valid).filter(lambda t: t != valid), _segmented(), hostile_text,
    ))  # fmt: skip
    # What a form field can carry: text, but no lone surrogate (the form parser decodes
    # percent-escapes as UTF-8 with replacement).
    client_id = data.draw(st.one_of(st.none(), st.just(world.spiffe_id), _FORM_TEXT))
    with pytest.raises(InvalidClient):
        _authenticate(world, assertion, client_id)


def test_the_agents_jwt_svid_is_accepted_by_the_checkpoint(world: World) -> None:
    caller = world.call(world.services.svids.verify_agent_token(
        world.svid, certificate_thumbprint=None))  # fmt: skip
    assert caller.agent.name == "shop-bot"


@FUZZ
@given(data=st.data())
def test_jwt_svid_changed_or_hostile_is_refused_as_unauthenticated(
    world: World, data: st.DataObject
) -> None:
    token = data.draw(st.one_of(
        mutated_text(world.svid).filter(lambda t: t != world.svid), _segmented(), hostile_text,
    ))  # fmt: skip
    with pytest.raises(Unauthenticated):
        world.call(world.services.svids.verify_agent_token(token, certificate_thumbprint=None))


@pytest.mark.parametrize(
    "change",
    [{"alg": ["ES256"]}, {"alg": {"a": 1}}, {"key_ops": [["verify"]]}, {"key_ops": [{}]}],
    ids=["alg-list", "alg-object", "key_ops-nested-list", "key_ops-object"],
)
def test_jwk_with_an_unhashable_alg_or_key_op_is_refused_as_invalid_key(
    change: dict[str, Any],
) -> None:
    """Found by the fuzz: ``alg`` or a ``key_ops`` member that is a list or an object made
    the allow-list lookup raise ``TypeError`` instead of ``InvalidKey``."""
    with pytest.raises(InvalidKey):
        PublicJwk.parse({**_PUBLIC["ES256"].to_dict(), **change})


def test_jwk_nested_too_deep_to_serialise_is_refused_as_invalid_key() -> None:
    nested: list[Any] = []
    for _ in range(100_000):
        nested = [nested]
    with pytest.raises(InvalidKey):
        PublicJwk.parse({**_PUBLIC["ES256"].to_dict(), "x5c": nested})


def test_token_with_an_escaped_lone_surrogate_is_refused_as_malformed() -> None:
    """Found by the fuzz: a client assertion whose ``iss`` held ``\\ud800`` parsed, and the
    text it gave could not be encoded again — the SPIFFE ID check raised ``UnicodeEncodeError``
    and the refusal's audit record could not be written."""
    header = b64url(b'{"alg":"ES256"}')
    claims = b64url(b'{"iss":"spiffe://acme.org/agent/\\ud800","exp":1}')
    with pytest.raises(TokenInvalid, match="lone surrogate"):
        UnverifiedToken.parse(f"{header}.{claims}.AAAA")
    paired = b64url(b'{"iss":"\\ud83d\\ude00"}')
    parsed = UnverifiedToken.parse(f"{header}.{paired}.AAAA")
    assert parsed.claims["iss"] == "\U0001f600"

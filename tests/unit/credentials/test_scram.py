"""SCRAM-SHA-256 verifiers: checked against the RFC 7677 §3 exchange, as a server checks them.

The RFC gives no StoredKey/ServerKey, but its exchange pins both: the server's signature is
``HMAC(ServerKey, AuthMessage)``, and ``SHA-256(ClientProof XOR HMAC(StoredKey, AuthMessage))``
must be StoredKey. A verifier that passes both for ``pencil`` logs in as the RFC's client did.
The integration tests log in with generated passwords against a real PostgreSQL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.credentials._scram import SALT_BYTES, scram_verifier, scram_verifier_async
from tether.errors import InvalidInput

# RFC 7677 §3: user "user", password "pencil".
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_AUTH_MESSAGE = (
    b"n=user,r=rOprNGfwEbeRWgbNEkqO,"
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
)
RFC_CLIENT_PROOF = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
RFC_SERVER_SIGNATURE = base64.b64decode("6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
#: The verifier those pin (a known answer, so a change of format shows at once).
RFC_VERIFIER = (
    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"
    "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
)

_FORMAT = re.compile(
    r"SCRAM-SHA-256\$(?P<i>[0-9]+):(?P<salt>[A-Za-z0-9+/=]+)"
    r"\$(?P<stored>[A-Za-z0-9+/=]+):(?P<server>[A-Za-z0-9+/=]+)"
)


def _keys(verifier: str) -> tuple[bytes, bytes]:
    match = _FORMAT.fullmatch(verifier)
    assert match is not None, verifier
    return base64.b64decode(match["stored"]), base64.b64decode(match["server"])


def test_verifier_of_the_rfc_7677_password_passes_the_rfc_exchange() -> None:
    verifier = scram_verifier("pencil", iterations=4096, salt=RFC_SALT)
    stored_key, server_key = _keys(verifier)
    assert hmac.digest(server_key, RFC_AUTH_MESSAGE, "sha256") == RFC_SERVER_SIGNATURE
    client_signature = hmac.digest(stored_key, RFC_AUTH_MESSAGE, "sha256")
    client_key = bytes(p ^ s for p, s in zip(RFC_CLIENT_PROOF, client_signature, strict=True))
    assert hashlib.sha256(client_key).digest() == stored_key
    assert verifier == RFC_VERIFIER


def test_verifier_of_another_password_fails_the_rfc_exchange() -> None:
    _, server_key = _keys(scram_verifier("pencil2", iterations=4096, salt=RFC_SALT))
    assert hmac.digest(server_key, RFC_AUTH_MESSAGE, "sha256") != RFC_SERVER_SIGNATURE


@settings(max_examples=25, deadline=None)
@given(
    password=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1),
    iterations=st.integers(min_value=1, max_value=64),
)
def test_verifier_has_postgres_format_with_a_fresh_16_byte_salt(
    password: str, iterations: int
) -> None:
    first = scram_verifier(password, iterations=iterations)
    second = scram_verifier(password, iterations=iterations)
    match = _FORMAT.fullmatch(first)
    assert match is not None
    assert int(match["i"]) == iterations
    assert len(base64.b64decode(match["salt"])) == SALT_BYTES
    assert all(len(key) == 32 for key in _keys(first))
    assert first != second  # a new salt each time


@pytest.mark.parametrize(
    ("password", "iterations", "salt", "match"),
    [
        ("", 4096, None, "ASCII"),
        ("pässword", 4096, None, "ASCII"),  # SASLprep would apply: refused
        ("x" * 1025, 4096, None, "ASCII"),
        ("pencil", 0, None, "iterations"),
        ("pencil", True, None, "iterations"),
        ("pencil", 1_000_001, None, "iterations"),
        ("pencil", 4096, b"short", "salt"),
    ],
)
def test_unusable_inputs_are_refused_without_echoing_the_password(
    password: str, iterations: int, salt: bytes | None, match: str
) -> None:
    with pytest.raises(InvalidInput, match=match) as caught:
        scram_verifier(password, iterations=iterations, salt=salt)
    assert not password or password not in str(caught.value)


async def test_async_verifier_runs_pbkdf2_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[int] = []
    real = hashlib.pbkdf2_hmac

    def recording(name: str, password: bytes, salt: bytes, iterations: int) -> bytes:
        threads.append(threading.get_ident())
        return real(name, password, salt, iterations)

    monkeypatch.setattr(hashlib, "pbkdf2_hmac", recording)
    verifier = await scram_verifier_async("pencil", iterations=4096)
    assert verifier.startswith("SCRAM-SHA-256$4096:")
    assert threads
    assert threads != [threading.get_ident()]

"""The key-encryption key: what seals private keys at rest."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from tether.crypto.kek import KeyEncryptionKey
from tether.errors import KeyringError

AAD = b"tether-key:token-signing:kid-1"


def test_sealed_key_opens_with_the_same_kek_and_aad() -> None:
    kek = KeyEncryptionKey.generate()
    sealed = kek.seal(b"private key", aad=AAD)
    assert b"private key" not in sealed
    assert kek.open(sealed, aad=AAD) == b"private key"


def test_sealing_twice_gives_different_ciphertexts() -> None:
    kek = KeyEncryptionKey.generate()
    assert kek.seal(b"k", aad=AAD) != kek.seal(b"k", aad=AAD), "a fresh nonce per seal"


def test_database_copy_without_the_kek_yields_nothing() -> None:
    sealed = KeyEncryptionKey.generate().seal(b"private key", aad=AAD)
    with pytest.raises(KeyringError):
        KeyEncryptionKey.generate().open(sealed, aad=AAD)


def test_sealed_key_swapped_into_another_row_does_not_open() -> None:
    kek = KeyEncryptionKey.generate()
    sealed = kek.seal(b"private key", aad=AAD)
    with pytest.raises(KeyringError):
        kek.open(sealed, aad=b"tether-key:x509-ca:kid-2")


@pytest.mark.parametrize("position", [0, 3, 10, -1])
def test_tampered_sealed_key_is_refused(position: int) -> None:
    kek = KeyEncryptionKey.generate()
    sealed = bytearray(kek.seal(b"private key", aad=AAD))
    sealed[position] ^= 0x01
    with pytest.raises(KeyringError):
        kek.open(bytes(sealed), aad=AAD)


def test_kek_file_is_created_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    first = KeyEncryptionKey.load_or_create(path)
    assert path.stat().st_mode & 0o777 == 0o600
    sealed = first.seal(b"x", aad=AAD)
    assert KeyEncryptionKey.load_or_create(path).open(sealed, aad=AAD) == b"x"


def test_kek_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    KeyEncryptionKey.load_or_create(path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyringError) as caught:
        KeyEncryptionKey.load_or_create(path)
    assert caught.value.details["mode"] == "0o644"


def test_kek_from_the_environment_round_trips() -> None:
    raw = os.urandom(32)
    text = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    sealed = KeyEncryptionKey(raw).seal(b"x", aad=AAD)
    assert KeyEncryptionKey.from_b64(text).open(sealed, aad=AAD) == b"x"


@pytest.mark.parametrize("text", ["", "not base64!!", base64.urlsafe_b64encode(b"short").decode()])
def test_kek_that_is_not_256_bits_is_refused(text: str) -> None:
    with pytest.raises(KeyringError):
        KeyEncryptionKey.from_b64(text)


def test_kek_never_shows_its_bytes() -> None:
    assert repr(KeyEncryptionKey.generate()) == "KeyEncryptionKey(<hidden>)"

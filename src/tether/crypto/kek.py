"""The key-encryption key (KEK): it seals every private key before the key reaches the store.

The KEK lives outside the database — a 0600 file in the data directory by default, or the
``TETHER_KEK`` environment variable — so a copy of the database alone yields no usable private
key. Sealing is AES-256-GCM (``cryptography``'s AEAD) with a fresh 96-bit nonce per seal and
associated data that binds the ciphertext to its key id and purpose, so a sealed key cannot be
swapped for another row's.

Example::

    >>> kek = KeyEncryptionKey.generate()
    >>> sealed = kek.seal(b"secret", aad=b"token-signing:kid1")
    >>> kek.open(sealed, aad=b"token-signing:kid1")
    b'secret'
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tether.errors import KeyringError

__all__ = ["KeyEncryptionKey"]

_VERSION = b"tk1"
_NONCE = 12
_KEY_BYTES = 32


class KeyEncryptionKey:
    """A 256-bit AES-GCM key. Its bytes never appear in ``repr`` or in errors."""

    __slots__ = ("_aead", "_key")

    def __init__(self, key: bytes) -> None:
        if len(key) != _KEY_BYTES:
            raise KeyringError("a key-encryption key is 32 bytes (256 bits)")
        self._aead = AESGCM(key)
        self._key = key

    def derive(self, purpose: bytes) -> bytes:
        """A 256-bit key for ``purpose`` (HKDF-SHA256, RFC 5869), independent of the sealing
        key and of every other purpose's: like the sealing key, only the holder of the
        key-encryption key has it, never the database."""
        hkdf = HKDF(algorithm=hashes.SHA256(), length=_KEY_BYTES, salt=None, info=purpose)
        return hkdf.derive(self._key)

    def __repr__(self) -> str:
        return "KeyEncryptionKey(<hidden>)"

    @classmethod
    def generate(cls) -> KeyEncryptionKey:
        return cls(AESGCM.generate_key(bit_length=256))

    @classmethod
    def from_b64(cls, text: str) -> KeyEncryptionKey:
        """From base64url (with or without padding), as ``TETHER_KEK`` holds it."""
        cleaned = text.strip()
        try:
            raw = base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))
        except (binascii.Error, ValueError) as exc:
            raise KeyringError("the key-encryption key is not valid base64url") from exc
        return cls(raw)

    @classmethod
    def load_or_create(cls, path: Path) -> KeyEncryptionKey:
        """Read the KEK file, or create it (mode 0600, exclusively) if it does not exist.

        A file that group or others may read is refused rather than used: the KEK is the one
        secret that protects every private key in the database.
        """
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return cls._load(path)
        key = AESGCM.generate_key(bit_length=256)
        try:
            os.write(fd, base64.urlsafe_b64encode(key).rstrip(b"=") + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        return cls(key)

    @classmethod
    def _load(cls, path: Path) -> KeyEncryptionKey:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise KeyringError("the key-encryption key path is not a regular file")
        if mode & 0o077:
            raise KeyringError(
                "the key-encryption key file must not be readable by group or others (chmod 600)",
                details={"mode": oct(stat.S_IMODE(mode))},
            )
        return cls.from_b64(path.read_text(encoding="ascii"))

    def seal(self, plaintext: bytes, *, aad: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, sealed: bytes, *, aad: bytes) -> bytes:
        head = len(_VERSION)
        if sealed[:head] != _VERSION or len(sealed) < head + _NONCE + 16:
            raise KeyringError("a sealed key has an unknown format")
        nonce = sealed[head : head + _NONCE]
        try:
            return self._aead.decrypt(nonce, sealed[head + _NONCE :], aad)
        except InvalidTag as exc:
            raise KeyringError(
                "a sealed key does not open: wrong key-encryption key, or the key was altered"
            ) from exc

"""Signed checkpoints of the audit log: C2SP ``tlog-checkpoint`` bodies in C2SP ``signed-note``s.

A checkpoint names the log (its *origin*), a tree size and the Merkle root of the first that
many records (:mod:`tether.audit.merkle`). It is published as a signed note, the format the
transparency-log ecosystem (Go's ``sumdb/note``, Sigstore, witnesses) reads:

.. code-block:: text

    tether.example/audit/replica-1          <- origin
    1000                                    <- tree size, decimal
    47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=   <- root hash, base64
                                            <- a blank line, then one line per signature:
    — tether.example/audit/replica-1 <base64(key id || Ed25519 signature)>

The signature covers the body up to and including its last newline. The key id is the first
four bytes of ``SHA-256(key name || 0x0A || 0x01 || public key)`` (0x01: Ed25519); a verifier
key is shared as ``name+<hex key id>+<base64(0x01 || public key)>``.

Signing and checking a signature are the crypto layer's (passed in as functions), so this
module is only the format: strict on what it reads (sizes capped, one canonical spelling of
every field, at most 100 signature lines), and it raises :class:`NoteInvalid` rather than
returning a bare bool. Written here because no maintained Python package implements C2SP
signed notes; the format is pinned by the Go reference implementation's published example
(``tests/unit/audit/test_notes.py``).

Example::

    >>> head = TreeHead(origin="tether.example/audit", size=5, root=bytes(32))
    >>> head.body().decode().splitlines()
    ['tether.example/audit', '5', 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=']
    >>> TreeHead.parse(head.body()) == head
    True
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "MAX_NOTE_BYTES",
    "NoteInvalid",
    "TreeHead",
    "key_id",
    "open_note",
    "parse_verifier_key",
    "sign_note",
    "verifier_key",
]

#: A note longer than this is refused unread.
MAX_NOTE_BYTES = 64 * 1024
#: Signature lines read at most (the Go implementation's limit).
MAX_SIGNATURES = 100
ED25519 = 0x01
_DASH = "\u2014 "
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")
ROOT_SIZE = 32


class NoteInvalid(ValueError):
    """A note or checkpoint that is malformed, or not signed by the expected key."""


def key_id(name: str, public_key: bytes) -> bytes:
    """The four-byte id of an Ed25519 key named ``name`` (C2SP signed-note)."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ED25519]) + public_key).digest()[:4]


def verifier_key(name: str, public_key: bytes) -> str:
    """How a verifier key is shared: ``name+<hex key id>+<base64(0x01 || public key)>``."""
    encoded = base64.b64encode(bytes([ED25519]) + public_key).decode()
    return f"{_checked_name(name)}+{key_id(name, public_key).hex()}+{encoded}"


def parse_verifier_key(text: str) -> tuple[str, bytes]:
    """The name and Ed25519 public key of a verifier key written by :func:`verifier_key`;
    :class:`NoteInvalid` unless its key id matches (a typo cannot name another key)."""
    name, _, rest = text.strip().partition("+")
    hex_id, _, encoded = rest.partition("+")
    raw = _b64(encoded, "verifier key")
    if len(raw) != 33 or raw[0] != ED25519:
        raise NoteInvalid("a verifier key holds an Ed25519 key (0x01 and 32 bytes)")
    if key_id(_checked_name(name), raw[1:]).hex() != hex_id.lower():
        raise NoteInvalid("the verifier key's id does not match its key")
    return name, raw[1:]


@dataclass(frozen=True, kw_only=True)
class TreeHead:
    """A checkpoint's body (C2SP tlog-checkpoint): origin, tree size, root, extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> bytes:
        if not 0 <= self.size < 2**64:
            raise NoteInvalid("a tree size is a 64-bit unsigned integer")
        if len(self.root) != ROOT_SIZE:
            raise NoteInvalid(f"a root is {ROOT_SIZE} bytes")
        lines = [_checked_line(self.origin), str(self.size), base64.b64encode(self.root).decode()]
        lines += [_checked_line(e) for e in self.extensions]
        return ("\n".join(lines) + "\n").encode()

    @classmethod
    def parse(cls, body: bytes) -> TreeHead:
        try:
            text = body.decode()
        except UnicodeDecodeError:
            raise NoteInvalid("a checkpoint is UTF-8 text") from None
        if not text.endswith("\n"):
            raise NoteInvalid("a checkpoint ends with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise NoteInvalid("a checkpoint has an origin, a tree size and a root")
        origin, size, root, *extensions = lines
        if not _DECIMAL.fullmatch(size) or int(size) >= 2**64:
            raise NoteInvalid("the tree size is not a decimal 64-bit number")
        raw = _b64(root, "root")
        if len(raw) != ROOT_SIZE:  # its one spelling is checked by _b64
            raise NoteInvalid(f"the root is not {ROOT_SIZE} bytes in standard base64")
        head = cls(origin=origin, size=int(size), root=raw, extensions=tuple(extensions))
        if head.body() != body:  # one spelling only: what we would have written
            raise NoteInvalid("the checkpoint is not in canonical form")
        return head


def sign_note(
    body: bytes, *, name: str, public_key: bytes, sign: Callable[[bytes], bytes]
) -> bytes:
    """``body`` signed by the Ed25519 key named ``name`` (``sign(message) -> signature``)."""
    _checked_body(body)
    signature = sign(body)
    blob = base64.b64encode(key_id(name, public_key) + signature).decode()
    note = body + f"\n{_DASH}{_checked_name(name)} {blob}\n".encode()
    if len(note) > MAX_NOTE_BYTES:
        raise NoteInvalid(f"a note is at most {MAX_NOTE_BYTES} bytes")
    return note


def open_note(
    note: bytes,
    *,
    name: str,
    public_key: bytes,
    verify: Callable[[bytes, bytes, bytes], bool],
) -> bytes:
    """The body of ``note`` if it carries a valid signature by the key ``name``/``public_key``
    (``verify(public_key, message, signature)``); :class:`NoteInvalid` otherwise. Signatures
    by other keys are ignored (a witness's cosignature, say); the first line of this key
    decides."""
    if len(note) > MAX_NOTE_BYTES:
        raise NoteInvalid(f"a note is at most {MAX_NOTE_BYTES} bytes")
    split = note.rfind(b"\n\n")
    if split < 0:
        raise NoteInvalid("a note has a blank line before its signatures")
    body, signatures = note[: split + 1], note[split + 2 :]
    _checked_body(body)
    lines = _signature_lines(signatures)
    wanted = key_id(name, public_key)
    for signer, blob in lines:
        if signer == name and blob[:4] == wanted:
            if not verify(public_key, body, blob[4:]):
                raise NoteInvalid(f"the signature of {name} does not verify")
            return body
    raise NoteInvalid(f"the note is not signed by {name}")


def _signature_lines(block: bytes) -> list[tuple[str, bytes]]:
    try:
        text = block.decode()
    except UnicodeDecodeError:
        raise NoteInvalid("signature lines are UTF-8 text") from None
    if not text.endswith("\n"):
        raise NoteInvalid("the last signature line ends with a newline")
    lines = text[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteInvalid(f"at most {MAX_SIGNATURES} signatures")
    parsed: list[tuple[str, bytes]] = []
    for line in lines:
        if not line.startswith(_DASH):
            raise NoteInvalid("a signature line starts with an em dash and a space")
        signer, _, blob = line[len(_DASH) :].partition(" ")
        raw = _b64(blob, "signature")
        if len(raw) < 5 or " " in blob:
            raise NoteInvalid("a malformed signature line")
        parsed.append((_checked_name(signer), raw))
    return parsed


def _checked_body(body: bytes) -> None:
    if not body.endswith(b"\n") or b"\n\n" in body:
        raise NoteInvalid("a note's text ends with one newline and has no blank line")
    if any(c < 0x20 and c != 0x0A for c in body):
        raise NoteInvalid("a note's text has no control characters")


def _checked_name(name: str) -> str:
    if not name or "+" in name or any(c.isspace() for c in name):
        raise NoteInvalid("a key name is non-empty, without spaces or '+'")
    return name


def _checked_line(line: str) -> str:
    if not line or "\n" in line or any(ord(c) < 0x20 for c in line):
        raise NoteInvalid("a checkpoint line is non-empty text on one line")
    return line


def _b64(value: str, what: str) -> bytes:
    """``value`` decoded, in its one spelling: the last character before the padding has bits
    no byte uses, and a decoder ignores them, so one signature could be written four ways
    (found by the full fuzz run). Only what :func:`base64.b64encode` writes is read."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise NoteInvalid(f"the {what} is not standard base64") from None
    if base64.b64encode(raw).decode() != value:
        raise NoteInvalid(f"the {what} is not in canonical standard base64")
    return raw

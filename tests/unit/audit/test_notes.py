"""Signed checkpoints: the C2SP signed-note format as Go's sumdb/note writes it, held strictly."""

from __future__ import annotations

import base64

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from hypothesis import given
from hypothesis import strategies as st

from tether.audit.notes import (
    MAX_NOTE_BYTES,
    NoteInvalid,
    TreeHead,
    key_id,
    open_note,
    sign_note,
    verifier_key,
)

# The published example of golang.org/x/mod/sumdb/note (its package documentation).
GO_SIGNER = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    b"If you think cryptography is the answer to your problem,\n"
    b"then you don't know what your problem is.\n"
)
GO_SIGNATURE = (
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
)
GO_NOTE = GO_TEXT + f"\n\u2014 PeterNeumann {GO_SIGNATURE}\n".encode()


def go_key() -> Ed25519PrivateKey:
    seed = base64.b64decode(GO_SIGNER.split("+", 4)[4])[1:]  # PRIVATE+KEY+name+hash+key
    return Ed25519PrivateKey.from_private_bytes(seed)


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def ed25519_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except InvalidSignature:
        return False
    return True


def test_signing_the_go_example_gives_the_go_note_byte_for_byte() -> None:
    key = go_key()
    assert verifier_key("PeterNeumann", raw(key)) == GO_VERIFIER
    assert key_id("PeterNeumann", raw(key)).hex() == "c74f20a3"
    note = sign_note(GO_TEXT, name="PeterNeumann", public_key=raw(key), sign=key.sign)
    assert note == GO_NOTE
    assert open_note(note, name="PeterNeumann", public_key=raw(key), verify=ed25519_verify) == (
        GO_TEXT
    )


def test_a_signed_checkpoint_opens_and_parses_back() -> None:
    key = Ed25519PrivateKey.generate()
    head = TreeHead(origin="tether.example/audit", size=1000, root=b"\x07" * 32, extensions=("x",))
    note = sign_note(head.body(), name="tether.example/audit", public_key=raw(key), sign=key.sign)
    body = open_note(note, name="tether.example/audit", public_key=raw(key), verify=ed25519_verify)
    assert TreeHead.parse(body) == head


@given(at=st.integers(0, len(GO_TEXT) - 1), bit=st.integers(0, 7))
def test_any_flipped_bit_of_the_text_is_refused(at: int, bit: int) -> None:
    changed = bytearray(GO_NOTE)
    changed[at] ^= 1 << bit
    with pytest.raises(NoteInvalid):
        open_note(
            bytes(changed), name="PeterNeumann", public_key=raw(go_key()), verify=ed25519_verify
        )


def test_a_note_signed_by_another_key_or_name_is_refused() -> None:
    other = Ed25519PrivateKey.generate()
    with pytest.raises(NoteInvalid, match="not signed by PeterNeumann"):
        open_note(GO_NOTE, name="PeterNeumann", public_key=raw(other), verify=ed25519_verify)
    with pytest.raises(NoteInvalid, match="not signed by Enoch"):
        open_note(GO_NOTE, name="Enoch", public_key=raw(go_key()), verify=ed25519_verify)


def test_a_forged_signature_under_the_right_key_id_is_refused() -> None:
    blob = base64.b64encode(key_id("PeterNeumann", raw(go_key())) + bytes(64)).decode()
    forged = GO_TEXT + f"\n\u2014 PeterNeumann {blob}\n".encode()
    with pytest.raises(NoteInvalid, match="does not verify"):
        open_note(forged, name="PeterNeumann", public_key=raw(go_key()), verify=ed25519_verify)


def test_a_signature_respelled_in_its_unused_base64_bits_is_refused() -> None:
    """The character before ``=`` carries two bits no byte uses: setting them spells the
    same signature another way, and a second spelling of a signed note is refused."""
    respelled = GO_SIGNATURE[:-2] + "N="
    assert GO_SIGNATURE.endswith("M=")
    assert base64.b64decode(respelled) == base64.b64decode(GO_SIGNATURE)
    note = GO_TEXT + f"\n\u2014 PeterNeumann {respelled}\n".encode()
    with pytest.raises(NoteInvalid, match="canonical"):
        open_note(note, name="PeterNeumann", public_key=raw(go_key()), verify=ed25519_verify)


def test_other_keys_signatures_are_ignored_and_ours_still_decides() -> None:
    witness = Ed25519PrivateKey.generate()
    cosigned = sign_note(GO_TEXT, name="witness", public_key=raw(witness), sign=witness.sign)
    both = GO_NOTE + cosigned[len(GO_TEXT) + 1 :]  # a second signature line
    body = open_note(both, name="PeterNeumann", public_key=raw(go_key()), verify=ed25519_verify)
    assert body == GO_TEXT


@pytest.mark.parametrize(
    ("note", "error"),
    [
        (GO_TEXT, "blank line"),
        (GO_NOTE[:-1], "ends with a newline"),
        (GO_NOTE.replace("\u2014".encode(), b"--"), "em dash"),
        (GO_NOTE.replace(b"x08go", b"x08g!"), "base64"),
        (b"a\x01b\n" + GO_NOTE[len(GO_TEXT) :], "control characters"),
        (GO_NOTE + b"x" * MAX_NOTE_BYTES, "at most"),
        (GO_TEXT + b"\n" + "\u2014 A AAAA\n".encode(), "malformed"),
    ],
    ids=[
        "no_signatures",
        "unterminated",
        "ascii_dash",
        "bad_base64",
        "control_char",
        "huge",
        "short",
    ],
)
def test_malformed_notes_are_refused(note: bytes, error: str) -> None:
    with pytest.raises(NoteInvalid, match=error):
        open_note(note, name="PeterNeumann", public_key=raw(go_key()), verify=ed25519_verify)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"origin\n5\n", "origin, a tree size and a root"),
        (b"origin\n05\n" + base64.b64encode(bytes(32)) + b"\n", "decimal"),
        (b"origin\n-1\n" + base64.b64encode(bytes(32)) + b"\n", "decimal"),
        (b"origin\n5\n" + base64.b64encode(bytes(31)) + b"\n", "32 bytes"),
        (b"origin\n5\n" + base64.b64encode(bytes(32)), "ends with a newline"),
        (b"origin\n5\n" + base64.b64encode(bytes(32)) + b"\n\n", "non-empty"),
        (b"\xff\n5\n", "UTF-8"),
    ],
    ids=["no_root", "leading_zero", "negative", "short_root", "unterminated", "empty_ext", "utf8"],
)
def test_checkpoints_have_one_canonical_form(body: bytes, error: str) -> None:
    with pytest.raises(NoteInvalid, match=error):
        TreeHead.parse(body)


def test_what_would_not_read_back_is_not_written() -> None:
    key = go_key()
    with pytest.raises(NoteInvalid, match="32 bytes"):
        TreeHead(origin="o", size=1, root=bytes(31)).body()
    with pytest.raises(NoteInvalid, match="64-bit"):
        TreeHead(origin="o", size=-1, root=bytes(32)).body()
    with pytest.raises(NoteInvalid, match="one line"):
        TreeHead(origin="o\nx", size=1, root=bytes(32)).body()
    with pytest.raises(NoteInvalid, match="key name"):
        sign_note(GO_TEXT, name="Peter+Neumann", public_key=raw(key), sign=key.sign)
    with pytest.raises(NoteInvalid, match="no blank line"):
        sign_note(b"a\n\nb\n", name="PeterNeumann", public_key=raw(key), sign=key.sign)
    with pytest.raises(NoteInvalid, match="at most"):
        sign_note(b"x" * MAX_NOTE_BYTES + b"\n", name="P", public_key=raw(key), sign=key.sign)


def test_more_than_a_hundred_signatures_or_bytes_that_are_not_text_are_refused() -> None:
    line = GO_NOTE[len(GO_TEXT) + 1 :]
    with pytest.raises(NoteInvalid, match="at most 100"):
        open_note(
            GO_TEXT + b"\n" + line * 101,
            name="PeterNeumann",
            public_key=raw(go_key()),
            verify=ed25519_verify,
        )
    with pytest.raises(NoteInvalid, match="UTF-8"):
        open_note(
            GO_TEXT + b"\n\xff\n",
            name="PeterNeumann",
            public_key=raw(go_key()),
            verify=ed25519_verify,
        )

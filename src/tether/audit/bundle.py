"""Proof bundles: one audit record, its inclusion proof and the signed checkpoint, checked
offline with nothing but the standard library and the log's public key.

``tether audit prove <record-id>`` writes a bundle; anyone holding the log's verifier key
(``tether audit key``, shared out of band) checks it with ``tether audit verify-bundle`` or by
running this module, which imports only the standard library and Tether's stdlib-only modules
(:mod:`~tether.audit.merkle`, :mod:`~tether.audit.notes`, :mod:`~tether.audit.chain`,
:mod:`~tether.audit.ed25519`): copy those five files next to each other and
``python -m tether.audit.bundle KEY bundle.json`` needs nothing installed.

A bundle (JSON, format ``tether-audit-proof/1``)::

    {"format": "tether-audit-proof/1",
     "log": "<origin>", "index": 41, "entry": "<the entry's exact bytes, as text>",
     "size": 1000, "proof": ["<base64 hash>", …],
     "checkpoint": "<the signed note, as text>", "verifier_key": "<name+id+key>"}

Checking it (:func:`verify_bundle`): the checkpoint is signed by the key the verifier trusts
(the bundle's own ``verifier_key`` is only a hint and must be the same key), names the bundle's
log and size; the entry is entry ``index`` of that log in canonical form; and the inclusion
proof leads from the entry's leaf hash to the signed root (RFC 9162 §2.1.3.2). Anything else
raises :class:`BundleInvalid` with the reason.

Example::

    >>> import json
    >>> verify_bundle({"format": "something else"}, verifier_key="x+00000000+AQ==")
    Traceback (most recent call last):
    ...
    tether.audit.bundle.BundleInvalid: not a tether-audit-proof/1 bundle
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
from collections.abc import Mapping, Sequence

from tether.audit.chain import LogInvalid, check_entry
from tether.audit.ed25519 import SignatureInvalid
from tether.audit.ed25519 import verify as ed25519_verify
from tether.audit.merkle import ProofInvalid, leaf_hash, verify_inclusion
from tether.audit.notes import NoteInvalid, TreeHead, open_note, parse_verifier_key

__all__ = ["FORMAT", "BundleInvalid", "make_bundle", "signature_verifies", "verify_bundle"]

FORMAT = "tether-audit-proof/1"
#: A proof has at most 64 hashes (a log of at most 2^64 entries).
MAX_PROOF = 64


class BundleInvalid(ValueError):
    """The bundle does not prove what it claims."""


def make_bundle(
    *,
    log: str,
    index: int,
    entry: bytes,
    proof: Sequence[bytes],
    checkpoint: bytes,
    verifier_key: str,
) -> dict[str, object]:
    return {
        "format": FORMAT,
        "log": log,
        "index": index,
        "entry": entry.decode(),
        "size": TreeHead.parse(checkpoint[: checkpoint.rfind(b"\n\n") + 1]).size,
        "proof": [base64.b64encode(p).decode() for p in proof],
        "checkpoint": checkpoint.decode(),
        "verifier_key": verifier_key,
    }


def signature_verifies(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """The check :func:`~tether.audit.notes.open_note` takes (it raises on False)."""
    try:
        ed25519_verify(public_key, message, signature)
    except SignatureInvalid:
        return False
    return True


def verify_bundle(bundle: Mapping[str, object], *, verifier_key: str) -> dict[str, object]:
    """The record the bundle proves (parsed from its entry); :class:`BundleInvalid`."""
    log, index, entry, size, proof, note = _fields(bundle)
    if bundle.get("verifier_key") not in (None, verifier_key):
        raise BundleInvalid("the bundle names another verifier key than the one trusted")
    head = _signed_head(note, verifier_key)
    if head.origin != log or head.size != size:
        raise BundleInvalid("the checkpoint signs another log or size than the bundle names")
    raw = _utf8(entry, "the entry")
    _check_entry(raw, log=log, index=index)
    try:
        verify_inclusion(leaf_hash(raw), index=index, size=size, proof=proof, root=head.root)
    except ProofInvalid as exc:
        raise BundleInvalid(f"the inclusion proof: {exc}") from None
    record: dict[str, object] = json.loads(raw)["record"]
    return record


def _fields(bundle: Mapping[str, object]) -> tuple[str, int, str, int, list[bytes], str]:
    if bundle.get("format") != FORMAT:
        raise BundleInvalid(f"not a {FORMAT} bundle")
    log, index, entry, size, proof, note = (
        bundle.get(k) for k in ("log", "index", "entry", "size", "proof", "checkpoint")
    )
    if not (isinstance(log, str) and isinstance(entry, str) and isinstance(note, str)):
        raise BundleInvalid("log, entry and checkpoint are text")
    if type(index) is not int or type(size) is not int:
        raise BundleInvalid("index and size are whole numbers")
    if not isinstance(proof, list) or len(proof) > MAX_PROOF:
        raise BundleInvalid(f"the proof is a list of at most {MAX_PROOF} hashes")
    try:
        hashes = [base64.b64decode(p, validate=True) for p in proof if isinstance(p, str)]
    except (binascii.Error, ValueError):
        raise BundleInvalid("a proof hash is not base64") from None
    if len(hashes) != len(proof):
        raise BundleInvalid("a proof hash is not text")
    return log, index, entry, size, hashes, note


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate: no UTF-8 text was ever signed with one
        raise BundleInvalid(f"{what} is not UTF-8 text") from None


def _signed_head(note: str, verifier_key: str) -> TreeHead:
    raw = _utf8(note, "the checkpoint")
    try:
        name, public_key = parse_verifier_key(verifier_key)
        body = open_note(raw, name=name, public_key=public_key, verify=signature_verifies)
        return TreeHead.parse(body)
    except NoteInvalid as exc:
        raise BundleInvalid(f"the checkpoint: {exc}") from None


def _check_entry(raw: bytes, *, log: str, index: int) -> None:
    """Entry ``index`` of ``log`` in canonical form (its link is the tree's to vouch for)."""
    try:
        check_entry(raw, origin=log, index=index)
    except LogInvalid as exc:
        raise BundleInvalid(f"the entry: {exc.reason}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tether.audit.bundle VERIFIER_KEY BUNDLE.json``: exit 0 if it proves."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m tether.audit.bundle VERIFIER_KEY BUNDLE.json", file=sys.stderr)
        return 2
    try:
        with open(args[1], encoding="utf-8") as file:
            record = verify_bundle(json.load(file), verifier_key=args[0])
    except (OSError, ValueError) as exc:
        print(f"not proven: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"proven": True, "record": record}, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

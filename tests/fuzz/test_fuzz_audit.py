"""Fuzzing the audit log's decoders and proof verifiers: proof bundles (``verify_bundle``),
signed notes (``open_note``, ``TreeHead.parse``, ``parse_verifier_key``), Merkle proofs
(``verify_inclusion``, ``verify_consistency``), log entries (``check_entry``) and the record
in an entry (``AuditRecord.from_entry``).

The rule: any input is accepted or refused with the declared error — ``BundleInvalid``,
``NoteInvalid``, ``ProofInvalid``, ``LogInvalid``; ``ValueError``/``KeyError`` for
``from_entry``, as it documents — and a valid bundle, note or proof with any one change
never verifies.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz._profiles import FUZZ
from tests.fuzz._strategies import (
    deep_json,
    hostile_text,
    ijson_values,
    json_values,
    mutated_bytes,
)
from tests.support.audit import open_log
from tether._internal.clock import FixedClock
from tether.audit.bundle import BundleInvalid, signature_verifies, verify_bundle
from tether.audit.chain import LogInvalid, check_entry
from tether.audit.merkle import (
    ProofInvalid,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)
from tether.audit.notes import NoteInvalid, TreeHead, open_note, parse_verifier_key
from tether.audit.reader import prove
from tether.audit.records import AuditRecord
from tether.store.memory import MemoryStore

CLOCK = FixedClock()


def _bundle() -> tuple[dict[str, Any], str]:
    async def make() -> tuple[dict[str, Any], str]:
        store = MemoryStore(clock=CLOCK)
        log = await open_log(store, CLOCK)
        made = [AuditRecord.new(type="agent.registered", actor="op", subject=f"a{n}",
                                time=CLOCK.now(), details={"n": n}) for n in range(11)]  # fmt: skip
        for record in made:
            await log.append(record)
        await log.close()
        return await prove(store, made[6].id, verifier_key=log.verifier_key), log.verifier_key

    return asyncio.run(make())


BUNDLE, KEY = _bundle()
_NAME, _PUBLIC = parse_verifier_key(KEY)


def test_the_valid_bundle_proves_its_record() -> None:
    assert verify_bundle(BUNDLE, verifier_key=KEY)["subject"] == "a6"


def _text(value: str) -> st.SearchStrategy[str]:
    return mutated_bytes(value.encode()).map(lambda b: b.decode("utf-8", "surrogateescape"))


@st.composite
def _changed_bundle(draw: st.DrawFn) -> dict[str, Any]:
    """The valid bundle with one member changed: its text or bytes mutated, a proof hash
    with a bit flipped, a number moved, or any JSON put in its place."""
    bundle = dict(BUNDLE)
    name = draw(st.sampled_from(sorted(bundle)))
    value = bundle[name]
    kind = draw(st.integers(0, 2))
    if kind == 0 and isinstance(value, str):
        bundle[name] = draw(_text(value))
    elif kind == 0 and isinstance(value, int):
        bundle[name] = value + draw(st.integers(-3, 3).filter(bool))
    elif kind == 0 and isinstance(value, list):
        at = draw(st.integers(0, len(value) - 1))
        raw = draw(mutated_bytes(base64.b64decode(value[at])))
        bundle[name] = [*value[:at], base64.b64encode(raw).decode(), *value[at + 1 :]]
    elif kind == 1:
        bundle[name] = draw(json_values(5))
    else:
        del bundle[name]
    return bundle


def _without_hint(bundle: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in bundle.items() if k != "verifier_key"}


@FUZZ
@given(bundle=_changed_bundle())
def test_a_changed_bundle_never_proves_and_is_refused_as_bundle_invalid(
    bundle: dict[str, Any],
) -> None:
    if _without_hint(bundle) == _without_hint(BUNDLE) and bundle.get("verifier_key") in (None, KEY):
        return  # unchanged, or only the (optional) key hint dropped
    with pytest.raises(BundleInvalid):
        verify_bundle(bundle, verifier_key=KEY)


@FUZZ
@given(bundle=st.one_of(st.dictionaries(hostile_text, json_values(), max_size=8),
                        st.fixed_dictionaries({}, optional={k: json_values(5) for k in BUNDLE})),
       key=st.one_of(st.just(KEY), hostile_text))  # fmt: skip
def test_bundle_verifier_refuses_any_json_with_bundle_invalid_only(
    bundle: dict[str, Any], key: str
) -> None:
    with pytest.raises(BundleInvalid):
        verify_bundle(bundle, verifier_key=key)


_NOTE: bytes = BUNDLE["checkpoint"].encode()


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


@FUZZ
@given(note=st.one_of(mutated_bytes(_NOTE).filter(lambda n: n != _NOTE), st.binary(max_size=600),
                      hostile_text.map(_raw)))  # fmt: skip
def test_a_changed_or_hostile_note_is_refused_as_note_invalid(note: bytes) -> None:
    with pytest.raises(NoteInvalid):
        open_note(note, name=_NAME, public_key=_PUBLIC, verify=signature_verifies)


@FUZZ
@given(body=st.one_of(st.binary(max_size=300), hostile_text.map(_raw)), key=hostile_text)
def test_note_and_key_parsers_refuse_any_input_with_note_invalid_only(
    body: bytes, key: str
) -> None:
    for parse in (lambda: TreeHead.parse(body), lambda: parse_verifier_key(key)):
        with contextlib.suppress(NoteInvalid):
            parse()


_LEAVES = [leaf_hash(f"entry {n}".encode()) for n in range(13)]


@FUZZ
@given(size=st.integers(1, 13), data=st.data())
def test_a_changed_inclusion_proof_never_verifies(size: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, size - 1))
    root, proof = root_hash(_LEAVES[:size]), inclusion_proof(_LEAVES[:size], index)
    verify_inclusion(_LEAVES[index], index=index, size=size, proof=proof, root=root)
    parts = [_LEAVES[index], root, *proof]
    at = data.draw(st.integers(0, len(parts) - 1))
    parts[at] = data.draw(mutated_bytes(parts[at]))
    moved = data.draw(st.sampled_from([(index, size), (index + 1, size), (index, size + 1),
                                       (index - 1, size), (index, 2**64)]))  # fmt: skip
    with pytest.raises(ProofInvalid):
        verify_inclusion(parts[0], index=moved[0], size=moved[1], proof=parts[2:], root=parts[1])


@FUZZ
@given(size2=st.integers(2, 13), data=st.data())
def test_a_changed_consistency_proof_never_verifies(size2: int, data: st.DataObject) -> None:
    size1 = data.draw(st.integers(1, size2 - 1))
    root1, root2 = root_hash(_LEAVES[:size1]), root_hash(_LEAVES[:size2])
    proof = consistency_proof(_LEAVES[:size2], size1)
    verify_consistency(size1, size2, root1, root2, proof)
    parts = [root1, root2, *proof]
    at = data.draw(st.integers(0, len(parts) - 1))
    parts[at] = data.draw(mutated_bytes(parts[at]))
    with pytest.raises(ProofInvalid):
        verify_consistency(size1, size2, parts[0], parts[1], parts[2:])


_hashes = st.lists(st.binary(min_size=0, max_size=40), max_size=70)
_sizes = st.integers(min_value=-(2**65), max_value=2**65)


@FUZZ
@given(a=_sizes, b=_sizes, leaf=st.binary(max_size=40), root=st.binary(max_size=40),
       proof=_hashes)  # fmt: skip
def test_proof_verifiers_refuse_any_input_with_proof_invalid_only(
    a: int, b: int, leaf: bytes, root: bytes, proof: list[bytes]
) -> None:
    with contextlib.suppress(ProofInvalid):
        verify_inclusion(leaf, index=a, size=b, proof=proof, root=root)
    with contextlib.suppress(ProofInvalid):
        verify_consistency(a, b, leaf, root, proof)


_ENTRY: bytes = BUNDLE["entry"].encode()


@st.composite
def _entry(draw: st.DrawFn) -> bytes:
    """A real entry mutated; its frame around hostile JSON or deep nesting; any bytes."""
    choice = draw(st.integers(0, 2))
    if choice == 0:
        return draw(mutated_bytes(_ENTRY))
    if choice == 1:
        head = _ENTRY[: _ENTRY.index(b'"record":') + len(b'"record":')]
        # I-JSON only: deep nesting and escaped lone surrogates are the known bug below.
        inner: str = json.dumps(draw(ijson_values()))
        return head + inner.encode() + b"}"
    return draw(st.binary(max_size=300))


@FUZZ
@given(entry=_entry())
def test_entry_decoder_refuses_any_bytes_with_log_invalid_only(entry: bytes) -> None:
    """A form check (the record's bytes are the tree's to vouch for): it may accept a changed
    record that is still an entry in canonical form, but refuses anything else as such."""
    with contextlib.suppress(LogInvalid):
        check_entry(entry, origin=BUNDLE["log"], index=BUNDLE["index"])


_HEAD = _ENTRY[: _ENTRY.index(b'"record":') + len(b'"record":')]
_SURROGATE_RECORD = _HEAD + b'{"x":"\\ud800"}}'
_DEEP_RECORD = _HEAD + b"[" * 100_000 + b"]" * 100_000 + b"}"


@pytest.mark.parametrize(
    "entry",
    [_DEEP_RECORD, _SURROGATE_RECORD,
     _HEAD.split(b',"prev":')[0] + b',"prev":"\\ud800","record":{}}'],
    ids=["nested-too-deep", "surrogate-in-record", "surrogate-in-prev"],
)  # fmt: skip
def test_entry_decoder_refuses_deep_nesting_and_lone_surrogates_with_log_invalid(
    entry: bytes,
) -> None:
    with pytest.raises(LogInvalid):
        check_entry(entry, origin=BUNDLE["log"], index=BUNDLE["index"])


@FUZZ
@given(
    entry=st.one_of(
        _entry(),
        deep_json().map(lambda t: _HEAD + t.encode() + b"}"),
        json_values().map(lambda v: _HEAD + json.dumps(v).encode() + b"}"),
    )
)
def test_record_decoder_refuses_any_entry_with_value_or_key_error_only(entry: bytes) -> None:
    with contextlib.suppress(ValueError, KeyError):
        AuditRecord.from_entry(entry)


def test_bundle_with_a_lone_surrogate_in_its_text_is_refused_as_bundle_invalid() -> None:
    """Found by the fuzz: encoding the checkpoint (or the entry) raised
    ``UnicodeEncodeError``, not ``BundleInvalid`` — and so did an entry holding an escaped
    lone surrogate (the entry check encodes what it parsed): not canonical form."""
    for name in ("checkpoint", "entry"):
        with pytest.raises(BundleInvalid, match="not UTF-8"):
            verify_bundle(BUNDLE | {name: BUNDLE[name] + "\udc80"}, verifier_key=KEY)
    with pytest.raises(BundleInvalid, match="not in canonical form"):
        verify_bundle(BUNDLE | {"entry": _SURROGATE_RECORD.decode()}, verifier_key=KEY)


def test_bundle_whose_entry_is_nested_too_deep_is_refused_as_bundle_invalid() -> None:
    """Found by the fuzz: the entry check's JSON parser hit the recursion limit and the
    ``RecursionError`` escaped the verifier: now it is not JSON the log could hold."""
    head = BUNDLE["entry"][: BUNDLE["entry"].index('"record":') + len('"record":')]
    deep = head + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(BundleInvalid, match="it is not JSON"):
        verify_bundle(BUNDLE | {"entry": deep}, verifier_key=KEY)


@pytest.mark.parametrize(
    "entry",
    [b"[]", b'{"record": null}', b'{"record": [1]}', b'{"record": {"details": 1}}',
     b'{"record":' + b"[" * 100_000 + b"]" * 100_000 + b"}"],
    ids=["list", "record-null", "record-list", "details-number", "nested-too-deep"],
)  # fmt: skip
def test_record_decoder_refuses_an_entry_of_another_shape_with_value_error(entry: bytes) -> None:
    """Found by the fuzz: ``TypeError``/``RecursionError`` instead of the documented
    ``ValueError``."""
    with pytest.raises(ValueError, match=r"entry|record"):
        AuditRecord.from_entry(entry)

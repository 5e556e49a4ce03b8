"""The log check finds every change to a 100-record log, and names the first bad entry."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
import rfc8785

from tether.audit.chain import LogInvalid, LogVerifier, genesis, verify_log
from tether.audit.merkle import CompactTree, leaf_hash, root_hash
from tether.audit.records import AuditRecord, Outcome

ORIGIN = "tether.example/audit/r1"
SIZE = 100


def record(n: int) -> AuditRecord:
    return AuditRecord(
        id=f"rec_{n:03d}",
        type="decision",
        time=datetime(2026, 12, 1, 12, 0, n % 60, tzinfo=UTC),
        actor="spiffe://acme.org/agent/faq-bot/i/pod-1",
        subject='Tool::"search_faq"',
        outcome=Outcome.SUCCESS if n % 3 else Outcome.FAILURE,
        details={"decision_id": f"dec_{n}", "effect": "allow" if n % 3 else "deny"},
    )


def log(origin: str = ORIGIN, size: int = SIZE) -> list[bytes]:
    prev, entries = genesis(origin), []
    for n in range(size):
        entries.append(record(n).entry(origin=origin, index=n, prev=prev))
        prev = leaf_hash(entries[-1])
    return entries


ENTRIES = log()
GENESIS = genesis(ORIGIN).hex().encode()
#: The chain head of each entry is its leaf hash (the next entry names it as ``prev``).
HEADS = [leaf_hash(e) for e in ENTRIES]
SIGNED = {
    50: root_hash([leaf_hash(e) for e in ENTRIES[:50]]),
    100: root_hash([leaf_hash(e) for e in ENTRIES]),
}


def check(entries: list[bytes], **kwargs: object) -> int:
    """The first bad index the check names (it must name one)."""
    options = {"chain_heads": HEADS, "checkpoints": SIGNED} | kwargs
    with pytest.raises(LogInvalid) as found:
        verify_log(entries, origin=ORIGIN, **options)  # type: ignore[arg-type]
    return found.value.index


def test_an_untouched_log_verifies_to_its_signed_root_and_chain_head() -> None:
    state = verify_log(ENTRIES, origin=ORIGIN, chain_heads=HEADS, checkpoints=SIGNED)
    assert (state.size, state.root, state.chain) == (SIZE, SIGNED[100], HEADS[-1])


@pytest.mark.parametrize("size", range(70))
def test_the_compact_tree_has_the_rfc_root_at_every_size(size: int) -> None:
    tree = CompactTree()
    leaves = [leaf_hash(e) for e in log(size=size)]
    for leaf in leaves:
        tree.append(leaf)
    assert (tree.size, tree.root()) == (size, root_hash(leaves))


def test_every_single_byte_change_at_every_offset_is_found_at_its_entry() -> None:
    missed = []
    for index, entry in enumerate(ENTRIES):
        for offset in range(len(entry)):
            changed = bytearray(entry)
            changed[offset] ^= 0x01
            tampered = [*ENTRIES[:index], bytes(changed), *ENTRIES[index + 1 :]]
            if check(tampered) != index:
                missed.append((index, offset))
    assert missed == []


def test_without_chain_heads_a_changed_entry_is_named_by_the_next_ones_link() -> None:
    changed = ENTRIES[7].replace(b'"effect":"allow"', b'"effect":"deny"')  # still an entry
    assert changed != ENTRIES[7]
    tampered = [*ENTRIES[:7], changed, *ENTRIES[8:]]
    assert check(tampered, chain_heads=None) == 7


def test_without_chain_heads_a_changed_last_entry_is_found_by_the_signed_root() -> None:
    changed = ENTRIES[-1].replace(b'"effect":"deny"', b'"effect":"allow"')
    assert changed != ENTRIES[-1]
    assert check([*ENTRIES[:-1], changed], chain_heads=None) == SIZE - 1


def test_a_changed_link_is_found_at_its_entry_when_chain_heads_are_kept() -> None:
    entry = ENTRIES[30]
    start = entry.index(b'"prev":"') + len(b'"prev":"')
    flipped = b"0" if entry[start : start + 1] != b"0" else b"1"
    changed = entry[:start] + flipped + entry[start + 1 :]
    assert check([*ENTRIES[:30], changed, *ENTRIES[31:]]) == 30


@pytest.mark.parametrize("index", [0, 1, 49, 50, 98])
def test_a_deleted_entry_is_found_where_it_was(index: int) -> None:
    assert check([*ENTRIES[:index], *ENTRIES[index + 1 :]]) == index


@pytest.mark.parametrize("index", [0, 17, 98])
def test_two_swapped_entries_are_found_at_the_first(index: int) -> None:
    swapped = list(ENTRIES)
    swapped[index], swapped[index + 1] = swapped[index + 1], swapped[index]
    assert check(swapped) == index


@pytest.mark.parametrize("index", [0, 42, 99])
def test_a_duplicated_entry_is_found_at_the_copy(index: int) -> None:
    assert check([*ENTRIES[: index + 1], ENTRIES[index], *ENTRIES[index + 1 :]]) == index + 1


@pytest.mark.parametrize("kept", [0, 1, 50, 99])
def test_a_truncated_log_is_found_against_the_signed_size(kept: int) -> None:
    assert check(ENTRIES[:kept], chain_heads=HEADS[:kept]) == kept


def test_an_entry_spliced_in_from_another_log_is_found() -> None:
    other = log(origin="tether.example/audit/r2")
    assert check([*ENTRIES[:30], other[30], *ENTRIES[31:]]) == 30
    with pytest.raises(LogInvalid, match="another log"):
        verify_log(other, origin=ORIGIN)


def test_an_edited_checkpoint_is_found_at_its_size() -> None:
    edited = SIGNED | {50: bytes(32)}
    assert check(ENTRIES, checkpoints=edited) == 49


def test_chain_heads_beyond_the_entries_mean_entries_are_missing() -> None:
    assert check(ENTRIES[:60], chain_heads=HEADS, checkpoints={}) == 60


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (b"\xff", "not JSON"),
        (b"[1, 2]", "not an entry"),
        (b'{"index": 0, "log": "tether.example/audit/r1"}', "not an entry"),
        (
            b'{"index": true, "log": "tether.example/audit/r1", "prev": "%s", "record": {}}'
            % GENESIS,
            "says it is",
        ),
        (
            b'{"index": 0, "log": "tether.example/audit/r1", "prev": "%s", "record": {}}' % GENESIS,
            "canonical form",
        ),
        (
            b'{"index":0,"log":"tether.example/audit/r1","prev":"%s","record":{}}' % (b"ab" * 32),
            "does not name the entry before",
        ),
    ],
)
def test_entries_that_are_not_entries_are_refused(entry: bytes, reason: str) -> None:
    with pytest.raises(LogInvalid, match=reason):
        verify_log([entry], origin=ORIGIN)


def test_an_entry_is_the_canonical_json_of_its_place_log_link_and_record() -> None:
    entry = record(5).entry(origin=ORIGIN, index=5, prev=HEADS[4])
    assert entry == ENTRIES[5]
    parsed = json.loads(entry)
    assert parsed == {
        "index": 5,
        "log": ORIGIN,
        "prev": HEADS[4].hex(),
        "record": record(5).to_dict(),
    }
    assert rfc8785.dumps(parsed) == entry  # one spelling: what any RFC 8785 writer writes


@pytest.mark.parametrize(
    "changes",
    [
        {"details": {"score": 0.25, "limit": 1e21}},
        {"details": {"emoji": "\U0001f600", "nested": [{"b": [1, None]}]}},
        {"actor": 42},
        {"subject": "\U0001f600 beyond the BMP"},
    ],
    ids=["floats", "beyond-bmp-in-details", "actor-not-text", "subject-beyond-bmp"],
)
def test_an_entry_is_what_rfc8785_writes_whatever_its_fields_hold(changes: dict[str, Any]) -> None:
    odd = replace(record(5), **changes)
    entry = odd.entry(origin=ORIGIN, index=5, prev=HEADS[4])
    body: Any = {"index": 5, "log": ORIGIN, "prev": HEADS[4].hex(), "record": odd.to_dict()}
    assert entry == rfc8785.dumps(body)


def test_strict_verification_names_a_last_entry_that_is_linked_but_not_an_entry() -> None:
    keep = ENTRIES[-1].index(b'","record":')
    junk = ENTRIES[-1][:keep] + b'", "record": "not the canonical form"}'
    tampered = [*ENTRIES[:-1], junk]
    verify_log(tampered, origin=ORIGIN)  # the link holds and nothing signs it: integrity
    verifier = LogVerifier(origin=ORIGIN, strict=True)
    with pytest.raises(LogInvalid, match="canonical form") as found:
        verifier.feed(tampered)
    assert found.value.index == SIZE - 1


def _relinked_at(bad: int) -> list[bytes]:
    """The log as a writer that named the wrong entry before ``bad`` (the genesis hash)
    would write it, each later entry linked to the one before as written."""
    prev, entries = genesis(ORIGIN), []
    for n in range(SIZE):
        link = genesis(ORIGIN) if n == bad else prev
        entries.append(record(n).entry(origin=ORIGIN, index=n, prev=link))
        prev = leaf_hash(entries[-1])
    return entries


def test_links_are_checked_after_the_last_signed_root_which_vouches_for_those_before() -> None:
    written = _relinked_at(60)
    heads = [leaf_hash(e) for e in written]
    roots = {n: root_hash(heads[:n]) for n in (50, 100)}
    # Signed at 100: the signature pins every byte the writer chained, so links under it
    # are not read one by one (that is what makes the full check cheap).
    state = verify_log(written, origin=ORIGIN, chain_heads=heads, checkpoints=roots)
    assert state.size == SIZE
    # Signed only up to 50: entry 60 lies in the unsigned tail, where its link is checked.
    with pytest.raises(LogInvalid) as found:
        verify_log(written, origin=ORIGIN, chain_heads=heads, checkpoints={50: roots[50]})
    assert found.value.index == 60

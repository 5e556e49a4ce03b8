"""Merkle proofs Tether generates verify, and any change to them does not (RFC 9162 §2.1)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.audit.merkle import (
    ProofInvalid,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)


def leaves(n: int) -> list[bytes]:
    return [leaf_hash(f"record {i}".encode()) for i in range(n)]


def test_root_follows_the_rfc_split_at_the_largest_power_of_two() -> None:
    a, b, c, d, e = leaves(5)
    assert root_hash([]) == hashlib.sha256(b"").digest()
    assert root_hash([a]) == a
    assert root_hash([a, b, c]) == node_hash(node_hash(a, b), c)
    assert root_hash([a, b, c, d, e]) == node_hash(node_hash(node_hash(a, b), node_hash(c, d)), e)
    assert leaf_hash(b"") != node_hash(b"", b"")  # domain separation: 0x00 vs 0x01


@pytest.mark.parametrize("size", range(1, 34))
def test_every_leaf_of_every_small_tree_proves_its_inclusion(size: int) -> None:
    tree = leaves(size)
    root = root_hash(tree)
    for index, leaf in enumerate(tree):
        verify_inclusion(
            leaf, index=index, size=size, proof=inclusion_proof(tree, index), root=root
        )


@pytest.mark.parametrize("size2", range(1, 34))
def test_every_prefix_of_every_small_tree_proves_consistency(size2: int) -> None:
    tree = leaves(size2)
    for size1 in range(1, size2 + 1):
        proof = consistency_proof(tree, size1)
        verify_consistency(size1, size2, root_hash(tree[:size1]), root_hash(tree), proof)


@given(size=st.integers(1, 300), data=st.data())
def test_a_changed_inclusion_proof_never_verifies(size: int, data: st.DataObject) -> None:
    tree = leaves(size)
    index = data.draw(st.integers(0, size - 1))
    proof, root = inclusion_proof(tree, index), root_hash(tree)
    other = data.draw(st.integers(0, size - 1).filter(lambda i: i != index)) if size > 1 else None
    if other is not None:  # another leaf's place, or another leaf in this place
        with pytest.raises(ProofInvalid):
            verify_inclusion(tree[index], index=other, size=size, proof=proof, root=root)
        with pytest.raises(ProofInvalid):
            verify_inclusion(tree[other], index=index, size=size, proof=proof, root=root)
    if proof:  # one bit of one hash
        at = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        flipped = bytearray(proof[at])
        flipped[bit // 8] ^= 1 << (bit % 8)
        bad = [*proof[:at], bytes(flipped), *proof[at + 1 :]]
        with pytest.raises(ProofInvalid):
            verify_inclusion(tree[index], index=index, size=size, proof=bad, root=root)
        with pytest.raises(ProofInvalid):  # a hash dropped
            verify_inclusion(tree[index], index=index, size=size, proof=proof[:-1], root=root)
    # (A root does not commit to its tree's size by itself — the signed checkpoint names both —
    # so the same proof may also fit another size; that is RFC 6962's design, not a check.)


@given(size2=st.integers(2, 300), data=st.data())
def test_a_rewritten_or_truncated_history_never_proves_consistency(
    size2: int, data: st.DataObject
) -> None:
    tree = leaves(size2)
    size1 = data.draw(st.integers(1, size2 - 1))
    proof = consistency_proof(tree, size1)
    root1, root2 = root_hash(tree[:size1]), root_hash(tree)
    verify_consistency(size1, size2, root1, root2, proof)
    rewritten = list(tree)
    rewritten[data.draw(st.integers(0, size1 - 1))] = leaf_hash(b"forged")
    with pytest.raises(ProofInvalid):  # an old record changed: the old root no longer fits
        verify_consistency(size1, size2, root_hash(rewritten[:size1]), root2, proof)
    with pytest.raises(ProofInvalid):  # the newer tree is not the one the proof was made for
        verify_consistency(size1, size2, root1, root_hash(rewritten), proof)
    with pytest.raises(ProofInvalid):  # the roots swapped
        verify_consistency(size1, size2, root2, root1, proof)
    with pytest.raises(ProofInvalid):  # a proof cut short
        verify_consistency(size1, size2, root1, root2, proof[:-1])


def test_proofs_are_asked_for_leaves_that_exist() -> None:
    with pytest.raises(ValueError, match="no leaf 3"):
        inclusion_proof(leaves(3), 3)
    with pytest.raises(ValueError, match="from size 0"):
        consistency_proof(leaves(3), 0)
    with pytest.raises(ValueError, match="from size 4"):
        consistency_proof(leaves(3), 4)

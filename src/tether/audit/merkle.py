"""Merkle trees over the audit log: RFC 6962 / RFC 9162 §2.1 hashing, proofs and their checks.

The audit log's records are the leaves of a Merkle tree. A signed checkpoint names a tree size
and its root; an *inclusion proof* shows that a record is in the tree a checkpoint signed, a
*consistency proof* that a later tree extends an earlier one (nothing was rewritten or cut
off). Anyone holding a record, a proof and the signed root can check them offline.

Hashing (RFC 9162 §2.1.1): a leaf is ``SHA-256(0x00 || data)``, an inner node
``SHA-256(0x01 || left || right)``; the tree of ``n`` leaves splits at the largest power of two
below ``n``.

Why this is written here rather than taken from a library: the verification half must run
with nothing but the standard library (the issue's "dependency-free verifier": a third party
checks a proof bundle without installing Tether's dependencies), and the algorithms are short
and pinned by the public vectors of transparency-dev/merkle (``tests/vectors/merkle/``), which
this module passes. The checks follow the shape of RFC 9162 §2.1.3.2 and §2.1.4.2 as those
vectors pin it down: every hash exactly 32 bytes, a proof of exactly the expected length,
a consistency proof from an empty tree refused.

Verification raises :class:`ProofInvalid` (never returns a bare bool). Example::

    >>> leaves = [leaf_hash(f"record {i}".encode()) for i in range(5)]
    >>> root = root_hash(leaves)
    >>> verify_inclusion(leaves[3], index=3, size=5, proof=inclusion_proof(leaves, 3), root=root)
    >>> older = root_hash(leaves[:3])
    >>> verify_consistency(3, 5, older, root, consistency_proof(leaves, 3))
    >>> verify_consistency(3, 5, root, older, consistency_proof(leaves, 3))
    Traceback (most recent call last):
    ...
    tether.audit.merkle.ProofInvalid: the proof does not lead to the first root
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

__all__ = [
    "HASH_SIZE",
    "CompactTree",
    "ProofInvalid",
    "RangeHash",
    "consistency_path",
    "consistency_proof",
    "inclusion_path",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "peak_ranges",
    "root_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
_LEAF = b"\x00"
_NODE = b"\x01"
_EMPTY_ROOT = hashlib.sha256(b"").digest()
#: The largest run of leaves :meth:`CompactTree.extend` hashes level by level at once.
_BLOCK = 1024


class ProofInvalid(ValueError):
    """A proof that does not verify. A plain ``ValueError`` (not a :class:`tether.errors.Error`)
    so that this module needs nothing but the standard library."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(_LEAF + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (``n`` ≥ 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class CompactTree:
    """A Merkle tree kept as the roots of its perfect subtrees, largest first: appending is
    amortised O(1), the root O(log n), memory O(log n)."""

    def __init__(self) -> None:
        self.size = 0
        self._peaks: list[bytes] = []

    @classmethod
    def from_peaks(cls, size: int, peaks: Sequence[bytes]) -> CompactTree:
        """The tree of ``size`` leaves whose perfect subtrees (one per set bit of ``size``,
        largest first) have the roots ``peaks``."""
        if size < 0 or len(peaks) != size.bit_count():
            raise ValueError(f"a tree of {size} leaves has {size.bit_count()} peaks")
        tree = cls()
        tree.size, tree._peaks = size, list(peaks)
        return tree

    def copy(self) -> CompactTree:
        return CompactTree.from_peaks(self.size, self._peaks)

    def append(self, leaf: bytes) -> None:
        self._peaks.append(leaf)
        self.size += 1
        merged = self.size
        while not merged & 1:  # two subtrees of the same size become one
            right = self._peaks.pop()
            self._peaks[-1] = node_hash(self._peaks[-1], right)
            merged >>= 1

    def append_nodes(self, leaf: bytes, *, min_level: int) -> list[tuple[int, int, bytes]]:
        """:meth:`append`, returning the perfect subtrees it completed of height ≥
        ``min_level`` as ``(level, index, hash)``: node ``index`` of level ``level`` covers
        leaves ``[index·2^level, (index+1)·2^level)``."""
        self._peaks.append(leaf)
        self.size += 1
        done: list[tuple[int, int, bytes]] = []
        merged, level = self.size, 0
        while not merged & 1:
            right = self._peaks.pop()
            self._peaks[-1] = node_hash(self._peaks[-1], right)
            merged >>= 1
            level += 1
            if level >= min_level:
                done.append((level, (self.size >> level) - 1, self._peaks[-1]))
        return done

    def extend(self, leaves: Sequence[bytes]) -> None:
        """:meth:`append` each of ``leaves``, faster: runs of them that fill a perfect subtree
        (aligned, up to 1,024 leaves) are hashed level by level, then added as one peak."""
        i, n = 0, len(leaves)
        sha = hashlib.sha256
        while i < n:
            k = (self.size & -self.size) or _BLOCK  # the largest aligned subtree that fits
            k = min(k, _BLOCK)
            while k > n - i:
                k >>= 1
            if k == 1:
                self.append(leaves[i])
                i += 1
                continue
            level = leaves[i : i + k]
            while len(level) > 1:
                pairs = zip(level[::2], level[1::2], strict=True)
                level = [sha(_NODE + a + b).digest() for a, b in pairs]
            self._peaks.append(level[0])
            height = k.bit_length() - 1
            self.size += k
            merged = self.size >> height
            while not merged & 1:
                right = self._peaks.pop()
                self._peaks[-1] = node_hash(self._peaks[-1], right)
                merged >>= 1
            i += k

    def root(self) -> bytes:
        """RFC 9162's root: the peaks joined from the right (the split at the largest power
        of two); SHA-256 of nothing when empty."""
        if not self._peaks:
            return _EMPTY_ROOT
        root = self._peaks[-1]
        for peak in reversed(self._peaks[:-1]):
            root = node_hash(peak, root)
        return root


def peak_ranges(size: int) -> list[tuple[int, int]]:
    """The leaf ranges ``[a, b)`` of the perfect subtrees of a tree of ``size``, largest first
    (what :meth:`CompactTree.from_peaks` takes the roots of)."""
    ranges, start = [], 0
    for level in reversed(range(size.bit_length())):
        if size >> level & 1:
            ranges.append((start, start + (1 << level)))
            start += 1 << level
    return ranges


def root_hash(leaves: Sequence[bytes]) -> bytes:
    """The root of the tree over ``leaves`` (leaf hashes); SHA-256 of nothing when empty."""
    tree = CompactTree()
    for leaf in leaves:
        tree.append(leaf)
    return tree.root()


#: ``subtree(a, b)``: the root of the tree over leaves ``[a, b)`` (RFC 9162's ``MTH``).
RangeHash = Callable[[int, int], bytes]


def inclusion_path(subtree: RangeHash, index: int, size: int) -> list[bytes]:
    """RFC 9162 §2.1.3.1 ``PATH(index, D[0:size])``, the siblings from the leaf up, asking
    ``subtree`` for the root of each sibling range (a store answers from stored nodes)."""
    if not 0 <= index < size:
        raise ValueError(f"no leaf {index} in a tree of {size}")
    path: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            path.append(subtree(lo, lo + k))
            lo += k
    return path[::-1]


def consistency_path(subtree: RangeHash, size1: int, size2: int) -> list[bytes]:
    """RFC 9162 §2.1.4.1 ``PROOF(size1, D[0:size2])``: that the tree of the first ``size1``
    leaves is a prefix of the tree of ``size2``."""
    if not 0 < size1 <= size2:
        raise ValueError(f"no consistency proof from size {size1} to {size2}")
    proof: list[bytes] = []
    lo, hi, m, complete = 0, size2, size1, True
    while m != hi - lo:  # SUBPROOF(m, D[lo:hi], complete)
        k = _split(hi - lo)
        if m <= k:
            proof.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            proof.append(subtree(lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    if not complete:
        proof.append(subtree(lo, hi))
    return proof[::-1]


def _over(leaves: Sequence[bytes]) -> RangeHash:
    return lambda a, b: root_hash(leaves[a:b])


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """:func:`inclusion_path` over a list of leaf hashes."""
    return inclusion_path(_over(leaves), index, len(leaves))


def consistency_proof(leaves: Sequence[bytes], size1: int) -> list[bytes]:
    """:func:`consistency_path` from ``size1`` to all of ``leaves``."""
    return consistency_path(_over(leaves), size1, len(leaves))


# -- verification (standard library only) -----------------------------------------------


def verify_inclusion(
    leaf: bytes, *, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """That ``leaf`` (a leaf hash) is leaf ``index`` of the tree of ``size`` leaves whose root
    is ``root``; :class:`ProofInvalid` otherwise."""
    if not 0 <= index < size:
        raise ProofInvalid(f"leaf {index} is not in a tree of {size}")
    _sized(leaf, "leaf hash")
    _sized(root, "root")
    inner, border = _decompose(index, size)
    if len(proof) != inner + border:
        raise ProofInvalid(f"the proof has {len(proof)} hashes, not {inner + border}")
    for step in proof:
        _sized(step, "proof hash")
    computed = _chain_border(_chain_inner(leaf, proof[:inner], index), proof[inner:])
    if computed != root:
        raise ProofInvalid("the proof does not lead to the root")


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """That the tree of ``size2`` leaves with root ``root2`` extends the tree of ``size1``
    leaves with root ``root1``; :class:`ProofInvalid` otherwise."""
    if _same_tree(size1, size2, root1, root2, proof):
        return
    _sized(root1, "first root")
    _sized(root2, "second root")
    for step in proof:
        _sized(step, "proof hash")
    inner, border = _decompose(size1 - 1, size2)
    shift = (size1 & -size1).bit_length() - 1  # trailing zero bits of size1
    inner -= shift
    # The first tree's rightmost complete subtree (of 2^shift leaves) opens the proof, unless
    # the first tree is exactly that subtree: then it is root1 itself.
    seed, rest = (root1, proof) if size1 == 1 << shift else (proof[0], proof[1:])
    if len(rest) != inner + border:
        raise ProofInvalid(f"the proof has the wrong number of hashes ({len(proof)})")
    mask = (size1 - 1) >> shift
    first = _chain_border(_chain_inner_right(seed, rest[:inner], mask), rest[inner:])
    if first != root1:
        raise ProofInvalid("the proof does not lead to the first root")
    second = _chain_border(_chain_inner(seed, rest[:inner], mask), rest[inner:])
    if second != root2:
        raise ProofInvalid("the proof does not lead to the second root")


def _same_tree(size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]) -> bool:
    """The cases decided by the sizes alone: True when both are one tree (and it checks)."""
    if size1 <= 0:
        raise ProofInvalid("a consistency proof from an empty tree proves nothing")
    if size2 < size1:
        raise ProofInvalid(f"the second tree ({size2}) is smaller than the first ({size1})")
    if size1 == size2:
        if proof:
            raise ProofInvalid("equal sizes take an empty proof")
        if root1 != root2:
            raise ProofInvalid("equal sizes but different roots")
        return True
    if not proof:
        raise ProofInvalid("the proof is empty")
    return False


def _sized(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise ProofInvalid(f"a {what} is {len(value)} bytes, not {HASH_SIZE}")


def _decompose(index: int, size: int) -> tuple[int, int]:
    """How many proof hashes are below the point where the paths to ``index`` and to the last
    leaf part (inner), and how many above it (border: where ``index``'s path goes right)."""
    inner = (index ^ (size - 1)).bit_length()
    border = (index >> inner).bit_count()
    return inner, border


def _chain_inner(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for level, sibling in enumerate(proof):
        seed = node_hash(seed, sibling) if not (index >> level) & 1 else node_hash(sibling, seed)
    return seed


def _chain_inner_right(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    """Only the steps where the node is a right child: the first tree's root."""
    for level, sibling in enumerate(proof):
        if (index >> level) & 1:
            seed = node_hash(sibling, seed)
    return seed


def _chain_border(seed: bytes, proof: Sequence[bytes]) -> bytes:
    for sibling in proof:
        seed = node_hash(sibling, seed)
    return seed

"""Merkle hashes of a stored log: the tree at any size, and proofs, from a few stored hashes.

The log stores every entry, and the root of every perfect subtree of 2^8 = 256 leaves or
more (``(level, index, hash)``: node ``index`` of level ``level`` covers leaves
``[index·2^level, (index+1)·2^level)``), about one node per 128 entries. Any range the RFC 9162
algorithms ask for (:func:`~tether.audit.merkle.inclusion_path`,
:func:`~tether.audit.merkle.consistency_path`, the peaks of a tree) is then a few stored
nodes plus the leaves of at most two partial tiles of 256 entries: a proof for one record of
a log of a million reads about 20 nodes and 512 entries, never the whole log.

Each function runs its algorithm twice: first over placeholders, to learn which nodes and
leaves it needs, then over the hashes read in one round. The algorithms only combine hashes,
never branch on them, so the second run asks for exactly what the first learned.

Example::

    >>> import asyncio
    >>> from tether.audit.merkle import root_hash, leaf_hash
    >>> class Entries:  # a store of 200 entries: fewer than a tile, so no stored nodes
    ...     async def audit_entries(self, log, *, start, stop):
    ...         from tether.audit.stored import StoredEntry
    ...         return [StoredEntry(index=i, entry=b"%d" % i, chain=b"")
    ...                 for i in range(start, stop)]
    ...     async def audit_tree_nodes(self, log, keys):
    ...         return {}
    >>> tree = asyncio.run(tree_at(Entries(), "log", 200))
    >>> tree.root() == root_hash([leaf_hash(b"%d" % i) for i in range(200)])
    True
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Protocol, TypeVar

from tether.audit.merkle import (
    CompactTree,
    RangeHash,
    consistency_path,
    inclusion_path,
    leaf_hash,
    node_hash,
    peak_ranges,
)

if TYPE_CHECKING:
    from tether.audit.stored import StoredEntry

__all__ = [
    "TILE_LEVEL",
    "MissingHash",
    "TreeNode",
    "TreeReader",
    "consistency_proof_at",
    "inclusion_proof_at",
    "tree_at",
]

#: Subtrees of 2^TILE_LEVEL leaves and up are stored.
TILE_LEVEL = 8
#: ``(level, index, hash)``.
TreeNode = tuple[int, int, bytes]
_T = TypeVar("_T")
_K = TypeVar("_K")
_PLACEHOLDER = bytes(32)


class TreeReader(Protocol):
    async def audit_entries(self, log: str, *, start: int, stop: int) -> list[StoredEntry]: ...

    async def audit_tree_nodes(
        self, log: str, keys: Collection[tuple[int, int]]
    ) -> dict[tuple[int, int], bytes]: ...


class MissingHash(LookupError):
    """A node or leaf the log should hold is not stored (a damaged or truncated log)."""


def _range_hash(nodes: dict[tuple[int, int], bytes], leaves: dict[int, bytes]) -> RangeHash:
    def subtree(a: int, b: int) -> bytes:
        n = b - a
        if n == 1:
            return leaves[a]
        if n & (n - 1) == 0 and a % n == 0 and n >= 1 << TILE_LEVEL:
            return nodes[(n.bit_length() - 1, a // n)]
        k = 1 << ((n - 1).bit_length() - 1)
        return node_hash(subtree(a, a + k), subtree(a + k, b))

    return subtree


class _Wanted(dict[_K, bytes]):
    """A placeholder dict that notes every key asked for."""

    def __missing__(self, key: _K) -> bytes:
        self[key] = _PLACEHOLDER
        return _PLACEHOLDER


async def _run(reader: TreeReader, log: str, plan: Callable[[RangeHash], _T]) -> _T:
    nodes_wanted: _Wanted[tuple[int, int]] = _Wanted()
    leaves_wanted: _Wanted[int] = _Wanted()
    plan(_range_hash(nodes_wanted, leaves_wanted))
    nodes = await reader.audit_tree_nodes(log, list(nodes_wanted)) if nodes_wanted else {}
    if len(nodes) != len(nodes_wanted):
        missing = sorted(set(nodes_wanted) - set(nodes))
        raise MissingHash(f"stored subtree hashes are missing: {missing[:3]}")
    leaves: dict[int, bytes] = {}
    for start, stop in _runs(sorted(leaves_wanted)):
        for stored in await reader.audit_entries(log, start=start, stop=stop):
            leaves[stored.index] = leaf_hash(stored.entry)
    if len(leaves) != len(leaves_wanted):
        raise MissingHash("entries are missing from the log")
    return plan(_range_hash(nodes, leaves))


def _runs(indexes: list[int]) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` runs covering ``indexes`` (sorted)."""
    runs: list[tuple[int, int]] = []
    for i in indexes:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


async def tree_at(reader: TreeReader, log: str, size: int) -> CompactTree:
    """The log's tree of its first ``size`` entries (its peaks), read from the store."""
    ranges = peak_ranges(size)
    peaks = await _run(reader, log, lambda subtree: [subtree(a, b) for a, b in ranges])
    return CompactTree.from_peaks(size, peaks)


async def inclusion_proof_at(reader: TreeReader, log: str, index: int, size: int) -> list[bytes]:
    return await _run(reader, log, lambda subtree: inclusion_path(subtree, index, size))


async def consistency_proof_at(reader: TreeReader, log: str, size1: int, size2: int) -> list[bytes]:
    return await _run(reader, log, lambda subtree: consistency_path(subtree, size1, size2))

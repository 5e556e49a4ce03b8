"""Values the hot path keeps: a dict with a size bound that starts over when full.

Every hot-path cache here (verified tokens, per-agent policy slices, parsed entity graphs, an
agent's policy entity) holds far fewer entries than its bound in normal use; the bound only
stops a caller from growing it without end. Starting over is simpler than LRU and costs one
refill. :class:`KeptFor` keeps a value computed from an immutable *object*, and reuses it only
while it is asked about that very object (the kept object stays referenced, so its identity
cannot be reused by another).

Example::

    >>> kept: Kept[str, int] = Kept(limit=2)
    >>> kept.put("a", 1), kept.put("b", 2), kept.get("a")
    (1, 2, 1)
    >>> kept.put("c", 3), kept.get("a"), len(kept)   # full: it started over
    (3, None, 1)
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["Kept", "KeptFor"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
S = TypeVar("S")


class Kept(Generic[K, V]):
    def __init__(self, *, limit: int) -> None:
        self._limit = limit
        self._values: dict[K, V] = {}

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: K) -> V | None:
        return self._values.get(key)

    def put(self, key: K, value: V) -> V:
        if len(self._values) >= self._limit and key not in self._values:
            self._values.clear()
        self._values[key] = value
        return value

    def clear(self) -> None:
        self._values.clear()


class KeptFor(Generic[K, S, V]):
    """Values derived from source objects, one per key, reused only for the same object."""

    def __init__(self, *, limit: int) -> None:
        self._kept: Kept[K, tuple[S, V]] = Kept(limit=limit)

    def derived(self, key: K, source: S, derive: Callable[[S], V]) -> V:
        found = self._kept.get(key)
        if found is not None and found[0] is source:
            return found[1]
        return self._kept.put(key, (source, derive(source)))[1]

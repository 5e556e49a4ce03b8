"""A read-through cache for hot-path state: what a decision needs, from memory, never more than
``ttl`` seconds old, and forgotten at once when this replica changes it.

Every decision needs the current state of the calling agent, and of the user and grant a
delegated token names (a quarantined agent, a disabled user or a revoked grant must be refused
at once); reading them from the database costs a round trip per decision. The cache keeps each
value it was asked for, with the time it was read. The service that changes a value calls
:meth:`ReadThrough.invalidate` the moment it does, so the change takes effect on the next
decision; a change made on another replica is seen when its change note arrives (PostgreSQL,
:mod:`tether.store.sql.changes`), and in any case within ``ttl``.

Example::

    grants = ReadThrough(store.get_grant, ttl=1.0)
    grant = await grants.get("grt_…")      # a read, then memory for the next second
    grants.invalidate("grt_…")             # the grants service does this on every change
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["ReadThrough"]

K = TypeVar("K")
V = TypeVar("V")


class ReadThrough(Generic[K, V]):
    def __init__(
        self,
        load: Callable[[K], Awaitable[V | None]],
        *,
        ttl: float = 1.0,
        max_entries: int = 100_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._ttl = ttl
        self._max = max_entries
        self._monotonic = monotonic
        self._entries: dict[K, tuple[V | None, float]] = {}
        #: Bumped by every invalidation: a read that started before one is not kept.
        self._generation = 0

    async def get(self, key: K) -> V | None:
        now = self._monotonic()
        entry = self._entries.get(key)
        if entry is not None and now - entry[1] < self._ttl:
            return entry[0]
        generation = self._generation
        value = await self._load(key)
        if generation == self._generation:
            if len(self._entries) >= self._max:
                self._entries.clear()
            self._entries[key] = (value, now)
        return value

    def invalidate(self, key: K) -> None:
        self._generation += 1
        self._entries.pop(key, None)

    def invalidate_all(self) -> None:
        """Forget everything (changes may have been missed: read afresh)."""
        self._generation += 1
        self._entries.clear()

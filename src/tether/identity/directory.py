"""Agents as the hot path reads them: from memory, never more than a second old.

Every decision needs the calling agent's current state (a quarantined agent must be refused at
once), and reading it from the database costs a round trip per decision. The directory keeps
each agent it was asked for, with the time it was read. On this replica the registry drops an
agent from the directory the moment it changes it, so a suspension or quarantine takes effect
on the next decision; a change made on another replica is seen at once when its change note
arrives (PostgreSQL, :mod:`tether.store.sql.changes`), and in any case within ``ttl``
(``agent_cache_seconds``, 1 s).

Example::

    directory = AgentDirectory(store)
    agent = await directory.get("faq-bot")      # a read, then memory for the next second
    directory.invalidate("faq-bot")             # the registry does this on every change
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tether.identity.models import Agent
from tether.store.interfaces import AgentStore

__all__ = ["AgentDirectory"]


class AgentDirectory:
    def __init__(
        self,
        store: AgentStore,
        *,
        ttl: float = 1.0,
        max_entries: int = 100_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._ttl = ttl
        self._max = max_entries
        self._monotonic = monotonic
        self._entries: dict[str, tuple[Agent | None, float]] = {}
        #: Bumped by every invalidation: a read that started before one is not kept.
        self._generation = 0

    async def get(self, name: str) -> Agent | None:
        now = self._monotonic()
        entry = self._entries.get(name)
        if entry is not None and now - entry[1] < self._ttl:
            return entry[0]
        generation = self._generation
        agent = await self._store.get_agent(name)
        if generation == self._generation:
            if len(self._entries) >= self._max:
                self._entries.clear()
            self._entries[name] = (agent, now)
        return agent

    def invalidate(self, name: str) -> None:
        self._generation += 1
        self._entries.pop(name, None)

    def invalidate_all(self) -> None:
        """Forget every agent (changes may have been missed: read them afresh)."""
        self._generation += 1
        self._entries.clear()

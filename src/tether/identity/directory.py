"""Agents as the hot path reads them: from memory, never more than a second old
(:class:`~tether._internal.readthrough.ReadThrough` over the agent store; the registry
invalidates an agent the moment it changes it, ``ttl`` is ``agent_cache_seconds``).

Example::

    directory = AgentDirectory(store)
    agent = await directory.get("faq-bot")      # a read, then memory for the next second
    directory.invalidate("faq-bot")             # the registry does this on every change
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tether._internal.readthrough import ReadThrough
from tether.identity.models import Agent
from tether.store.interfaces import AgentStore

__all__ = ["AgentDirectory"]


class AgentDirectory(ReadThrough[str, Agent]):
    def __init__(
        self,
        store: AgentStore,
        *,
        ttl: float = 1.0,
        max_entries: int = 100_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(store.get_agent, ttl=ttl, max_entries=max_entries, monotonic=monotonic)

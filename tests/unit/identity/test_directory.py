"""The agent directory: memory for the hot path, never staler than its TTL, and told of changes."""

from __future__ import annotations

import asyncio

from tests.support.audit import open_log
from tether._internal.clock import FixedClock
from tether.identity.access import Actor
from tether.identity.directory import AgentDirectory
from tether.identity.models import Agent, AgentState
from tether.identity.registry import Registry
from tether.store.memory import MemoryStore

from .test_registry import register


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_change_on_this_replica_is_seen_at_once(
    store: MemoryStore, registry: Registry
) -> None:
    directory = AgentDirectory(store, ttl=3600)
    local = Registry(
        store=store,
        audit=registry._audit,
        clock=registry._clock,
        trust_domain="acme.org",
        directory=directory,
    )
    root = Actor.system("test")
    await register(local, root)
    assert (await directory.get("faq-bot")).state is AgentState.ACTIVE  # type: ignore[union-attr]
    await local.set_state("faq-bot", AgentState.QUARANTINED, actor=root)
    cached = await directory.get("faq-bot")
    assert cached is not None
    assert cached.state is AgentState.QUARANTINED


async def test_a_change_on_another_replica_is_seen_within_the_ttl(
    store: MemoryStore, registry: Registry
) -> None:
    ticks = Ticks()
    directory = AgentDirectory(store, ttl=1.0, monotonic=ticks)
    root = Actor.system("test")
    await register(registry, root)  # "another replica": a registry that does not tell it
    assert await directory.get("faq-bot") is not None
    await registry.set_state("faq-bot", AgentState.SUSPENDED, actor=root)
    ticks.now = 0.5
    stale = await directory.get("faq-bot")
    assert stale is not None
    assert stale.state is AgentState.ACTIVE, "within the TTL the memory answers"
    ticks.now = 1.0
    fresh = await directory.get("faq-bot")
    assert fresh is not None
    assert fresh.state is AgentState.SUSPENDED


async def test_unknown_agents_are_remembered_briefly_and_new_ones_appear(
    store: MemoryStore, registry: Registry
) -> None:
    ticks = Ticks()
    directory = AgentDirectory(store, ttl=1.0, monotonic=ticks)
    assert await directory.get("faq-bot") is None
    await register(registry, Actor.system("test"))
    ticks.now = 1.0
    assert await directory.get("faq-bot") is not None


class SlowStore(MemoryStore):
    """A store whose reads wait until released: a read in flight while the registry changes."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.hold = False

    async def get_agent(self, name: str) -> Agent | None:
        agent = await super().get_agent(name)
        if self.hold:
            await self.release.wait()
        return agent


async def test_a_read_that_raced_a_change_is_not_kept() -> None:
    store = SlowStore()
    directory = AgentDirectory(store, ttl=3600)
    registry = Registry(
        store=store,
        audit=await open_log(store),
        clock=FixedClock(),
        trust_domain="acme.org",
        directory=directory,
    )
    root = Actor.system("test")
    await register(registry, root)
    store.hold = True
    reading = asyncio.create_task(directory.get("faq-bot"))  # reads "active", then waits
    await asyncio.sleep(0)
    store.hold = False
    await registry.set_state("faq-bot", AgentState.SUSPENDED, actor=root)
    store.release.set()
    stale = await reading
    assert stale is not None
    assert stale.state is AgentState.ACTIVE, "the racing read itself saw the old state"
    current = await directory.get("faq-bot")
    assert current is not None
    assert current.state is AgentState.SUSPENDED, "but it was not kept"

"""Policy sets over time: a refused set changes nothing, versions roll back, replicas follow."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.audit import open_log
from tether._internal.clock import FixedClock
from tether.errors import Forbidden, InvalidPolicySet, PolicySetNotFound, VersionConflict
from tether.identity.access import Actor
from tether.identity.models import Role
from tether.policy._cedar import CedarEngine, CedarPolicies
from tether.policy.models import DecisionRequest, Effect, Entity, EntityRef, PolicySetVersion
from tether.policy.service import PolicySets
from tether.store.memory import MemoryStore

V1 = """
@id("faq-bot-searches")
permit (principal == Tether::Agent::"faq-bot", action == Tether::Action::"call_tool", resource);
"""
V2 = (
    V1
    + """
@id("faq-bot-reads-faq-table")
permit (principal == Tether::Agent::"faq-bot", action == Tether::Action::"query", resource);
"""
)
BROKEN = '@id("oops") permit (principal, action == Tether::Action::"fly", resource);'

SECURITY = Actor.operator(token_id="opt_sam", name="sam", role=Role.SECURITY_ADMIN)
PLATFORM = Actor.operator(token_id="opt_pat", name="pat", role=Role.PLATFORM_ADMIN)


@pytest.fixture(scope="module")
def engine() -> CedarEngine:
    return CedarEngine()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
async def sets(store: MemoryStore, engine: CedarEngine) -> PolicySets:
    return await PolicySets.open(
        store=store, engine=engine, audit=await open_log(store), clock=FixedClock()
    )


async def test_before_any_apply_only_the_defaults_are_in_force(sets: PolicySets) -> None:
    assert sets.current.version is None
    assert all(i.startswith("tether.") for i in sets.current.policy_ids)


async def test_apply_stores_a_version_and_puts_it_in_force(
    sets: PolicySets, store: MemoryStore
) -> None:
    stored = await sets.apply(V1, actor=SECURITY, comment="first")
    assert (stored.version, sets.current.version) == (1, 1)
    assert "faq-bot-searches" in sets.current.policy_ids
    records = await store.list_audit(limit=10, type_prefix="policy.")
    assert [r.type for _, r in records] == ["policy.applied"]


async def test_invalid_set_is_refused_and_the_active_one_stays(
    sets: PolicySets, store: MemoryStore
) -> None:
    await sets.apply(V1, actor=SECURITY)
    with pytest.raises(InvalidPolicySet):
        await sets.apply(BROKEN, actor=SECURITY)
    assert sets.current.version == 1
    assert [v.version for v in await store.list_policy_sets()] == [1], "nothing stored"
    assert sets.check(BROKEN, actor=SECURITY), "check names the errors"


async def test_only_security_applies_policies(sets: PolicySets) -> None:
    with pytest.raises(Forbidden):
        await sets.apply(V1, actor=PLATFORM)
    assert await sets.list(actor=PLATFORM) == [], "but anyone may read them"


async def test_rollback_puts_an_earlier_version_back(sets: PolicySets) -> None:
    await sets.apply(V1, actor=SECURITY)
    await sets.apply(V2, actor=SECURITY)
    assert "faq-bot-reads-faq-table" in sets.current.policy_ids
    await sets.rollback(1, actor=SECURITY)
    assert sets.current.version == 1
    assert "faq-bot-reads-faq-table" not in sets.current.policy_ids
    active = await sets.show(None, actor=PLATFORM)
    assert active is not None
    assert active.version == 1
    with pytest.raises(PolicySetNotFound):
        await sets.rollback(9, actor=SECURITY)


async def test_diff_shows_what_a_version_changed(sets: PolicySets) -> None:
    await sets.apply(V1, actor=SECURITY)
    await sets.apply(V2, actor=SECURITY)
    diff = await sets.diff(1, 2, actor=PLATFORM)
    assert '+@id("faq-bot-reads-faq-table")' in diff
    assert diff.startswith("--- v1\n+++ v2\n")


async def test_a_replica_follows_the_version_another_applied(
    sets: PolicySets, store: MemoryStore, engine: CedarEngine
) -> None:
    replica = await PolicySets.open(
        store=store, engine=engine, audit=await open_log(store), clock=FixedClock()
    )
    await sets.apply(V1, actor=SECURITY)
    before = replica.current
    assert await replica.refresh() is True
    assert (before.version, replica.current.version) == (None, 1)
    assert await replica.refresh() is False


class RefusingEngine(CedarEngine):
    """A replica's engine that cannot compile version 2 (as a newer schema might refuse a set
    stored under an older one); it counts what it was asked to compile."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[int | None] = []

    def compile(self, text: str, *, version: int | None) -> CedarPolicies:
        self.asked.append(version)
        if version == 2:
            raise InvalidPolicySet("this replica's schema refuses version 2")
        return super().compile(text, version=version)


async def test_a_stored_set_a_replica_cannot_compile_is_tried_once_and_the_last_stays(
    sets: PolicySets, store: MemoryStore
) -> None:
    engine = RefusingEngine()
    replica = await PolicySets.open(
        store=store, engine=engine, audit=await open_log(store), clock=FixedClock()
    )
    await sets.apply(V1, actor=SECURITY)
    assert await replica.refresh() is True
    await sets.apply(V2, actor=SECURITY)
    with pytest.raises(InvalidPolicySet):
        await replica.refresh()
    assert replica.current.version == 1  # never half a set: compiled is the last good one,
    assert replica.refused_version == 2  # and the checkpoint denies while v2 is active
    assert await replica.refresh() is False  # not read and compiled again every second
    assert engine.asked == [None, 1, 2]  # the defaults at open, then each version once
    await sets.rollback(1, actor=SECURITY)
    assert await replica.refresh() is False
    assert replica.refused_version is None  # the set in force is the active one again


async def test_concurrent_apply_on_a_stale_replica_is_a_conflict(
    sets: PolicySets, store: MemoryStore, engine: CedarEngine
) -> None:
    await sets.apply(V1, actor=SECURITY)
    other_replica = await open_log(store, origin="tether.test/audit/r2")
    stale = await PolicySets.open(
        store=store, engine=engine, audit=other_replica, clock=FixedClock()
    )
    await sets.apply(V2, actor=SECURITY)
    # The stale replica read v1 as active at open; applying now still checks the store.
    stored = await stale.apply(V1, actor=SECURITY)
    assert stored.version == 3
    with pytest.raises(VersionConflict):
        await store.activate_policy_set(1, expected_active=2, at=FixedClock().now())


PERMIT_QUERY = """
@id("faq-bot-queries")
permit (principal == Tether::Agent::"faq-bot", action == Tether::Action::"query", resource);
"""
FORBID_QUERY = (
    PERMIT_QUERY
    + """
@id("no-queries-today")
forbid (principal, action == Tether::Action::"query", resource);
"""
)


async def test_reloads_under_load_never_decide_on_half_a_set(
    sets: PolicySets, engine: CedarEngine
) -> None:
    principal = Entity(
        ref=EntityRef("Agent", "faq-bot"),
        attrs={
            "name": "faq-bot",
            "state": "active",
            "risk_tier": "low",
            "risk_score": 0,
            "owners": set(),
            "tools": set(),
            "resources": set(),
            "data_classes": set(),
            "external_connections": "none",
            "autonomy": "supervised",
            "may_call_agents": False,
        },
    )
    table = Entity(ref=EntityRef("Database", "faq"), attrs={"name": "faq", "data_class": "public"})
    context = {"now": 0, "instance": "i", "scopes": set(), "act_chain": set(), "act_depth": 0}
    request = DecisionRequest(principal=principal, action="query", resource=table, context=context)
    expected: dict[int, Effect] = {}
    seen: list[tuple[int | None, Effect]] = []

    async def applier() -> None:
        for i in range(10):
            text = PERMIT_QUERY if i % 2 == 0 else FORBID_QUERY
            stored = await sets.apply(text, actor=SECURITY)
            expected[stored.version] = Effect.ALLOW if i % 2 == 0 else Effect.DENY
            await asyncio.sleep(0)

    async def decider() -> None:
        for _ in range(200):
            decision = engine.decide(sets.current, request)
            seen.append((decision.policy_version, decision.effect))
            await asyncio.sleep(0)

    await asyncio.gather(applier(), decider(), decider())
    assert len(seen) == 400
    for version, effect in seen:
        assert effect is (Effect.DENY if version is None else expected[version]), version


class GatedStore(MemoryStore):
    """Reads of the active version can be held, to race a refresh against an apply."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: asyncio.Event | None = None

    async def active_policy_set(self) -> PolicySetVersion | None:
        found = await super().active_policy_set()
        if self.gate is not None:
            gate, self.gate = self.gate, None
            await gate.wait()
        return found


async def test_a_refresh_racing_an_apply_never_puts_the_older_set_back(
    engine: CedarEngine,
) -> None:
    store = GatedStore()
    sets = await PolicySets.open(
        store=store, engine=engine, audit=await open_log(store), clock=FixedClock()
    )
    await sets.apply(V1, actor=SECURITY)
    gate = asyncio.Event()
    store.gate = gate
    refreshing = asyncio.create_task(sets.refresh())  # reads v1 as active, then waits
    await asyncio.sleep(0)
    applying = asyncio.create_task(sets.apply(V2, actor=SECURITY))
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(refreshing, applying)
    assert sets.current.version == 2

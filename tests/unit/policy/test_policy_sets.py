"""Policy sets over time: a refused set changes nothing, versions roll back, replicas follow."""

from __future__ import annotations

import pytest

from tether._internal.clock import FixedClock
from tether.audit.sink import StoreAuditSink
from tether.errors import Forbidden, InvalidPolicySet, PolicySetNotFound, VersionConflict
from tether.identity.access import Actor
from tether.identity.models import Role
from tether.policy._cedar import CedarEngine
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
        store=store, engine=engine, audit=StoreAuditSink(store), clock=FixedClock()
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
        store=store, engine=engine, audit=StoreAuditSink(store), clock=FixedClock()
    )
    await sets.apply(V1, actor=SECURITY)
    before = replica.current
    assert await replica.refresh() is True
    assert (before.version, replica.current.version) == (None, 1)
    assert await replica.refresh() is False


async def test_concurrent_apply_on_a_stale_replica_is_a_conflict(
    sets: PolicySets, store: MemoryStore, engine: CedarEngine
) -> None:
    await sets.apply(V1, actor=SECURITY)
    stale = await PolicySets.open(
        store=store, engine=engine, audit=StoreAuditSink(store), clock=FixedClock()
    )
    await sets.apply(V2, actor=SECURITY)
    # The stale replica read v1 as active at open; applying now still checks the store.
    stored = await stale.apply(V1, actor=SECURITY)
    assert stored.version == 3
    with pytest.raises(VersionConflict):
        await store.activate_policy_set(1, expected_active=2, at=FixedClock().now())

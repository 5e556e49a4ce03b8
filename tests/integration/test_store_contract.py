"""The ``Store`` contract, run against every implementation: memory, SQLite and PostgreSQL.

Each test names the rule it pins. The ``store`` fixture (``tests/conftest.py``) runs it once per
implementation, so the reference store and the SQL stores cannot drift apart.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tether._internal.clock import FixedClock
from tether.errors import (
    AgentExists,
    AgentNotFound,
    KeyExists,
    KeyNotFound,
    ReplayDetected,
    VersionConflict,
)
from tether.identity.models import (
    Agent,
    AgentKey,
    AgentState,
    Autonomy,
    Connectivity,
    DataClass,
    Declarations,
    Instance,
    RiskAssessment,
    RiskFactor,
    RiskTier,
)
from tether.store.interfaces import Store

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- factories -------------------------------------------------------------------------------


def make_agent(name: str = "faq-bot", *, state: AgentState = AgentState.ACTIVE) -> Agent:
    return Agent(
        id=f"agt_{name}",
        name=name,
        spiffe_id=f"spiffe://acme.org/agent/{name}",
        owners=("alice", "bob"),
        description=f"the {name} agent",
        declarations=Declarations(
            tools=("search", "fetch"),
            resources=("db://faq",),
            data_classes=(DataClass.INTERNAL, DataClass.CONFIDENTIAL),
            external_connections=Connectivity.INTERNET,
            autonomy=Autonomy.AUTONOMOUS,
            may_call_agents=True,
        ),
        state=state,
        state_reason=None if state is AgentState.ACTIVE else "because",
        risk_score=42,
        risk_tier=RiskTier.MEDIUM,
        created_at=T0,
        updated_at=T0,
        created_by="sam",
    )


def make_assessment(agent: Agent, n: int = 1, *, assessed_at: datetime = T0) -> RiskAssessment:
    return RiskAssessment(
        id=f"ras_{agent.name}_{n}",
        agent_id=agent.id,
        score=10 * n,
        tier=RiskTier.LOW,
        factors=(RiskFactor(code="internet", points=10, detail="talks to the internet"),),
        model="tether-risk-v1",
        assessed_at=assessed_at,
        assessed_by="sam",
        declarations=agent.declarations,
    )


def make_key(agent: Agent, kid: str = "kid-1", *, created_at: datetime = T0) -> AgentKey:
    jwk = {"kty": "EC", "crv": "P-256", "x": f"x-{kid}", "y": f"y-{kid}"}
    return AgentKey(
        agent_id=agent.id, kid=kid, jwk=jwk, alg="ES256", created_at=created_at, created_by="sam"
    )


async def register(store: Store, name: str = "faq-bot", **kw: AgentState) -> Agent:
    agent = make_agent(name, **kw)
    await store.create_agent(agent, make_assessment(agent))
    return agent


# -- agents ----------------------------------------------------------------------------------


async def test_created_agent_reads_back_by_name_and_by_id(store: Store) -> None:
    agent = await register(store)
    assert await store.get_agent("faq-bot") == agent
    assert await store.get_agent_by_id(agent.id) == agent


async def test_unknown_agent_reads_as_none(store: Store) -> None:
    assert await store.get_agent("nobody") is None
    assert await store.get_agent_by_id("agt_nobody") is None


async def test_duplicate_agent_name_is_agent_exists(store: Store) -> None:
    first = await register(store)
    twin = replace(make_agent(), id="agt_other")
    with pytest.raises(AgentExists, match="faq-bot"):
        await store.create_agent(twin, make_assessment(twin, 2))
    assert await store.get_agent("faq-bot") == first
    assert await store.get_agent_by_id("agt_other") is None


async def test_list_agents_is_ordered_by_name_bytewise_and_paged_with_after(
    store: Store,
) -> None:
    for name in ("zeta", "ab", "a-c", "a9", "mid"):
        await register(store, name)
    page1 = await store.list_agents(limit=2)
    page2 = await store.list_agents(limit=2, after=page1[-1].name)
    page3 = await store.list_agents(limit=2, after=page2[-1].name)
    assert [a.name for a in page1 + page2 + page3] == ["a-c", "a9", "ab", "mid", "zeta"]
    assert await store.list_agents(after="zeta") == []


async def test_list_agents_filters_by_state(store: Store) -> None:
    await register(store, "one")
    await register(store, "two", state=AgentState.SUSPENDED)
    await register(store, "three", state=AgentState.SUSPENDED)
    suspended = await store.list_agents(state=AgentState.SUSPENDED)
    assert [a.name for a in suspended] == ["three", "two"]
    assert [a.name for a in await store.list_agents(state=AgentState.RETIRED)] == []


async def test_update_with_expected_version_replaces_agent_and_stores_assessment(
    store: Store,
) -> None:
    agent = await register(store)
    updated = replace(agent, state=AgentState.SUSPENDED, updated_at=at(60), version=2)
    assessment = make_assessment(agent, 2, assessed_at=at(60))
    await store.update_agent(updated, expected_version=1, assessment=assessment)
    assert await store.get_agent("faq-bot") == updated
    assert (await store.list_assessments(agent.id))[-1] == assessment


async def test_update_with_stale_version_is_version_conflict(store: Store) -> None:
    agent = await register(store)
    await store.update_agent(replace(agent, version=2), expected_version=1)
    stale = replace(agent, description="stale", version=2)
    with pytest.raises(VersionConflict):
        await store.update_agent(
            stale, expected_version=1, assessment=make_assessment(agent, 2, assessed_at=at(1))
        )
    assert (await store.get_agent("faq-bot")) == replace(agent, version=2)
    assert len(await store.list_assessments(agent.id)) == 1


async def test_concurrent_updates_of_one_version_let_exactly_one_win(store: Store) -> None:
    agent = await register(store)

    async def attempt(n: int) -> int | None:
        update = replace(agent, description=f"writer {n}", version=2)
        assessment = make_assessment(agent, n + 2, assessed_at=at(n))
        try:
            await store.update_agent(update, expected_version=1, assessment=assessment)
        except VersionConflict:
            return None
        return n

    winners = [n for n in await asyncio.gather(*(attempt(n) for n in range(8))) if n is not None]
    assert len(winners) == 1
    assert await store.get_agent(agent.name) == replace(
        agent, description=f"writer {winners[0]}", version=2
    )
    assert len(await store.list_assessments(agent.id)) == 2


async def test_update_of_unknown_agent_is_version_conflict(store: Store) -> None:
    with pytest.raises(VersionConflict):
        await store.update_agent(make_agent("ghost"), expected_version=1)


async def test_renaming_to_a_taken_name_is_agent_exists(store: Store) -> None:
    await register(store, "one")
    two = await register(store, "two")
    with pytest.raises(AgentExists):
        await store.update_agent(replace(two, name="one", version=2), expected_version=1)
    assert await store.get_agent("two") == two


async def test_renamed_agent_frees_its_old_name(store: Store) -> None:
    agent = await register(store, "old-name")
    await store.update_agent(replace(agent, name="new-name", version=2), expected_version=1)
    assert await store.get_agent("old-name") is None
    newcomer = replace(make_agent("old-name"), id="agt_newcomer")
    await store.create_agent(newcomer, make_assessment(newcomer, 2))
    assert await store.get_agent("old-name") == newcomer


async def test_assessments_are_listed_oldest_first(store: Store) -> None:
    agent = await register(store)
    later = make_assessment(agent, 3, assessed_at=at(120))
    earlier = make_assessment(agent, 2, assessed_at=at(60))
    version = 1
    for assessment in (later, earlier):
        new = replace(agent, version=version + 1)
        await store.update_agent(new, expected_version=version, assessment=assessment)
        version += 1
    history = await store.list_assessments(agent.id)
    assert [a.id for a in history] == ["ras_faq-bot_1", "ras_faq-bot_2", "ras_faq-bot_3"]
    assert history[0] == make_assessment(agent)
    assert await store.list_assessments("agt_nobody") == []


# -- atomicity -------------------------------------------------------------------------------


async def test_failed_create_agent_writes_neither_agent_nor_assessment(store: Store) -> None:
    agent = make_agent()
    orphan = replace(make_assessment(agent), agent_id="agt_ghost")  # the insert that fails
    with pytest.raises(AgentNotFound):
        await store.create_agent(agent, orphan)
    assert await store.get_agent(agent.name) is None
    assert await store.get_agent_by_id(agent.id) is None
    assert await store.list_assessments("agt_ghost") == []
    await store.create_agent(agent, make_assessment(agent))  # the name was never taken


async def test_failed_update_agent_leaves_agent_and_history_as_they_were(store: Store) -> None:
    agent = await register(store)
    update = replace(agent, description="changed", version=2)
    orphan = replace(make_assessment(agent, 2), agent_id="agt_ghost")
    with pytest.raises(AgentNotFound):
        await store.update_agent(update, expected_version=1, assessment=orphan)
    assert await store.get_agent(agent.name) == agent
    assert await store.list_assessments(agent.id) == [make_assessment(agent)]


async def test_naive_datetime_is_value_error_and_writes_nothing(store: Store) -> None:
    agent = make_agent()
    naive = make_assessment(agent, assessed_at=T0.replace(tzinfo=None))
    with pytest.raises(ValueError, match="naive datetime"):
        await store.create_agent(agent, naive)
    assert await store.get_agent(agent.name) is None
    await store.create_agent(agent, make_assessment(agent))
    with pytest.raises(ValueError, match="naive datetime"):
        await store.add_key(make_key(agent, created_at=T0.replace(tzinfo=None)))
    assert await store.list_keys(agent.id, include_removed=True) == []


# -- keys ------------------------------------------------------------------------------------


async def test_added_keys_are_listed_oldest_first(store: Store) -> None:
    agent = await register(store)
    second = make_key(agent, "kid-b", created_at=at(10))
    first = make_key(agent, "kid-a", created_at=at(5))
    await store.add_key(second)
    await store.add_key(first)
    assert await store.list_keys(agent.id) == [first, second]


async def test_duplicate_kid_is_key_exists_even_after_removal(store: Store) -> None:
    agent = await register(store)
    await store.add_key(make_key(agent))
    with pytest.raises(KeyExists, match="kid-1"):
        await store.add_key(make_key(agent, created_at=at(1)))
    await store.remove_key(agent.id, "kid-1", at=at(2))
    with pytest.raises(KeyExists):
        await store.add_key(make_key(agent, created_at=at(3)))


async def test_same_kid_on_two_agents_is_allowed(store: Store) -> None:
    one, two = await register(store, "one"), await register(store, "two")
    await store.add_key(make_key(one))
    await store.add_key(make_key(two))
    assert [k.agent_id for k in await store.list_keys(two.id)] == [two.id]


async def test_key_of_unknown_agent_is_agent_not_found(store: Store) -> None:
    with pytest.raises(AgentNotFound):
        await store.add_key(make_key(make_agent("ghost")))


async def test_removed_key_is_listed_only_with_include_removed(store: Store) -> None:
    agent = await register(store)
    kept, dropped = make_key(agent, "kid-a"), make_key(agent, "kid-b", created_at=at(1))
    await store.add_key(kept)
    await store.add_key(dropped)
    removed = await store.remove_key(agent.id, "kid-b", at=at(30))
    assert removed == replace(dropped, removed_at=at(30))
    assert not removed.active
    assert await store.list_keys(agent.id) == [kept]
    assert await store.list_keys(agent.id, include_removed=True) == [kept, removed]


async def test_removing_unknown_or_removed_key_is_key_not_found(store: Store) -> None:
    agent = await register(store)
    with pytest.raises(KeyNotFound):
        await store.remove_key(agent.id, "kid-none", at=at(1))
    await store.add_key(make_key(agent))
    await store.remove_key(agent.id, "kid-1", at=at(2))
    with pytest.raises(KeyNotFound, match="kid-1"):
        await store.remove_key(agent.id, "kid-1", at=at(3))
    [key] = await store.list_keys(agent.id, include_removed=True)
    assert key.removed_at == at(2)


# -- instances -------------------------------------------------------------------------------


async def seen(
    store: Store,
    agent: Agent,
    instance_id: str,
    seconds: float,
    *,
    kid: str | None = None,
    method: str = "private_key_jwt",
) -> Instance:
    return await store.record_instance_seen(
        agent_id=agent.id,
        instance_id=instance_id,
        spiffe_id=f"{agent.spiffe_id}/i/{instance_id}",
        kid=kid,
        auth_method=method,
        at=at(seconds),
    )


async def test_instance_keeps_first_seen_and_updates_last_seen_and_kid(store: Store) -> None:
    agent = await register(store)
    first = await seen(store, agent, "pod-1", 1, kid="kid-1")
    assert (first.first_seen, first.last_seen, first.last_kid) == (at(1), at(1), "kid-1")
    assert first.spiffe_id == f"{agent.spiffe_id}/i/pod-1"
    again = await seen(store, agent, "pod-1", 9, method="tls_client_auth")
    assert (again.first_seen, again.last_seen) == (at(1), at(9))
    assert (again.last_kid, again.last_auth_method) == (None, "tls_client_auth")
    assert await store.list_instances(agent.id) == [again]


async def test_instances_are_listed_per_agent_first_seen_first(store: Store) -> None:
    one, two = await register(store, "one"), await register(store, "two")
    for agent, instance, seconds in ((one, "b", 1), (one, "a", 2), (two, "c", 3)):
        await seen(store, agent, instance, seconds)
    assert [i.instance_id for i in await store.list_instances(one.id)] == ["b", "a"]
    assert [i.instance_id for i in await store.list_instances(two.id)] == ["c"]


async def test_instance_of_unknown_agent_is_agent_not_found(store: Store) -> None:
    with pytest.raises(AgentNotFound):
        await seen(store, make_agent("ghost"), "pod-1", 1)


async def test_agent_with_keys_omits_removed_keys(store: Store) -> None:
    agent = await register(store)
    newer, dropped = make_key(agent, "kid-b", created_at=at(20)), make_key(agent, "kid-c")
    older = make_key(agent, "kid-a", created_at=at(10))
    for key in (newer, dropped, older):
        await store.add_key(key)
    await store.remove_key(agent.id, "kid-c", at=at(30))
    assert await store.get_agent_with_keys(agent.name) == (agent, [older, newer])


async def test_agent_without_keys_comes_with_an_empty_list(store: Store) -> None:
    agent = await register(store)
    await register(store, "other")
    await store.add_key(make_key(await register(store, "third")))
    assert await store.get_agent_with_keys(agent.name) == (agent, [])


async def test_unknown_agent_with_keys_is_none(store: Store) -> None:
    await register(store)
    assert await store.get_agent_with_keys("nobody") is None


# -- authentication --------------------------------------------------------------------------


async def authenticate(
    store: Store,
    agent: Agent,
    replay_key: str | None,
    seconds: float,
    *,
    instance_id: str = "pod-1",
    expires_in: float = 300,
) -> Instance:
    moment = at(seconds)
    return await store.record_authentication(
        replay_key=replay_key,
        replay_expires_at=None if replay_key is None else moment + timedelta(seconds=expires_in),
        agent_id=agent.id,
        instance_id=instance_id,
        spiffe_id=f"{agent.spiffe_id}/i/{instance_id}",
        kid="kid-1",
        auth_method="private_key_jwt",
        at=moment,
    )


async def test_authentication_without_replay_key_records_instance(store: Store) -> None:
    agent = await register(store)
    first = await authenticate(store, agent, None, 1)
    again = await authenticate(store, agent, None, 5)
    assert (first.first_seen, first.last_seen, first.last_kid) == (at(1), at(1), "kid-1")
    assert (again.first_seen, again.last_seen) == (at(1), at(5))
    assert await store.list_instances(agent.id) == [again]


async def test_authentication_consumes_its_replay_key(store: Store, clock: FixedClock) -> None:
    agent = await register(store)
    await authenticate(store, agent, "jti-1", 1)
    with pytest.raises(ReplayDetected):
        await store.consume_once("jti-1", expires_at=clock.now() + timedelta(minutes=5))


async def test_replayed_authentication_writes_nothing(store: Store, clock: FixedClock) -> None:
    agent = await register(store)
    await store.consume_once("jti-used", expires_at=clock.now() + timedelta(minutes=5))
    with pytest.raises(ReplayDetected):
        await authenticate(store, agent, "jti-used", 1)
    assert await store.list_instances(agent.id) == []
    first = await authenticate(store, agent, "jti-1", 2)
    with pytest.raises(ReplayDetected):
        await authenticate(store, agent, "jti-1", 9, instance_id="pod-2")
    assert await store.list_instances(agent.id) == [first]  # neither updated nor added


async def test_authentication_of_unknown_agent_consumes_no_replay_key(
    store: Store, clock: FixedClock
) -> None:
    with pytest.raises(AgentNotFound):
        await authenticate(store, make_agent("ghost"), "jti-1", 1)
    await store.consume_once("jti-1", expires_at=clock.now() + timedelta(minutes=5))


async def test_authentication_with_naive_datetime_is_value_error_and_writes_nothing(
    store: Store, clock: FixedClock
) -> None:
    agent = await register(store)
    with pytest.raises(ValueError, match="naive datetime"):
        await store.record_authentication(
            replay_key="jti-1",
            replay_expires_at=clock.now().replace(tzinfo=None),
            agent_id=agent.id,
            instance_id="pod-1",
            spiffe_id=agent.spiffe_id,
            kid=None,
            auth_method="tls_client_auth",
            at=at(1),
        )
    assert await store.list_instances(agent.id) == []
    await store.consume_once("jti-1", expires_at=clock.now() + timedelta(minutes=5))


async def test_authentication_race_lets_exactly_one_through(store: Store) -> None:
    agent = await register(store)

    async def attempt(n: int) -> Instance | None:
        try:
            return await authenticate(store, agent, "jti-race", n, instance_id=f"pod-{n}")
        except ReplayDetected:
            return None

    outcomes = await asyncio.gather(*(attempt(n) for n in range(20)))
    winners = [i for i in outcomes if i is not None]
    assert len(winners) == 1
    assert outcomes.count(None) == 19
    assert await store.list_instances(agent.id) == winners


async def test_authentication_with_expired_replay_key_goes_through(
    store: Store, clock: FixedClock
) -> None:
    agent = await register(store)
    await store.consume_once("jti-1", expires_at=clock.now() + timedelta(seconds=30))
    clock.advance(30)
    instance = await authenticate(store, agent, "jti-1", 1)
    assert await store.list_instances(agent.id) == [instance]


# -- time ------------------------------------------------------------------------------------


async def test_datetimes_come_back_aware_utc_and_equal(store: Store) -> None:
    paris = timezone(timedelta(hours=2))
    moment = datetime(2026, 6, 1, 14, 30, 15, 123456, tzinfo=paris)
    agent = replace(make_agent(), created_at=moment, updated_at=moment)
    await store.create_agent(agent, make_assessment(agent, assessed_at=moment))
    await store.add_key(make_key(agent, created_at=moment))
    got = await store.get_agent(agent.name)
    [key] = await store.list_keys(agent.id)
    [assessment] = await store.list_assessments(agent.id)
    assert got is not None
    for value in (got.created_at, key.created_at, assessment.assessed_at):
        assert value == moment
        assert value.utcoffset() == timedelta(0)

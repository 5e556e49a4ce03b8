"""The agent registry: registration, risk, review, lifecycle, keys, and the audit trail."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from tether._internal.clock import FixedClock
from tether.audit.records import AuditReceipt, AuditRecord, Outcome
from tether.errors import (
    AgentExists,
    AgentNotFound,
    Forbidden,
    InvalidDeclaration,
    InvalidKey,
    InvalidName,
    InvalidTransition,
    KeyExists,
    KeyNotFound,
    StoreUnavailable,
    VersionConflict,
)
from tether.identity.access import Actor
from tether.identity.models import (
    Agent,
    AgentState,
    Autonomy,
    Connectivity,
    DataClass,
    Declarations,
    RiskTier,
    Role,
)
from tether.identity.registry import MAX_KEYS_PER_AGENT, Registry
from tether.store.memory import MemoryStore

from .conftest import TRUST_DOMAIN, ec_public_jwk

ActorFactory = Callable[..., Actor]
CRITICAL = Declarations(
    tools=("transfer_funds",),
    data_classes=(DataClass.RESTRICTED,),
    external_connections=Connectivity.INTERNET,
    autonomy=Autonomy.AUTONOMOUS,
    may_call_agents=True,
)


async def register(registry: Registry, actor: Actor, name: Any = "faq-bot", **kw: Any) -> object:
    return await registry.register(
        actor=actor,
        name=name,
        owners=kw.pop("owners", ("alice",)),
        description=str(kw.pop("description", "answers FAQs")),
        declarations=kw.pop("declarations", Declarations(tools=("search_faq",))),
    )


async def audit_types(store: MemoryStore) -> list[tuple[str, str]]:
    return [(r.type, str(r.outcome)) for _, r in await store.list_audit(limit=1000)]


async def test_registration_assigns_spiffe_id_risk_and_active_state(
    registry: Registry, store: MemoryStore, actor: ActorFactory
) -> None:
    agent = await registry.register(
        actor=actor(),
        name="faq-bot",
        owners=["alice", "alice", "bob"],
        description="  answers FAQs ",
        declarations=Declarations(tools=("search_faq", "search_faq")),
    )
    assert agent.spiffe_id == f"spiffe://{TRUST_DOMAIN}/agent/faq-bot"
    assert agent.state is AgentState.ACTIVE
    assert (agent.risk_score, agent.risk_tier) == (10, RiskTier.LOW)
    assert agent.owners == ("alice", "bob")
    assert agent.declarations.tools == ("search_faq",)
    assert agent.description == "answers FAQs"
    [assessment] = await store.list_assessments(agent.id)
    assert assessment.score == 10
    [(_, record)] = await store.list_audit()
    assert record.type == "agent.registered"
    assert record.subject == agent.spiffe_id
    assert record.actor == "operator:sam"
    assert record.details["risk"]["tier"] == "low"  # type: ignore[index]


async def test_duplicate_name_is_agent_exists_and_writes_nothing(
    registry: Registry, store: MemoryStore, actor: ActorFactory
) -> None:
    await register(registry, actor())
    with pytest.raises(AgentExists, match="faq-bot"):
        await register(registry, actor())
    assert await audit_types(store) == [("agent.registered", "success")]


@pytest.mark.parametrize(
    ("kwargs", "error", "rule"),
    [
        ({"name": "Bad_Name"}, InvalidName, "lowercase"),
        ({"owners": ()}, InvalidDeclaration, "at least one owner"),
        ({"owners": ("has space",)}, InvalidDeclaration, "without spaces"),
        ({"description": "x" * 2001}, InvalidDeclaration, "2000"),
        ({"declarations": Declarations(tools=("bad tool",))}, InvalidDeclaration, "tools"),
        ({"declarations": Declarations(data_classes=())}, InvalidDeclaration, "data class"),
        (
            {"declarations": Declarations(tools=("t",) * 0 + tuple(f"t{i}" for i in range(257)))},
            InvalidDeclaration,
            "at most 256",
        ),
    ],
)
async def test_bad_registrations_are_refused_with_the_rule(
    registry: Registry,
    store: MemoryStore,
    actor: ActorFactory,
    kwargs: dict[str, object],
    error: type[Exception],
    rule: str,
) -> None:
    with pytest.raises(error, match=rule):
        await register(registry, actor(), **kwargs)
    assert await store.list_agents() == []
    assert await audit_types(store) == []


async def test_critical_agent_waits_for_security_review(
    registry: Registry, store: MemoryStore, actor: ActorFactory
) -> None:
    agent = await register(registry, actor(), name="bank-bot", declarations=CRITICAL)
    assert agent.state is AgentState.PENDING_REVIEW  # type: ignore[attr-defined]
    assert agent.risk_tier is RiskTier.CRITICAL  # type: ignore[attr-defined]
    with pytest.raises(Forbidden):
        await registry.approve("bank-bot", actor=actor(Role.PLATFORM_ADMIN))
    approved = await registry.approve("bank-bot", actor=actor(Role.SECURITY_ADMIN), reason="ok")
    assert approved.state is AgentState.ACTIVE
    with pytest.raises(InvalidTransition, match="not pending_review"):
        await registry.approve("bank-bot", actor=actor(Role.SECURITY_ADMIN))
    assert ("agent.approved", "success") in await audit_types(store)


async def test_declaration_change_is_reassessed_and_kept_in_history(
    registry: Registry, store: MemoryStore, actor: ActorFactory, clock: FixedClock
) -> None:
    agent = await register(registry, actor())
    clock.advance(60)
    updated = await registry.update("faq-bot", actor=actor(), declarations=CRITICAL)
    assert updated.risk_tier is RiskTier.CRITICAL
    assert updated.state is AgentState.PENDING_REVIEW, "rising to critical needs a new review"
    assert updated.version == 2
    history = await store.list_assessments(agent.id)  # type: ignore[attr-defined]
    assert [a.tier for a in history] == [RiskTier.LOW, RiskTier.CRITICAL]
    assert history[1].assessed_at > history[0].assessed_at


async def test_update_without_declarations_keeps_the_assessment(
    registry: Registry, store: MemoryStore, actor: ActorFactory
) -> None:
    agent = await register(registry, actor())
    updated = await registry.update("faq-bot", actor=actor(), description="new text")
    assert updated.description == "new text"
    assert len(await store.list_assessments(agent.id)) == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("path", "target", "ok"),
    [
        ([], AgentState.SUSPENDED, True),
        ([], AgentState.QUARANTINED, True),
        ([], AgentState.RETIRED, True),
        ([], AgentState.ACTIVE, False),
        ([AgentState.SUSPENDED], AgentState.ACTIVE, True),
        ([AgentState.QUARANTINED], AgentState.ACTIVE, True),
        ([AgentState.QUARANTINED], AgentState.SUSPENDED, False),
        ([AgentState.RETIRED], AgentState.ACTIVE, False),
        ([AgentState.RETIRED], AgentState.QUARANTINED, False),
    ],
)
async def test_lifecycle_transitions(
    registry: Registry,
    actor: ActorFactory,
    path: list[AgentState],
    target: AgentState,
    ok: bool,
) -> None:
    await register(registry, actor())
    for state in path:
        await registry.set_state("faq-bot", state, actor=actor())
    if ok:
        agent = await registry.set_state("faq-bot", target, actor=actor(), reason="because")
        assert agent.state is target
        assert agent.state_reason == "because"
    else:
        with pytest.raises(InvalidTransition):
            await registry.set_state("faq-bot", target, actor=actor())


async def test_only_security_lifts_a_quarantine(registry: Registry, actor: ActorFactory) -> None:
    await register(registry, actor())
    await registry.set_state("faq-bot", AgentState.QUARANTINED, actor=actor())
    with pytest.raises(Forbidden):
        await registry.set_state("faq-bot", AgentState.ACTIVE, actor=actor(Role.PLATFORM_ADMIN))


async def test_suspended_agent_raised_to_critical_cannot_be_resumed_past_review(
    registry: Registry, actor: ActorFactory
) -> None:
    platform = actor(Role.PLATFORM_ADMIN, "pat")
    await register(registry, platform)
    await registry.set_state("faq-bot", AgentState.SUSPENDED, actor=platform)
    updated = await registry.update("faq-bot", actor=platform, declarations=CRITICAL)
    assert updated.risk_tier is RiskTier.CRITICAL
    with pytest.raises(Forbidden):
        await registry.set_state("faq-bot", AgentState.ACTIVE, actor=platform)
    resumed = await registry.set_state("faq-bot", AgentState.ACTIVE, actor=actor())
    assert resumed.state is AgentState.ACTIVE, "a security admin may resume it"


async def test_retired_agent_cannot_be_changed(registry: Registry, actor: ActorFactory) -> None:
    await register(registry, actor())
    await registry.set_state("faq-bot", AgentState.RETIRED, actor=actor())
    with pytest.raises(InvalidTransition, match="retired"):
        await registry.update("faq-bot", actor=actor(), description="x")
    with pytest.raises(InvalidTransition, match="retired"):
        await registry.add_key("faq-bot", ec_public_jwk(), actor=actor())


async def test_developer_registers_and_manages_only_their_own_agents(
    registry: Registry, actor: ActorFactory
) -> None:
    alice = actor(Role.DEVELOPER, "alice")
    mallory = actor(Role.DEVELOPER, "mallory")
    with pytest.raises(Forbidden, match="list yourself"):
        await register(registry, alice, owners=("bob",))
    await register(registry, alice, owners=("alice",))
    await registry.add_key("faq-bot", ec_public_jwk(), actor=alice)
    with pytest.raises(Forbidden):
        await registry.add_key("faq-bot", ec_public_jwk(), actor=mallory)
    with pytest.raises(Forbidden):
        await registry.set_state("faq-bot", AgentState.QUARANTINED, actor=alice)
    suspended = await registry.set_state("faq-bot", AgentState.SUSPENDED, actor=alice)
    assert suspended.state is AgentState.SUSPENDED


async def test_auditor_cannot_register(registry: Registry, actor: ActorFactory) -> None:
    with pytest.raises(Forbidden):
        await register(registry, actor(Role.AUDITOR))


async def test_keys_are_public_jwks_identified_by_thumbprint(
    registry: Registry, actor: ActorFactory
) -> None:
    await register(registry, actor())
    jwk = ec_public_jwk()
    key = await registry.add_key("faq-bot", jwk, actor=actor())
    assert key.alg == "ES256"
    assert key.jwk["kid"] == key.kid
    with pytest.raises(KeyExists):
        await registry.add_key("faq-bot", jwk, actor=actor())
    with pytest.raises(InvalidKey):
        await registry.add_key("faq-bot", {**jwk, "d": jwk["x"]}, actor=actor())
    with pytest.raises(InvalidKey):
        await registry.add_key("faq-bot", {"kty": "oct", "k": "c2VjcmV0"}, actor=actor())
    removed = await registry.remove_key("faq-bot", key.kid, actor=actor())
    assert removed.removed_at is not None
    assert await registry.keys("faq-bot", actor=actor()) == []
    with pytest.raises(KeyNotFound):
        await registry.remove_key("faq-bot", key.kid, actor=actor())


async def test_key_count_is_capped(registry: Registry, actor: ActorFactory) -> None:
    await register(registry, actor())
    for _ in range(MAX_KEYS_PER_AGENT):
        await registry.add_key("faq-bot", ec_public_jwk(), actor=actor())
    with pytest.raises(InvalidKey, match="at most"):
        await registry.add_key("faq-bot", ec_public_jwk(), actor=actor())


async def test_unknown_agent_is_agent_not_found(registry: Registry, actor: ActorFactory) -> None:
    with pytest.raises(AgentNotFound):
        await registry.get("ghost", actor=actor())


class _BrokenSink:
    async def append(self, record: AuditRecord) -> AuditReceipt:
        raise StoreUnavailable("audit log unavailable")


async def test_no_audit_no_change(
    store: MemoryStore, clock: FixedClock, actor: ActorFactory
) -> None:
    registry = Registry(store=store, audit=_BrokenSink(), clock=clock, trust_domain=TRUST_DOMAIN)
    with pytest.raises(StoreUnavailable):
        await register(registry, actor())
    assert await store.list_agents() == []


async def test_failed_apply_is_followed_by_a_failure_record(
    registry: Registry, store: MemoryStore, actor: ActorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    await register(registry, actor())
    stale = await registry.get("faq-bot", actor=actor())
    # another writer changes the agent between our read and our write
    await store.update_agent(replace(stale, version=stale.version + 1), expected_version=1)

    async def stale_load(name: str) -> Agent:
        return stale

    monkeypatch.setattr(registry, "_load", stale_load)
    with pytest.raises(VersionConflict):
        await registry.update("faq-bot", actor=actor(), description="lost update")
    rows = await store.list_audit(limit=10)
    last = rows[-1][1]
    assert (last.type, last.outcome, last.details["error"]) == (
        "agent.updated",
        Outcome.FAILURE,
        "version_conflict",
    )
    assert last.correlation_id == rows[-2][1].id

"""Revoking JWT-SVIDs on a fixed clock: the checkpoint's token check, who may revoke what, and
the revocation an agent gets when it stops."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.audit import open_log
from tether._internal.clock import FixedClock
from tether.audit.records import AuditReceipt, AuditRecord, Outcome
from tether.crypto.kek import KeyEncryptionKey
from tether.crypto.keyring import KeyRing
from tether.errors import (
    AgentNotFound,
    Error,
    Forbidden,
    InvalidInput,
    InvalidName,
    StoreUnavailable,
    TemporarilyUnavailable,
    Unauthenticated,
)
from tether.identity.access import Actor
from tether.identity.client_auth import AuthenticatedClient
from tether.identity.models import (
    AgentState,
    Autonomy,
    Connectivity,
    DataClass,
    Declarations,
    Role,
)
from tether.identity.registry import Registry
from tether.identity.revocations import (
    ISSUANCE_MARGIN,
    Revocation,
    RevocationKind,
    RevocationList,
)
from tether.identity.svid import VERIFY_LEEWAY, SvidIssuer
from tether.store.memory import MemoryStore

from .conftest import TRUST_DOMAIN

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ISSUER = "https://tether.example"
TTL = 300
#: The clock's finest step: a moment this much before a whole second is the end of the one before.
TICK = timedelta(microseconds=1)
#: The refusals of verify_agent_token: the token is revoked (so its JWT checks passed), or it
#: fails them (signature, expiry…).
REVOKED = "the token is revoked"
INVALID = "a valid agent token for this server is required"
SECURITY = Actor.operator(token_id="opt_sam", name="sam", role=Role.SECURITY_ADMIN)
ALICE = Actor.operator(token_id="opt_alice", name="alice", role=Role.DEVELOPER)
BOB = Actor.operator(token_id="opt_bob", name="bob", role=Role.DEVELOPER)


class _Store(MemoryStore):
    """The reference store, whose revocation writes can be made to fail."""

    refuse_revocations = False

    async def add_revocation(self, revocation: Revocation) -> None:
        if self.refuse_revocations:
            raise StoreUnavailable("the database is down")
        await super().add_revocation(revocation)


@dataclass
class World:
    clock: FixedClock
    store: _Store
    registry: Registry
    revocations: RevocationList
    svids: SvidIssuer
    unaware: SvidIssuer

    async def client(self, instance_id: str = "pod-1") -> AuthenticatedClient:
        """faq-bot's ``instance_id`` authenticated now, as a token request reads it."""
        agent = await self.store.get_agent("faq-bot")
        assert agent is not None
        instance = await self.store.record_instance_seen(
            agent_id=agent.id,
            instance_id=instance_id,
            spiffe_id=f"{agent.spiffe_id}/i/{instance_id}",
            kid=None,
            auth_method="private_key_jwt",
            at=self.clock.now(),
        )
        return AuthenticatedClient(agent=agent, instance=instance, method="private_key_jwt")

    async def issue(self, client: AuthenticatedClient) -> tuple[str, str]:
        """A JWT-SVID issued now to ``client``, and its jti."""
        issued = await self.svids.issue_jwt_svid(client, audience=())
        return issued.token, issued.jti

    async def issued_elsewhere(self, client: AuthenticatedClient) -> str:
        """A JWT-SVID issued now to ``client`` by a replica that has not heard of any
        revocation yet (this one's token endpoint would refuse to issue it)."""
        return (await self.unaware.issue_jwt_svid(client, audience=())).token

    async def token(self, instance_id: str = "pod-1") -> tuple[str, str]:
        """A fresh JWT-SVID of faq-bot's ``instance_id``, and its jti."""
        return await self.issue(await self.client(instance_id))

    async def verify(self, token: str) -> str:
        caller = await self.svids.verify_agent_token(token, certificate_thumbprint=None)
        return caller.spiffe_id

    async def refusal(self, token: str) -> str:
        """Why ``token`` is refused (it must be)."""
        with pytest.raises(Unauthenticated) as refused:
            await self.verify(token)
        return refused.value.message

    def advance_to(self, moment: datetime) -> None:
        """Move the clock forward to ``moment``."""
        assert moment >= self.clock.now()
        self.clock.advance((moment - self.clock.now()).total_seconds())
        assert self.clock.now() == moment

    async def audit(self, type: str) -> list[AuditRecord]:
        return [r for _, r in await self.store.list_audit(limit=1000) if r.type == type]


async def build(*, audit: Any = None) -> World:
    clock = FixedClock(T0)
    store = _Store(clock=clock)
    log = await open_log(store)
    sink = audit or log
    keyring = await KeyRing.open(
        persistence=store,
        kek=KeyEncryptionKey.generate(),
        now=clock.now(),
        trust_domain=TRUST_DOMAIN,
        signing_key_max_age=timedelta(days=30),
        token_max_ttl=timedelta(seconds=TTL),
    )
    revocations = await RevocationList.load(
        store, clock=clock, max_token_lifetime=TTL, leeway=VERIFY_LEEWAY
    )
    registry = Registry(
        store=store,
        audit=log,
        clock=clock,
        trust_domain=TRUST_DOMAIN,
        revocations=revocations,
    )

    def issuer(revoked: RevocationList) -> SvidIssuer:
        return SvidIssuer(
            keyring=keyring,
            store=store,
            audit=sink,
            clock=clock,
            issuer=ISSUER,
            trust_domain=TRUST_DOMAIN,
            audiences=frozenset({ISSUER}),
            jwt_ttl=TTL,
            x509_ttl=3600,
            revocations=revoked,
        )

    svids = issuer(revocations)
    # Another replica's token endpoint that has not heard of any revocation yet.
    unaware = issuer(
        RevocationList(store, clock=clock, max_token_lifetime=TTL, leeway=VERIFY_LEEWAY)
    )
    await registry.register(
        actor=SECURITY,
        name="faq-bot",
        owners=["alice"],
        description="answers FAQs",
        declarations=Declarations(tools=("search_faq",)),
    )
    return World(
        clock=clock,
        store=store,
        registry=registry,
        revocations=revocations,
        svids=svids,
        unaware=unaware,
    )


@pytest.fixture
async def world() -> World:
    return await build()


# -- the checkpoint's token check --------------------------------------------------------------


async def test_revoked_jti_is_refused_even_when_cached(world: World) -> None:
    token, jti = await world.token()
    await world.verify(token)  # now in the verified-token cache
    await world.svids.revoke(actor=SECURITY, jti=jti, reason="leaked in a log")
    with pytest.raises(Unauthenticated) as refused:
        await world.verify(token)
    assert refused.value.message == REVOKED
    # whoever holds the token may be who it was revoked against: not told the operator's reason
    assert "leaked in a log" not in repr(dict(refused.value.details))
    assert "leaked in a log" not in str(refused.value)
    other, _ = await world.token()
    assert await world.verify(other), "another token of the agent still works"


async def test_agent_revocation_spares_tokens_issued_after_the_margin(world: World) -> None:
    old, _ = await world.token("pod-1")
    older, _ = await world.token("pod-2")
    world.clock.advance(5)
    await world.svids.revoke(actor=SECURITY, agent="faq-bot")
    for token in (old, older):
        assert await world.refusal(token) == REVOKED
    world.clock.advance(ISSUANCE_MARGIN + 1)
    fresh, _ = await world.token("pod-1")
    assert await world.verify(fresh) == f"spiffe://{TRUST_DOMAIN}/agent/faq-bot/i/pod-1"


async def test_token_issued_while_the_suspension_is_written_is_revoked_too(world: World) -> None:
    # A token request reads faq-bot as active, the suspension is written, then the request
    # signs its token: late, or on a replica whose clock runs ahead, by up to the margin.
    request = await world.client()
    await world.registry.set_state("faq-bot", AgentState.SUSPENDED, actor=SECURITY)
    world.clock.advance(ISSUANCE_MARGIN)
    with pytest.raises(TemporarilyUnavailable, match="ask again in 1 s"):
        await world.issue(request)  # this replica knows: it does not issue a dead token
    racing = await world.issued_elsewhere(request)  # one that has not heard yet does
    world.clock.advance(ISSUANCE_MARGIN)
    await world.registry.set_state("faq-bot", AgentState.ACTIVE, actor=SECURITY)
    assert await world.refusal(racing) == REVOKED, "the resume must not revive it"
    fresh, _ = await world.token()
    assert await world.verify(fresh), "a token issued after the margin works"


async def test_token_issued_at_the_end_of_the_margin_stays_refused_to_its_last_second(
    world: World,
) -> None:
    entry = await world.svids.revoke(actor=SECURITY, agent="faq-bot")
    world.clock.advance(ISSUANCE_MARGIN)
    # the last token the entry covers, from a replica that had not heard of it
    token = await world.issued_elsewhere(await world.client())
    assert await world.refusal(token) == REVOKED
    # accepted by the JWT checks until exp + VERIFY_LEEWAY, in whole seconds: to the end of it
    last = T0 + timedelta(seconds=ISSUANCE_MARGIN + TTL + VERIFY_LEEWAY + 1) - TICK
    world.advance_to(last)
    await world.revocations.refresh()
    assert await world.refusal(token) == REVOKED, "the entry outlives every token it covers"
    world.advance_to(last + TICK)
    assert entry.until == world.clock.now()
    await world.revocations.refresh()
    assert world.revocations.live() == []
    assert await world.refusal(token) == INVALID, "expired: refused without the entry"


async def test_instance_revocation_spares_the_agents_other_instances(world: World) -> None:
    compromised, _ = await world.token("pod-1")
    healthy, _ = await world.token("pod-2")
    entry = await world.svids.revoke(actor=SECURITY, agent="faq-bot", instance="pod-1")
    assert (entry.kind, entry.target) == (
        RevocationKind.INSTANCE,
        f"spiffe://{TRUST_DOMAIN}/agent/faq-bot/i/pod-1",
    )
    with pytest.raises(Unauthenticated, match="revoked"):
        await world.verify(compromised)
    assert await world.verify(healthy)


async def test_revoked_token_stays_refused_until_it_expires_then_the_entry_goes(
    world: World,
) -> None:
    token, jti = await world.token()
    entry = await world.svids.revoke(actor=SECURITY, jti=jti)  # in the second it was issued
    assert entry.revoked_at == T0
    assert entry.until == T0 + timedelta(seconds=ISSUANCE_MARGIN + TTL + VERIFY_LEEWAY + 1)
    # the token's exp is T0 + TTL; the JWT checks accept it to the end of exp + VERIFY_LEEWAY
    world.advance_to(T0 + timedelta(seconds=TTL + VERIFY_LEEWAY))
    await world.revocations.refresh()
    assert await world.refusal(token) == REVOKED
    world.advance_to(T0 + timedelta(seconds=TTL + VERIFY_LEEWAY + 1) - TICK)
    await world.revocations.refresh()
    assert await world.refusal(token) == REVOKED, "its very last moment"
    world.advance_to(T0 + timedelta(seconds=TTL + VERIFY_LEEWAY + 1))
    assert await world.refusal(token) == INVALID, "expired"
    world.advance_to(entry.until - TICK)
    assert await world.revocations.purge() == 0
    world.advance_to(entry.until)
    assert await world.revocations.purge() == 1
    await world.revocations.refresh()
    assert world.revocations.live() == []
    assert await world.store.list_revocations(now=T0) == []
    assert await world.refusal(token) == INVALID, "expired: refused without the entry"


# -- who may revoke what -----------------------------------------------------------------------


async def test_developer_revokes_tokens_of_an_agent_they_own(world: World) -> None:
    token, _ = await world.token()
    entry = await world.svids.revoke(actor=ALICE, agent="faq-bot", reason="rotating")
    assert entry.actor == "operator:alice"
    with pytest.raises(Unauthenticated):
        await world.verify(token)


async def test_developer_cannot_revoke_tokens_of_an_agent_they_do_not_own(world: World) -> None:
    token, _ = await world.token()
    with pytest.raises(Forbidden, match=r"svid\.revoke"):
        await world.svids.revoke(actor=BOB, agent="faq-bot")
    with pytest.raises(Forbidden):
        await world.svids.revoke(actor=BOB, agent="faq-bot", instance="pod-1")
    assert await world.verify(token)
    assert await world.store.list_revocations(now=world.clock.now()) == []


async def test_a_single_jti_names_no_owner_so_only_admins_revoke_it(world: World) -> None:
    _, jti = await world.token()
    with pytest.raises(Forbidden):
        await world.svids.revoke(actor=ALICE, jti=jti)


@pytest.mark.parametrize("role", [Role.AUDITOR, Role.ENFORCEMENT_POINT])
async def test_roles_without_the_permission_cannot_revoke(world: World, role: Role) -> None:
    actor = Actor.operator(token_id="opt_x", name="alice", role=role)
    with pytest.raises(Forbidden):
        await world.svids.revoke(actor=actor, agent="faq-bot")


@pytest.mark.parametrize(
    "target",
    [
        {},
        {"jti": "jti_1", "agent": "faq-bot"},
        {"instance": "pod-1"},
        {"jti": "jti_1", "instance": "pod-1"},
    ],
)
async def test_revocation_names_exactly_one_target(world: World, target: dict[str, str]) -> None:
    with pytest.raises(InvalidInput, match="exactly one"):
        await world.svids.revoke(actor=SECURITY, **target)


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ({"jti": "has space"}, InvalidInput),
        ({"jti": "j" * 129}, InvalidInput),
        ({"agent": "Bad_Name"}, InvalidName),
        ({"agent": "faq-bot", "instance": "../etc"}, InvalidName),
        ({"agent": "faq-bot", "reason": "x" * 501}, InvalidInput),
    ],
)
async def test_malformed_revocations_are_refused_before_anything_is_written(
    world: World, target: dict[str, str], error: type[Error]
) -> None:
    with pytest.raises(error):
        await world.svids.revoke(actor=SECURITY, **target)
    assert await world.audit("svid.revoked") == []


async def test_unknown_agent_is_agent_not_found(world: World) -> None:
    with pytest.raises(AgentNotFound):
        await world.svids.revoke(actor=SECURITY, agent="ghost-bot")


async def test_listing_revocations_needs_an_operator(world: World) -> None:
    entry = await world.svids.revoke(actor=SECURITY, agent="faq-bot", reason="  ")
    assert entry.reason is None, "a blank reason is no reason"
    auditor = Actor.operator(token_id="opt_a", name="audrey", role=Role.AUDITOR)
    assert await world.svids.revocations(actor=auditor) == [entry]
    with pytest.raises(Forbidden):
        await world.svids.revocations(actor=Actor.agent(spiffe_id="spiffe://acme.org/agent/x"))


# -- audited, durable, then in force -------------------------------------------------------------


async def test_revocation_is_audited_with_its_kind_target_and_reason(world: World) -> None:
    entry = await world.svids.revoke(
        actor=SECURITY, agent="faq-bot", instance="pod-1", reason="pod compromised"
    )
    [record] = await world.audit("svid.revoked")
    assert record.actor == "operator:sam"
    assert record.subject == entry.target
    assert record.details == {
        "revocation_id": entry.id,
        "kind": "instance",
        "target": entry.target,
        "reason": "pod compromised",
        "until": entry.until.isoformat(),
    }


async def test_revocation_the_store_refuses_is_recorded_as_failed_and_not_in_force(
    world: World,
) -> None:
    token, jti = await world.token()
    world.store.refuse_revocations = True
    with pytest.raises(StoreUnavailable):
        await world.svids.revoke(actor=SECURITY, jti=jti)
    outcomes = [r.outcome for r in await world.audit("svid.revoked")]
    assert outcomes == [Outcome.SUCCESS, Outcome.FAILURE]
    assert await world.verify(token), "nothing half-revoked"


class _RefusingSink:
    async def append(self, record: AuditRecord) -> AuditReceipt:
        raise StoreUnavailable("the audit log is down")


async def test_no_audit_no_revocation() -> None:
    broken = await build(audit=_RefusingSink())
    with pytest.raises(StoreUnavailable):
        await broken.svids.revoke(actor=SECURITY, agent="faq-bot")
    assert await broken.store.list_revocations(now=broken.clock.now()) == []


# -- an agent that stops loses its tokens so far -------------------------------------------------


@pytest.mark.parametrize(
    "target", [AgentState.SUSPENDED, AgentState.QUARANTINED, AgentState.RETIRED]
)
async def test_stopping_an_agent_revokes_its_tokens_with_the_change(
    world: World, target: AgentState
) -> None:
    token, _ = await world.token()
    await world.registry.set_state("faq-bot", target, actor=SECURITY, reason="incident 42")
    [entry] = await world.store.list_revocations(now=world.clock.now())
    assert (entry.kind, entry.target) == (RevocationKind.AGENT, "faq-bot")
    assert entry.reason == f"agent {target}: incident 42"
    assert world.revocations.live() == [entry], "in force here at once"
    [record] = [r for r in await world.audit("agent.state_changed") if r.outcome is Outcome.SUCCESS]
    assert record.details["tokens_revoked"] == {
        "revocation_id": entry.id,
        "until": entry.until.isoformat(),
    }
    with pytest.raises(Unauthenticated):
        await world.verify(token)


async def test_resume_after_quarantine_does_not_revive_old_tokens(world: World) -> None:
    old, _ = await world.token()
    await world.registry.set_state("faq-bot", AgentState.QUARANTINED, actor=SECURITY)
    world.clock.advance(60)
    await world.registry.set_state("faq-bot", AgentState.ACTIVE, actor=SECURITY)
    with pytest.raises(Unauthenticated, match="the token is revoked"):
        await world.verify(old)
    fresh, _ = await world.token()
    assert await world.verify(fresh), "tokens issued after the resume work"
    assert len(await world.store.list_revocations(now=world.clock.now())) == 1, (
        "resuming revokes nothing"
    )


async def test_agent_sent_back_to_review_loses_its_tokens(world: World) -> None:
    old, _ = await world.token()
    critical = Declarations(
        tools=("transfer_funds",),
        data_classes=(DataClass.RESTRICTED,),
        external_connections=Connectivity.INTERNET,
        autonomy=Autonomy.AUTONOMOUS,
        may_call_agents=True,
    )
    updated = await world.registry.update("faq-bot", actor=SECURITY, declarations=critical)
    assert updated.state is AgentState.PENDING_REVIEW
    world.clock.advance(60)
    await world.registry.approve("faq-bot", actor=SECURITY)
    with pytest.raises(Unauthenticated, match="the token is revoked"):
        await world.verify(old)


async def test_changes_that_do_not_stop_an_agent_revoke_nothing(world: World) -> None:
    await world.registry.update("faq-bot", actor=SECURITY, description="still answers FAQs")
    await world.registry.set_state("faq-bot", AgentState.SUSPENDED, actor=SECURITY)
    await world.registry.update("faq-bot", actor=SECURITY, description="paused")
    assert len(await world.store.list_revocations(now=world.clock.now())) == 1


async def test_stop_that_fails_to_apply_revokes_nothing(world: World) -> None:
    async def refuse(*args: Any, **kwargs: Any) -> None:
        raise StoreUnavailable("the database is down")

    world.store.update_agent = refuse  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        await world.registry.set_state("faq-bot", AgentState.SUSPENDED, actor=SECURITY)
    assert world.revocations.live() == []
    agent = await world.store.get_agent("faq-bot")
    assert agent is not None
    assert agent.state is AgentState.ACTIVE

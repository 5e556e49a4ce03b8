"""Grants (tether.delegation.grants): consent only by the user, scopes per RFC 6749 §3.3, who
sees and revokes which grant, and revocation that takes effect at once."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from tether._internal.clock import FixedClock
from tether.audit.log import AuditLog
from tether.audit.records import AuditRecord
from tether.delegation.grants import MAX_SCOPES, Grants, check_purpose_code, parse_scopes
from tether.delegation.models import Grant, GrantMatch, GrantState, User, UserState
from tether.errors import (
    AgentNotFound,
    Forbidden,
    GrantNotFound,
    InvalidInput,
    InvalidName,
    InvalidScope,
)
from tether.identity.access import Actor
from tether.identity.models import AgentState, Declarations, Role
from tether.identity.registry import Registry
from tether.store.memory import MemoryStore

ISSUER = "https://tether.test"
MAX_TTL = 7 * 24 * 3600
ALICE = Actor.user(name="alice")
BOB = Actor.user(name="bob")
SAM = Actor.operator(token_id="opt_sam", name="sam", role=Role.SECURITY_ADMIN)
AUDITOR = Actor.operator(token_id="opt_ann", name="ann", role=Role.AUDITOR)

Revoked = list[tuple[Grant, Actor, str | None]]


def operator(role: Role) -> Actor:
    return Actor.operator(token_id="opt_op", name="op", role=role)


async def add_user(store: MemoryStore, clock: FixedClock, name: str, **changes: object) -> User:
    user = User(
        id=f"usr_{name}",
        name=name,
        display_name=None,
        email=None,
        state=UserState.ACTIVE,
        password_hash=None,
        issuer=ISSUER,
        subject=name,
        created_at=clock.now(),
        updated_at=clock.now(),
    )
    user = replace(user, **changes)  # type: ignore[arg-type]
    await store.create_user(user)
    return user


@pytest.fixture
async def world(store: MemoryStore, audit: AuditLog, clock: FixedClock) -> None:
    """Users alice and bob, agents shop-bot and mail-bot."""
    await add_user(store, clock, "alice")
    await add_user(store, clock, "bob")
    registry = Registry(store=store, audit=audit, clock=clock, trust_domain="acme.org")
    for name in ("shop-bot", "mail-bot"):
        await registry.register(
            actor=SAM,
            name=name,
            owners=("sam",),
            description="helps",
            declarations=Declarations(tools=("search",)),
        )


@pytest.fixture
def revoked_log() -> Revoked:
    return []


@pytest.fixture
def grants(
    world: None, store: MemoryStore, audit: AuditLog, clock: FixedClock, revoked_log: Revoked
) -> Grants:
    async def on_revoke(grant: Grant, actor: Actor, reason: str | None) -> None:
        revoked_log.append((grant, actor, reason))

    return Grants(
        store=store,
        users=store,
        agents=store,
        audit=audit,
        clock=clock,
        max_ttl_seconds=MAX_TTL,
        cache_seconds=3600.0,
        on_revoke=on_revoke,
    )


async def consent(
    grants: Grants,
    actor: Actor = ALICE,
    agent: str = "shop-bot",
    scopes: str | list[str] = "orders:read",
    **kw: object,
) -> Grant:
    return await grants.create(
        actor=actor,
        agent=agent,
        scopes=scopes,
        purpose=str(kw.pop("purpose", "track my orders")),
        purpose_code=str(kw.pop("purpose_code", "order-tracking")),
        session=kw.pop("session", "sid_1"),  # type: ignore[arg-type]
        ttl_seconds=kw.pop("ttl_seconds", None),  # type: ignore[arg-type]
    )


async def records(store: MemoryStore, type_prefix: str) -> list[AuditRecord]:
    return [r for _, r in await store.list_audit(limit=10_000, type_prefix=type_prefix)]


# -- creating ------------------------------------------------------------------------------


async def test_a_user_consents_to_an_existing_agent(
    grants: Grants, store: MemoryStore, clock: FixedClock
) -> None:
    grant = await consent(grants, scopes="orders:read orders:track", ttl_seconds=3600)
    assert grant.user == "alice"
    assert grant.agent == "shop-bot"
    assert grant.scopes == frozenset({"orders:read", "orders:track"})
    assert grant.created_by == "user:alice"
    assert grant.session == "sid_1"
    assert grant.expires_at == clock.now() + timedelta(seconds=3600)
    assert grant.in_force(clock.now())
    assert await store.get_grant(grant.id) == grant
    (created,) = await records(store, "grant.created")
    assert created.subject == f"grant:{grant.id}"
    assert created.actor == "user:alice"
    assert created.details["scopes"] == ["orders:read", "orders:track"]
    assert created.details["purpose_code"] == "order-tracking"
    assert (created.details["user"], created.details["agent"]) == ("alice", "shop-bot")


@pytest.mark.parametrize(
    "actor",
    [
        SAM,
        operator(Role.ROOT),
        operator(Role.DEVELOPER),
        Actor.agent(spiffe_id="spiffe://acme.org/agent/shop-bot"),
        Actor.system(),
    ],
    ids=["security-admin", "root", "developer", "agent", "system"],
)
async def test_only_the_user_themselves_can_consent(
    grants: Grants, store: MemoryStore, actor: Actor
) -> None:
    with pytest.raises(Forbidden, match="only the user themselves"):
        await consent(grants, actor=actor)
    assert await store.list_grants(GrantMatch()) == []


async def test_consent_to_an_unknown_agent_is_agent_not_found(grants: Grants) -> None:
    with pytest.raises(AgentNotFound, match="no-such-bot"):
        await consent(grants, agent="no-such-bot")


async def test_consent_to_a_malformed_agent_name_is_invalid_name(grants: Grants) -> None:
    with pytest.raises(InvalidName):
        await consent(grants, agent="../shop-bot")


async def test_a_disabled_user_cannot_consent(
    grants: Grants, store: MemoryStore, clock: FixedClock
) -> None:
    await add_user(store, clock, "carol", state=UserState.DISABLED, disabled_at=clock.now())
    with pytest.raises(Forbidden, match="disabled or unknown"):
        await consent(grants, actor=Actor.user(name="carol"))


async def test_an_unknown_user_cannot_consent(grants: Grants) -> None:
    with pytest.raises(Forbidden, match="disabled or unknown"):
        await consent(grants, actor=Actor.user(name="ghost"))


@pytest.mark.parametrize("ttl", [60, 3600, MAX_TTL])
async def test_a_ttl_within_60_seconds_and_the_maximum_is_accepted(
    grants: Grants, clock: FixedClock, ttl: int
) -> None:
    grant = await consent(grants, ttl_seconds=ttl)
    assert grant.expires_at - grant.created_at == timedelta(seconds=ttl)


@pytest.mark.parametrize("ttl", [-1, 0, 59, MAX_TTL + 1, True, 3600.0])
async def test_a_ttl_outside_the_bounds_is_refused(grants: Grants, ttl: object) -> None:
    with pytest.raises(InvalidInput, match="a grant lasts 60 s to") as caught:
        await consent(grants, ttl_seconds=ttl)
    assert caught.value.details == {"field": "ttl_seconds"}


async def test_without_a_ttl_a_grant_lasts_the_maximum(grants: Grants) -> None:
    grant = await consent(grants)
    assert grant.expires_at - grant.created_at == timedelta(seconds=MAX_TTL)


@pytest.mark.parametrize("code", ["", "Order", "1st", "order tracking", "a" * 65, "_x"])
def test_a_purpose_code_outside_the_rule_is_refused(code: str) -> None:
    with pytest.raises(InvalidInput, match="a purpose code"):
        check_purpose_code(code)


@pytest.mark.parametrize("purpose", ["", "   ", "x" * 501])
async def test_a_purpose_must_be_1_to_500_characters(grants: Grants, purpose: str) -> None:
    with pytest.raises(InvalidInput, match="a purpose is"):
        await consent(grants, purpose=purpose)


# -- scopes (RFC 6749 §3.3) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("orders:read", {"orders:read"}),
        ("orders:read orders:write", {"orders:read", "orders:write"}),
        ("a  b ", {"a", "b"}),
        ("a a", {"a"}),
        (["a", "b", "a"], {"a", "b"}),
        ("", set()),
        ("!#$%&'()*+,-./:;<=>?@[]^_`{|}~", {"!#$%&'()*+,-./:;<=>?@[]^_`{|}~"}),
        ("x" * 128, {"x" * 128}),
        ("https://api.example/orders.read", {"https://api.example/orders.read"}),
    ],
    ids=[
        "one",
        "space-separated",
        "extra-spaces",
        "duplicate",
        "list",
        "empty",
        "all-punctuation-allowed",
        "128-chars",
        "url-like",
    ],
)
def test_scope_tokens_allowed_by_rfc_6749(value: str | list[str], expected: set[str]) -> None:
    assert parse_scopes(value) == frozenset(expected)


@pytest.mark.parametrize(
    "value",
    [
        ["orders read"],
        ['orders"read'],
        '"orders"',
        "orders\\read",
        ["orders\\read"],
        "orders\tread",
        "orders\nread",
        "orders\x7fread",
        "ördres",
        "x" * 129,
        [f"s{i}" for i in range(MAX_SCOPES + 1)],
    ],
    ids=[
        "space-inside-a-listed-token",
        "quote-in-list",
        "quote-in-string",
        "backslash-in-string",
        "backslash-in-list",
        "tab",
        "newline",
        "del",
        "non-ascii",
        "129-chars",
        "too-many",
    ],
)
def test_scope_tokens_outside_rfc_6749_are_refused(value: str | list[str]) -> None:
    with pytest.raises(InvalidScope, match="RFC 6749"):
        parse_scopes(value)


def test_exactly_max_scopes_are_accepted() -> None:
    assert len(parse_scopes([f"s{i}" for i in range(MAX_SCOPES)])) == MAX_SCOPES


async def test_a_grant_with_a_forbidden_scope_is_not_created(
    grants: Grants, store: MemoryStore
) -> None:
    with pytest.raises(InvalidScope):
        await consent(grants, scopes='orders:read "quoted"')
    assert await store.list_grants(GrantMatch()) == []


# -- reading and listing -------------------------------------------------------------------


async def test_a_user_sees_their_own_grant_and_not_anothers(grants: Grants) -> None:
    mine = await consent(grants, actor=ALICE)
    theirs = await consent(grants, actor=BOB)
    assert await grants.get(mine.id, actor=ALICE) == mine
    with pytest.raises(GrantNotFound):
        await grants.get(theirs.id, actor=ALICE)


async def test_a_user_listing_all_grants_sees_only_their_own(grants: Grants) -> None:
    mine = await consent(grants, actor=ALICE)
    await consent(grants, actor=BOB)
    await consent(grants, actor=BOB, agent="mail-bot")
    assert await grants.list(GrantMatch(), actor=ALICE) == [mine]
    # Asking for someone else's by name still shows only one's own.
    assert await grants.list(GrantMatch(user="bob"), actor=ALICE) == [mine]


@pytest.mark.parametrize(
    "reader", [SAM, operator(Role.ROOT), AUDITOR], ids=["security-admin", "root", "auditor"]
)
async def test_security_admins_and_auditors_list_every_grant(grants: Grants, reader: Actor) -> None:
    made = {(await consent(grants, actor=a)).id for a in (ALICE, BOB)}
    assert {g.id for g in await grants.list(GrantMatch(), actor=reader)} == made
    bobs = await grants.list(GrantMatch(user="bob"), actor=reader)
    assert [g.user for g in bobs] == ["bob"]
    for grant_id in made:
        assert (await grants.get(grant_id, actor=reader)).id == grant_id


@pytest.mark.parametrize("role", [Role.DEVELOPER, Role.PLATFORM_ADMIN, Role.ENFORCEMENT_POINT])
async def test_other_operators_may_not_read_grants(grants: Grants, role: Role) -> None:
    grant = await consent(grants)
    with pytest.raises(Forbidden, match=r"grant\.read"):
        await grants.list(GrantMatch(), actor=operator(role))
    with pytest.raises(Forbidden, match=r"grant\.read"):
        await grants.get(grant.id, actor=operator(role))


async def test_listing_in_force_leaves_out_expired_and_revoked_grants(
    grants: Grants, clock: FixedClock
) -> None:
    short = await consent(grants, ttl_seconds=60)
    revoked = await consent(grants, agent="mail-bot")
    await grants.revoke(revoked.id, actor=ALICE)
    lasting = await consent(grants, ttl_seconds=3600)
    clock.advance(60)
    in_force = await grants.list(GrantMatch(), actor=ALICE, in_force=True)
    assert [g.id for g in in_force] == [lasting.id]
    assert {g.id for g in await grants.in_force(GrantMatch(user="alice"))} == {lasting.id}
    everything = {g.id for g in await grants.list(GrantMatch(), actor=ALICE)}
    assert everything == {short.id, revoked.id, lasting.id}


@pytest.mark.parametrize("grant_id", ["", "grt_", "grt_x", "nonsense", "grt_" + "a" * 26])
async def test_an_unknown_or_malformed_grant_id_is_not_found(grants: Grants, grant_id: str) -> None:
    with pytest.raises(GrantNotFound):
        await grants.get(grant_id, actor=SAM)
    with pytest.raises(GrantNotFound):
        await grants.revoke(grant_id, actor=SAM)


# -- revoking ------------------------------------------------------------------------------


async def test_a_user_revokes_their_own_grant(
    grants: Grants, store: MemoryStore, clock: FixedClock, revoked_log: Revoked
) -> None:
    grant = await consent(grants)
    revoked = await grants.revoke(grant.id, actor=ALICE, reason="  done  ")
    assert revoked.state is GrantState.REVOKED
    assert (revoked.revoked_at, revoked.revoked_by, revoked.revoke_reason) == (
        clock.now(),
        "user:alice",
        "done",
    )
    assert not revoked.in_force(clock.now())
    assert await store.get_grant(grant.id) == revoked
    assert revoked_log == [(revoked, ALICE, "done")]
    (record,) = await records(store, "grant.revoked")
    assert record.subject == f"grant:{grant.id}"
    assert record.details["reason"] == "done"


async def test_a_user_cannot_revoke_another_users_grant(
    grants: Grants, store: MemoryStore, revoked_log: Revoked
) -> None:
    theirs = await consent(grants, actor=BOB)
    with pytest.raises(GrantNotFound):
        await grants.revoke(theirs.id, actor=ALICE)
    assert (await store.get_grant(theirs.id)) == theirs
    assert revoked_log == []


async def test_security_admin_revokes_anyones_grant(grants: Grants) -> None:
    grant = await consent(grants, actor=BOB)
    assert (await grants.revoke(grant.id, actor=SAM)).revoked_by == "operator:sam"


@pytest.mark.parametrize("role", [Role.AUDITOR, Role.DEVELOPER, Role.PLATFORM_ADMIN])
async def test_auditors_and_other_operators_may_not_revoke(
    grants: Grants, store: MemoryStore, role: Role
) -> None:
    grant = await consent(grants)
    with pytest.raises(Forbidden, match=r"grant\.revoke"):
        await grants.revoke(grant.id, actor=operator(role))
    with pytest.raises(Forbidden, match=r"grant\.revoke"):
        await grants.revoke_all(GrantMatch(user="alice"), actor=operator(role))
    assert (await store.get_grant(grant.id)) == grant


async def test_revoking_twice_returns_the_revoked_grant_unchanged(
    grants: Grants, store: MemoryStore, revoked_log: Revoked
) -> None:
    grant = await consent(grants)
    first = await grants.revoke(grant.id, actor=ALICE, reason="first")
    again = await grants.revoke(grant.id, actor=SAM, reason="second")
    assert again == first
    assert len(revoked_log) == 1
    assert len(await records(store, "grant.revoked")) == 1


async def test_a_bulk_revocation_without_a_match_is_refused(grants: Grants) -> None:
    await consent(grants)
    with pytest.raises(InvalidInput, match="name a user, an agent or a session"):
        await grants.revoke_all(GrantMatch(), actor=SAM)


async def test_a_bulk_revocation_by_a_user_ends_only_their_own(
    grants: Grants, store: MemoryStore, revoked_log: Revoked
) -> None:
    mine = [await consent(grants, actor=ALICE, agent=a) for a in ("shop-bot", "mail-bot")]
    theirs = await consent(grants, actor=BOB)
    revoked = await grants.revoke_all(GrantMatch(agent="shop-bot"), actor=ALICE)
    assert [g.id for g in revoked] == [mine[0].id]
    # An empty match is scoped to the user: all of theirs, none of anyone else's.
    revoked = await grants.revoke_all(GrantMatch(), actor=ALICE)
    assert [g.id for g in revoked] == [mine[1].id]
    assert (await store.get_grant(theirs.id)) == theirs
    assert [g.id for g, _, _ in revoked_log] == [mine[0].id, mine[1].id]


async def test_the_on_revoke_hook_runs_once_per_revoked_grant(
    grants: Grants, store: MemoryStore, revoked_log: Revoked
) -> None:
    made = [await consent(grants, session=f"sid_{i}") for i in range(3)]
    await grants.revoke(made[0].id, actor=ALICE)
    revoked = await grants.revoke_all(GrantMatch(user="alice"), actor=SAM, reason="incident")
    assert {g.id for g in revoked} == {made[1].id, made[2].id}
    assert sorted(g.id for g, _, _ in revoked_log) == sorted(g.id for g in made)
    assert [(a, r) for _, a, r in revoked_log[1:]] == [(SAM, "incident")] * 2
    assert await grants.revoke_all(GrantMatch(user="alice"), actor=SAM) == []
    assert len(revoked_log) == 3
    bulk = [r for r in await records(store, "grant.revoked") if r.details.get("bulk")]
    announced = [r for r in bulk if "match" in r.details]
    assert [r.details["match"] for r in announced] == [{"user": "alice"}] * 2
    each = [r for r in bulk if "id" in r.details]
    assert sorted(str(r.details["id"]) for r in each) == sorted(g.id for g in revoked)


async def test_revoke_user_ends_every_grant_of_that_user(
    grants: Grants, store: MemoryStore
) -> None:
    await consent(grants, actor=ALICE)
    await consent(grants, actor=ALICE, agent="mail-bot")
    bobs = await consent(grants, actor=BOB)
    await grants.revoke_user("alice", SAM)
    assert await grants.in_force(GrantMatch(user="alice")) == []
    assert await grants.in_force(GrantMatch(user="bob")) == [bobs]


async def test_the_cache_keeps_a_grant_until_it_is_invalidated(
    grants: Grants, store: MemoryStore, clock: FixedClock
) -> None:
    """Without the service's invalidation, a long cache ttl would hide a revocation (which is
    why revocation must go through the service)."""
    grant = await consent(grants)
    assert await grants.cache.get(grant.id) == grant
    behind_its_back = replace(grant, state=GrantState.REVOKED, version=2)
    await store.update_grant(behind_its_back, expected_version=1)
    assert await grants.cache.get(grant.id) == grant


async def test_revocation_invalidates_the_cache_at_once(grants: Grants, clock: FixedClock) -> None:
    grant = await consent(grants)
    cached = await grants.cache.get(grant.id)
    assert cached is not None
    assert cached.in_force(clock.now())
    await grants.revoke(grant.id, actor=ALICE)
    after = await grants.cache.get(grant.id)
    assert after is not None
    assert after.state is GrantState.REVOKED
    assert not after.in_force(clock.now())


async def test_bulk_revocation_invalidates_the_cache_at_once(
    grants: Grants, clock: FixedClock
) -> None:
    made = [await consent(grants, agent=a) for a in ("shop-bot", "mail-bot")]
    for grant in made:
        assert await grants.cache.get(grant.id) == grant
    await grants.revoke_all(GrantMatch(user="alice"), actor=SAM)
    for grant in made:
        after = await grants.cache.get(grant.id)
        assert after is not None
        assert after.state is GrantState.REVOKED


async def test_a_too_long_reason_is_refused_and_nothing_is_revoked(
    grants: Grants, store: MemoryStore
) -> None:
    grant = await consent(grants)
    with pytest.raises(InvalidInput, match="reason"):
        await grants.revoke(grant.id, actor=ALICE, reason="x" * 501)
    assert (await store.get_grant(grant.id)) == grant


async def test_a_grant_without_any_scope_is_refused(grants: Grants) -> None:
    with pytest.raises(InvalidScope, match="at least one scope"):
        await consent(grants, scopes="")


@pytest.mark.parametrize("state", ["suspended", "quarantined", "retired"])
async def test_consent_to_an_agent_that_is_not_active_is_refused(
    grants: Grants, store: MemoryStore, audit: AuditLog, clock: FixedClock, state: str
) -> None:
    registry = Registry(store=store, audit=audit, clock=clock, trust_domain="acme.org")
    await registry.set_state("mail-bot", AgentState(state), actor=SAM, reason="test")
    with pytest.raises(InvalidInput, match="only an active agent"):
        await consent(grants, agent="mail-bot")
    assert await store.list_grants(GrantMatch(agent="mail-bot")) == []

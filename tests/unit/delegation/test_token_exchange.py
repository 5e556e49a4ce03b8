"""RFC 8693 token exchange rules (tether.delegation.token_exchange), attacked: each refusal is
named after the attack it stops; a stateful test walks random delegation chains."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tether.delegation.models import Grant, GrantState
from tether.delegation.token_exchange import (
    ACCESS_TOKEN_TYPE,
    JWT_TOKEN_TYPE,
    MAX_READ_DEPTH,
    MAX_TOKEN,
    ActingInstance,
    SubjectToken,
    act_chain,
    delegated_claims,
    parse_exchange_request,
)
from tether.errors import InvalidGrant, InvalidRequest, InvalidScope, OAuthError

NOW = 1_800_000_000
ISSUER = "https://tether.test"
AUDIENCE = "https://api.example"
TD = "spiffe://acme.org"
MAX_DEPTH = 4


def at(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def instance(agent: str, n: int = 1) -> ActingInstance:
    return ActingInstance(
        spiffe_id=f"{TD}/agent/{agent}/instance/i-{n}",
        agent=agent,
        agent_spiffe_id=f"{TD}/agent/{agent}",
    )


def make_grant(
    *,
    id: str = "grt_shop",
    user: str = "alice",
    agent: str = "shop-bot",
    scopes: frozenset[str] = frozenset({"orders:read", "orders:write"}),
    purpose_code: str = "order-tracking",
    session: str | None = "sid_1",
    expires_at: int = NOW + 3600,
    state: GrantState = GrantState.ACTIVE,
) -> Grant:
    return Grant(
        id=id,
        user=user,
        agent=agent,
        scopes=scopes,
        purpose="track my orders",
        purpose_code=purpose_code,
        session=session,
        created_at=at(NOW - 60),
        expires_at=at(expires_at),
        created_by=f"user:{user}",
        state=state,
    )


SHOP = instance("shop-bot")
MAIL = instance("mail-bot")
USER_TOKEN = SubjectToken(
    user="alice",
    scopes=frozenset({"orders:read", "orders:write", "profile"}),
    expires_at=NOW + 900,
    session="sid_1",
)


def exchange(
    *,
    subject: SubjectToken = USER_TOKEN,
    actor: ActingInstance = SHOP,
    grant: Grant | None = None,
    scope: frozenset[str] | None = None,
    now: int = NOW,
    max_ttl: int = 600,
    max_depth: int = MAX_DEPTH,
    purpose_code: str | None = None,
    jti: str = "jti_1",
) -> dict[str, Any]:
    return delegated_claims(
        subject=subject,
        actor=actor,
        grant=grant or make_grant(),
        scope=scope,
        audience=AUDIENCE,
        now=now,
        max_ttl=max_ttl,
        max_depth=max_depth,
        issuer=ISSUER,
        jti=jti,
        purpose_code=purpose_code,
    )


def next_subject(claims: dict[str, Any], **changes: Any) -> SubjectToken:
    """The subject token a delegated token becomes at the next hop."""
    token = SubjectToken(
        user=claims["sub"],
        scopes=frozenset(claims["scope"].split()),
        expires_at=claims["exp"],
        session=claims.get("sid"),
        act=claims["act"],
        grants=(*claims.get("prior_grants", []), claims["grant_id"]),
        purpose_code=claims["purpose"],
    )
    return replace(token, **changes)


def nested_act(depth: int) -> dict[str, Any] | None:
    act: dict[str, Any] | None = None
    for i in range(depth):
        act = {"sub": f"{TD}/agent/a{i}/instance/i-1"} | ({"act": act} if act else {})
    return act


MAIL_GRANT = make_grant(id="grt_mail", agent="mail-bot")


def _hop_one() -> dict[str, Any]:
    return exchange(scope=frozenset({"orders:read"}))


# -- delegated_claims: attacks -------------------------------------------------------------

Attack = Callable[[], object]

ATTACKS: list[tuple[str, Attack, type[OAuthError], str]] = [
    (
        "scope_widening_at_hop_one",
        lambda: exchange(scope=frozenset({"orders:read", "admin"})),
        InvalidScope,
        "wider",
    ),
    (
        "scope_widening_beyond_the_grant_to_a_token_scope",
        lambda: exchange(scope=frozenset({"profile"})),
        InvalidScope,
        "wider",
    ),
    (
        "scope_widening_at_hop_two",
        lambda: exchange(
            subject=next_subject(_hop_one()),
            actor=MAIL,
            grant=MAIL_GRANT,
            scope=frozenset({"orders:read", "orders:write"}),
        ),
        InvalidScope,
        "wider",
    ),
    (
        "empty_intersection_of_grant_and_token",
        lambda: exchange(grant=make_grant(scopes=frozenset({"billing:read"}))),
        InvalidScope,
        "no scope is left",
    ),
    (
        "empty_requested_scope",
        lambda: exchange(scope=frozenset()),
        InvalidScope,
        "no scope is left",
    ),
    (
        "grant_of_another_user",
        lambda: exchange(grant=make_grant(user="bob")),
        InvalidGrant,
        "no grant of this user for this agent",
    ),
    (
        "grant_of_another_agent",
        lambda: exchange(grant=MAIL_GRANT),
        InvalidGrant,
        "no grant of this user for this agent",
    ),
    (
        "another_agents_instance_reusing_a_grant",
        lambda: exchange(actor=replace(MAIL, agent_spiffe_id=SHOP.agent_spiffe_id)),
        InvalidGrant,
        "no grant of this user for this agent",
    ),
    (
        "revoked_grant",
        lambda: exchange(grant=make_grant(state=GrantState.REVOKED)),
        InvalidGrant,
        "revoked or expired",
    ),
    (
        "expired_grant",
        lambda: exchange(grant=make_grant(expires_at=NOW)),
        InvalidGrant,
        "revoked or expired",
    ),
    (
        "expired_subject_token",
        lambda: exchange(subject=replace(USER_TOKEN, expires_at=NOW)),
        InvalidGrant,
        "expired",
    ),
    (
        "session_bound_grant_used_from_another_session",
        lambda: exchange(subject=replace(USER_TOKEN, session="sid_2")),
        InvalidGrant,
        "another sign-in session",
    ),
    (
        "session_bound_grant_used_without_a_session",
        lambda: exchange(subject=replace(USER_TOKEN, session=None)),
        InvalidGrant,
        "another sign-in session",
    ),
    (
        "purpose_mismatch_in_the_request",
        lambda: exchange(purpose_code="marketing"),
        InvalidGrant,
        "purpose",
    ),
    (
        "purpose_mismatch_in_the_subject_token",
        lambda: exchange(subject=replace(USER_TOKEN, purpose_code="marketing")),
        InvalidGrant,
        "purpose",
    ),
    (
        "purpose_switch_at_hop_two",
        lambda: exchange(
            subject=next_subject(_hop_one()),
            actor=MAIL,
            grant=make_grant(id="grt_mail", agent="mail-bot", purpose_code="marketing"),
        ),
        InvalidGrant,
        "purpose",
    ),
    (
        "may_act_naming_someone_else",
        lambda: exchange(subject=replace(USER_TOKEN, may_act={"sub": MAIL.spiffe_id})),
        InvalidRequest,
        "may_act",
    ),
    (
        "may_act_without_a_sub",
        lambda: exchange(subject=replace(USER_TOKEN, may_act={"iss": ISSUER})),
        InvalidRequest,
        "may_act",
    ),
    (
        "chain_exceeding_max_depth",
        lambda: exchange(subject=replace(USER_TOKEN, act=nested_act(MAX_DEPTH))),
        InvalidRequest,
        "deeper than 4",
    ),
    (
        "chain_exceeding_max_depth_of_one_at_hop_two",
        lambda: exchange(
            subject=next_subject(_hop_one()), actor=MAIL, grant=MAIL_GRANT, max_depth=1
        ),
        InvalidRequest,
        "deeper than 1",
    ),
    (
        "forged_act_that_is_a_string",
        lambda: exchange(subject=replace(USER_TOKEN, act="spiffe://acme.org/agent/x")),  # type: ignore[arg-type]
        InvalidRequest,
        "malformed act",
    ),
    (
        "forged_act_that_is_a_list",
        lambda: exchange(subject=replace(USER_TOKEN, act=[{"sub": "x"}])),  # type: ignore[arg-type]
        InvalidRequest,
        "malformed act",
    ),
    (
        "forged_act_missing_sub",
        lambda: exchange(subject=replace(USER_TOKEN, act={"client_id": "x"})),
        InvalidRequest,
        "malformed act",
    ),
    (
        "forged_act_with_a_non_string_sub",
        lambda: exchange(subject=replace(USER_TOKEN, act={"sub": 7})),
        InvalidRequest,
        "malformed act",
    ),
    (
        "forged_act_malformed_deep_inside",
        lambda: exchange(
            subject=replace(USER_TOKEN, act={"sub": "a", "act": {"sub": "b", "act": "c"}})
        ),
        InvalidRequest,
        "malformed act",
    ),
    (
        "forged_act_nested_17_deep",
        lambda: exchange(
            subject=replace(USER_TOKEN, act=nested_act(MAX_READ_DEPTH + 1)), max_depth=100
        ),
        InvalidRequest,
        "nested too deep",
    ),
]


@pytest.mark.parametrize(
    ("attack", "error", "message"),
    [pytest.param(run, error, message, id=name) for name, run, error, message in ATTACKS],
)
def test_delegation_attack_is_refused(
    attack: Attack, error: type[OAuthError], message: str
) -> None:
    with pytest.raises(error, match=message):
        attack()


def test_act_chain_reads_16_deep_but_not_17() -> None:
    assert len(act_chain(nested_act(MAX_READ_DEPTH))) == MAX_READ_DEPTH
    with pytest.raises(InvalidRequest, match="nested too deep"):
        act_chain(nested_act(MAX_READ_DEPTH + 1))


def test_act_chain_lists_the_current_actor_first() -> None:
    act = {"sub": "c", "act": {"sub": "b", "act": {"sub": "a"}}}
    assert act_chain(act) == ("c", "b", "a")
    assert act_chain(None) == ()


# -- delegated_claims: what a good exchange gives -------------------------------------------


def test_first_hop_keeps_the_user_as_sub_and_names_the_instance_as_actor() -> None:
    claims = exchange(jti="jti_9")
    assert claims["sub"] == "alice"
    assert claims["act"] == {"sub": SHOP.spiffe_id}
    assert claims["client_id"] == SHOP.agent_spiffe_id
    assert claims["aud"] == AUDIENCE
    assert claims["iss"] == ISSUER
    assert claims["scope"] == "orders:read orders:write"
    assert (claims["grant_id"], claims["purpose"], claims["sid"]) == (
        "grt_shop",
        "order-tracking",
        "sid_1",
    )
    assert (claims["iat"], claims["nbf"], claims["jti"]) == (NOW, NOW, "jti_9")
    assert claims["token_use"] == "delegated"
    assert "prior_grants" not in claims
    assert "cnf" not in claims


def test_second_hop_nests_the_prior_actor_and_carries_the_parents_grants() -> None:
    first = _hop_one()
    second = exchange(subject=next_subject(first), actor=MAIL, grant=MAIL_GRANT)
    assert second["sub"] == "alice"
    assert second["act"] == {"sub": MAIL.spiffe_id, "act": {"sub": SHOP.spiffe_id}}
    assert act_chain(second["act"]) == (MAIL.spiffe_id, SHOP.spiffe_id)
    assert second["prior_grants"] == ["grt_shop"]
    assert second["grant_id"] == "grt_mail"
    assert isinstance(second["aud"], str)
    # Asking for nothing gets the parent's scope, not the wider grant's.
    assert second["scope"] == "orders:read"


def test_the_app_the_person_signed_in_through_is_named_at_every_hop() -> None:
    first = exchange(subject=replace(USER_TOKEN, app="shop-web"))
    assert first["app"] == "shop-web"
    second = exchange(subject=next_subject(first, app=first["app"]), actor=MAIL, grant=MAIL_GRANT)
    assert second["app"] == "shop-web"
    assert "app" not in exchange(), "no app named: none invented"


def test_third_hop_carries_every_earlier_grant_in_order() -> None:
    first = _hop_one()
    second = exchange(subject=next_subject(first), actor=MAIL, grant=MAIL_GRANT)
    third_grant = make_grant(id="grt_ship", agent="ship-bot")
    third = exchange(subject=next_subject(second), actor=instance("ship-bot"), grant=third_grant)
    assert third["prior_grants"] == ["grt_shop", "grt_mail"]
    assert len(act_chain(third["act"])) == 3


@pytest.mark.parametrize(
    ("subject_exp", "grant_exp", "max_ttl", "expected"),
    [
        (NOW + 100, NOW + 3600, 600, NOW + 100),
        (NOW + 900, NOW + 200, 600, NOW + 200),
        (NOW + 900, NOW + 3600, 300, NOW + 300),
        (NOW + 1, NOW + 1, 1, NOW + 1),
    ],
    ids=["subject-token-first", "grant-first", "max-ttl-first", "all-equal"],
)
def test_exp_is_the_earliest_of_subject_grant_and_max_ttl(
    subject_exp: int, grant_exp: int, max_ttl: int, expected: int
) -> None:
    claims = exchange(
        subject=replace(USER_TOKEN, expires_at=subject_exp),
        grant=make_grant(expires_at=grant_exp),
        max_ttl=max_ttl,
    )
    assert claims["exp"] == expected


def test_a_grant_for_any_session_serves_every_session() -> None:
    grant = make_grant(session=None)
    claims = exchange(subject=replace(USER_TOKEN, session="sid_other"), grant=grant)
    assert claims["sid"] == "sid_other"


@pytest.mark.parametrize("named", [SHOP.spiffe_id, SHOP.agent_spiffe_id], ids=["instance", "agent"])
def test_may_act_naming_the_instance_or_its_agent_is_accepted(named: str) -> None:
    exchange(subject=replace(USER_TOKEN, may_act={"sub": named}))


def test_the_actors_certificate_confirmation_is_carried() -> None:
    cnf = {"x5t#S256": "abc"}
    assert exchange(actor=replace(SHOP, cnf=cnf))["cnf"] == cnf


def test_a_chain_of_exactly_max_depth_is_allowed() -> None:
    claims = exchange(subject=replace(USER_TOKEN, act=nested_act(MAX_DEPTH - 1)))
    assert len(act_chain(claims["act"])) == MAX_DEPTH


# -- parse_exchange_request ----------------------------------------------------------------

BASE = {"subject_token": "eyJ.subject.token", "subject_token_type": ACCESS_TOKEN_TYPE}
ACTOR_PARAMS = {"actor_token": "eyJ.actor.token", "actor_token_type": JWT_TOKEN_TYPE}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"subject_token_type": ACCESS_TOKEN_TYPE}, "required"),
        ({"subject_token": "eyJ.x.y"}, "required"),
        ({"subject_token": "", "subject_token_type": ACCESS_TOKEN_TYPE}, "required"),
        (BASE | {"subject_token_type": "urn:ietf:params:oauth:token-type:saml2"}, "subject"),
        (
            BASE | {"subject_token_type": "urn:ietf:params:oauth:token-type:refresh_token"},
            "subject",
        ),
        (BASE | {"actor_token": "eyJ.actor.token"}, "go together"),
        (BASE | {"actor_token_type": JWT_TOKEN_TYPE}, "go together"),
        (BASE | ACTOR_PARAMS | {"actor_token_type": ACCESS_TOKEN_TYPE}, "unsupported actor"),
        (BASE | {"subject_token": "x" * (MAX_TOKEN + 1)}, "at most"),
        (BASE | ACTOR_PARAMS | {"actor_token": "x" * (MAX_TOKEN + 1)}, "at most"),
        (BASE | {"requested_token_type": "urn:x:saml"}, "requested_token_type"),
    ],
    ids=[
        "missing-subject-token",
        "missing-subject-token-type",
        "empty-subject-token",
        "saml-as-subject",
        "refresh-token-as-subject",
        "actor-token-without-type",
        "actor-type-without-token",
        "actor-token-that-is-not-a-jwt",
        "oversized-subject-token",
        "oversized-actor-token",
        "unsupported-requested-type",
    ],
)
def test_a_malformed_exchange_request_is_refused(params: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_exchange_request(params, {})


def test_a_scope_with_a_quote_is_invalid_scope() -> None:
    with pytest.raises(InvalidScope):
        parse_exchange_request(BASE | {"scope": 'orders:read "x"'}, {})


def test_a_full_exchange_request_is_read() -> None:
    request = parse_exchange_request(
        BASE
        | ACTOR_PARAMS
        | {
            "scope": "orders:read  orders:write",
            "requested_token_type": JWT_TOKEN_TYPE,
            "grant_id": "grt_shop",
            "purpose": "order-tracking",
        },
        {"audience": ["https://a", "https://b"], "resource": ["https://a", "https://c"]},
    )
    assert request.subject_token == BASE["subject_token"]
    assert request.actor_token == ACTOR_PARAMS["actor_token"]
    assert request.actor_token_type == JWT_TOKEN_TYPE
    assert request.scope == frozenset({"orders:read", "orders:write"})
    assert request.audience == ("https://a", "https://b", "https://c")
    assert (request.grant_id, request.purpose_code) == ("grt_shop", "order-tracking")
    assert request.requested_token_type == JWT_TOKEN_TYPE


def test_a_minimal_exchange_request_leaves_the_rest_unset() -> None:
    request = parse_exchange_request(BASE | {"grant_id": "", "purpose": ""}, {})
    assert request.actor_token is None
    assert request.actor_token_type is None
    assert request.scope is None
    assert request.audience == ()
    assert request.grant_id is None
    assert request.purpose_code is None


def test_an_empty_scope_parameter_is_treated_as_omitted() -> None:
    assert parse_exchange_request(BASE | {"scope": ""}, {}).scope is None


def test_empty_actor_token_parameters_are_treated_as_omitted() -> None:
    request = parse_exchange_request(BASE | {"actor_token": "", "actor_token_type": ""}, {})
    assert request.actor_token is None


def test_an_empty_requested_token_type_is_treated_as_omitted() -> None:
    assert (
        parse_exchange_request(BASE | {"requested_token_type": ""}, {}).requested_token_type is None
    )


# -- stateful: random delegation chains ----------------------------------------------------

UNIVERSE = ("orders:read", "orders:write", "profile", "billing:read")
AGENTS = ("shop-bot", "mail-bot", "ship-bot", "pay-bot")
SESSION = "sid_1"
PURPOSE = "order-tracking"


class DelegationChains(RuleBasedStateMachine):
    """Hop after hop from one user token; each hop asks for a random subset of scopes under a
    random grant, at a random later time. A hop the rules allow must succeed with the
    invariants; a hop they refuse must raise the error of (one of) the broken rules."""

    def __init__(self) -> None:
        super().__init__()
        self.subject = USER_TOKEN
        self.now = NOW
        self.hops = 0
        self.attempts = 0
        self.last: dict[str, Any] | None = None
        self.max_depth = MAX_DEPTH

    @initialize(
        scopes=st.frozensets(st.sampled_from(UNIVERSE), min_size=1),
        ttl=st.integers(60, 7200),
        max_depth=st.integers(1, 8),
    )
    def sign_in(self, scopes: frozenset[str], ttl: int, max_depth: int) -> None:
        self.max_depth = max_depth  # the configured limit, 1 to 8 (the issue's range)
        self.subject = SubjectToken(
            user="alice", scopes=scopes, expires_at=NOW + ttl, session=SESSION
        )

    @precondition(lambda self: self.attempts < 8)
    @rule(
        data=st.data(),
        agent=st.sampled_from(AGENTS),
        extra_scopes=st.frozensets(st.sampled_from(UNIVERSE)),
        grant_ttl=st.integers(1, 7200),
        bound=st.booleans(),
        max_ttl=st.integers(1, 3600),
        wait=st.integers(0, 30),
    )
    def hop(
        self,
        data: st.DataObject,
        agent: str,
        extra_scopes: frozenset[str],
        grant_ttl: int,
        bound: bool,
        max_ttl: int,
        wait: int,
    ) -> None:
        self.attempts += 1
        self.now += wait
        parent = self.subject
        assert parent.scopes is not None  # Tether's own tokens always say their scopes
        # Mostly a grant that covers some of the parent's scopes, sometimes one that does not.
        kept = data.draw(st.frozensets(st.sampled_from(sorted(parent.scopes))), label="kept")
        grant_scopes = (kept | extra_scopes) or extra_scopes or frozenset(UNIVERSE)
        grant = make_grant(
            id=f"grt_{self.attempts}",
            agent=agent,
            scopes=grant_scopes,
            purpose_code=PURPOSE,
            session=SESSION if bound else None,
            expires_at=self.now + grant_ttl,
        )
        allowed = grant.scopes & parent.scopes
        requested = data.draw(
            st.one_of(
                st.none(),
                st.frozensets(st.sampled_from(sorted(allowed)), min_size=1)
                if allowed
                else st.just(frozenset[str]()),
                st.frozensets(st.sampled_from(UNIVERSE)),
            ),
            label="requested",
        )
        actor = instance(agent, self.attempts)
        expected: set[type[OAuthError]] = set()
        if self.hops + 1 > self.max_depth:
            expected.add(InvalidRequest)
        granted = allowed if requested is None else requested
        if not granted or not granted <= allowed:
            expected.add(InvalidScope)
        if min(parent.expires_at, grant.expires_at.timestamp(), self.now + max_ttl) <= self.now:
            expected.add(InvalidGrant)
        refused: OAuthError | None = None
        try:
            claims = delegated_claims(
                subject=parent,
                actor=actor,
                grant=grant,
                scope=requested,
                audience=AUDIENCE,
                now=self.now,
                max_ttl=max_ttl,
                max_depth=self.max_depth,
                issuer=ISSUER,
                jti=f"jti_{self.attempts}",
            )
        except OAuthError as exc:
            refused = exc
        if refused is not None:
            assert expected, f"refused a hop the rules allow: {refused!r}"
            assert type(refused) in expected, (refused, expected)
            return
        assert not expected, f"allowed a hop the rules refuse: {expected}"
        self.hops += 1
        issued = frozenset(claims["scope"].split())
        assert issued, "a delegated token with no scope"
        assert issued <= parent.scopes
        assert issued <= grant.scopes
        assert isinstance(claims["aud"], str)
        assert claims["aud"] == AUDIENCE
        assert self.now < claims["exp"] <= parent.expires_at
        assert claims["exp"] <= grant.expires_at.timestamp()
        assert claims["exp"] <= self.now + max_ttl
        assert claims["sub"] == "alice"
        chain = act_chain(claims["act"])
        assert chain[0] == actor.spiffe_id
        assert len(chain) == self.hops
        assert claims.get("prior_grants", []) == list(parent.grants)
        assert claims["grant_id"] == grant.id
        self.last = claims
        self.subject = SubjectToken(
            user=claims["sub"],
            scopes=frozenset(claims["scope"].split()),
            expires_at=claims["exp"],
            session=claims.get("sid"),
            act=claims["act"],
            grants=(*claims.get("prior_grants", []), claims["grant_id"]),
            purpose_code=claims["purpose"],
        )

    @rule(seconds=st.integers(1, 900))
    def time_passes(self, seconds: int) -> None:
        self.now += seconds

    @invariant()
    def chain_never_exceeds_max_depth(self) -> None:
        assert self.hops <= self.max_depth
        assert len(act_chain(self.subject.act)) == self.hops
        assert len(self.subject.grants) == self.hops


DelegationChains.TestCase.settings = settings(
    max_examples=50, stateful_step_count=10, deadline=None
)
test_random_delegation_chains_only_narrow = DelegationChains.TestCase

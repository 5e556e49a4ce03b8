"""CIBA rules (tether.delegation.ciba), attacked: each refusal is named after the rule it pins;
a stateful test walks random polls and answers and holds the invariants every step."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tests.support.calls import CALLS, FEE, TRANSFER, TRANSFER_CALL, digest, item, tool_call
from tether.delegation.ciba import (
    APPROVAL_TOKEN_TTL,
    MAX_BINDING_MESSAGE,
    MAX_DETAILS,
    answer,
    approval_claims,
    auth_req_key,
    bound_approval,
    new_auth_req_id,
    parse_backchannel_request,
    poll,
    redeemed,
)
from tether.delegation.models import Approval, ApprovalState
from tether.errors import (
    AccessDenied,
    AuthorizationPending,
    Conflict,
    ExpiredToken,
    Forbidden,
    InvalidAuthorizationDetails,
    InvalidBindingMessage,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    SlowDown,
)

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
CLIENT = "spiffe://acme.org/agent/bank-bot/instance/pod-1"
OTHER_CLIENT = "spiffe://acme.org/agent/bank-bot/instance/pod-2"
SUBSTITUTED = digest(tool_call("transfer", amount=10_000, to="mallory"))


def details(*digests: str) -> str:
    return json.dumps([item(CALLS[d], amount="100.00") for d in digests])


def one(**changes: Any) -> str:
    """A single item approving the transfer, with ``changes`` (``None``: the field removed)."""
    fields = item(TRANSFER_CALL) | changes
    return json.dumps([{k: v for k, v in fields.items() if v is not None}])


def form(**fields: str) -> dict[str, str]:
    base = {"login_hint": "alice", "scope": "openid", "authorization_details": details(TRANSFER)}
    return {k: v for k, v in (base | fields).items() if v is not None}


def parse(**fields: Any) -> Any:
    return parse_backchannel_request(form(**fields), max_expiry=600, default_expiry=300)


def pending(*digests: str, interval: int = 5, expiry: int = 300) -> Approval:
    items = json.loads(details(*(digests or (TRANSFER,))))
    return Approval(
        id="apr_test",
        auth_req_key=auth_req_key("req"),
        client=CLIENT,
        agent="bank-bot",
        user="alice",
        scope=frozenset({"openid"}),
        binding_message="ABC-123",
        details=tuple(items),
        created_at=T0,
        expires_at=T0 + timedelta(seconds=expiry),
        interval=interval,
    )


def later(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- the request -------------------------------------------------------------------------------


def test_ciba_request_with_two_hints_is_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="exactly one"):
        parse(id_token_hint="eyJ...")


def test_ciba_request_without_a_hint_is_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="exactly one"):
        parse(login_hint="")


def test_ciba_request_without_openid_scope_is_invalid_scope() -> None:
    with pytest.raises(InvalidScope, match="openid"):
        parse(scope="payments")


def test_ciba_request_without_authorization_details_is_refused() -> None:
    with pytest.raises(InvalidAuthorizationDetails, match="required"):
        parse(authorization_details="")


@pytest.mark.parametrize(
    "value",
    [
        "not json",
        "{}",
        "[]",
        json.dumps(["a string"]),
        one(type=None),
        one(type=""),
        one(call=None),
        one(call_digest=None, call={"action": "call_tool"}),
        one(call={**TRANSFER_CALL, "resource": {"type": "Tool"}}),
        one(call={**TRANSFER_CALL, "resource": {"type": "Tool", "id": 7}}),
        one(call={**TRANSFER_CALL, "extra": 1}),
        one(call={**TRANSFER_CALL, "action": ""}),
        one(call_digest="sha256:abc"),
        json.dumps([item(TRANSFER_CALL)] * (MAX_DETAILS + 1)),
        json.dumps([item(TRANSFER_CALL, pad="x" * 9000)]),
        json.dumps([item(TRANSFER_CALL, deep=json.loads("[" * 40 + "]" * 40))]),
        "[" * 5000 + "]" * 5000,
        json.dumps([item(TRANSFER_CALL, amount="10\x1b[8m00000")]),
        json.dumps([item(TRANSFER_CALL, creditor="bob\u202emallory")]),
        json.dumps([item(TRANSFER_CALL, type="payment\ninitiation")]),
    ],
)
def test_ciba_authorization_details_not_bound_to_an_exact_call_are_refused(value: str) -> None:
    with pytest.raises(InvalidAuthorizationDetails):
        parse(authorization_details=value)


@pytest.mark.parametrize(
    "message", ["x" * (MAX_BINDING_MESSAGE + 1), "pay\nnow", "a\u202eb", "tab\there", "\x00"]
)
def test_ciba_binding_message_a_device_cannot_show_plainly_is_refused(message: str) -> None:
    with pytest.raises(InvalidBindingMessage):
        parse(binding_message=message)


def test_ciba_an_items_digest_is_computed_from_its_call_never_taken_on_trust() -> None:
    # The agent shows the person "100 to bob" but sends the digest of another call: refused.
    with pytest.raises(InvalidAuthorizationDetails, match="not the digest of its call"):
        parse(authorization_details=one(call_digest=SUBSTITUTED))
    # Without a digest, Tether computes it: the checkpoint's digest for the same call.
    request = parse(authorization_details=one(call_digest=None))
    assert request.details[0]["call_digest"] == TRANSFER
    assert request.details[0]["call"] == TRANSFER_CALL


def test_ciba_request_keeps_the_items_the_hint_and_a_plain_binding_message() -> None:
    request = parse(binding_message="Überweisung ABC-123 ✓", requested_expiry="120")
    assert (request.hint, request.hint_value) == ("login_hint", "alice")
    assert [d["call_digest"] for d in request.details] == [TRANSFER]
    assert request.details[0]["amount"] == "100.00"  # the operation, shown to the user
    assert request.binding_message == "Überweisung ABC-123 ✓"
    assert request.expires_in == 120


@pytest.mark.parametrize(("asked", "granted"), [(None, 300), ("9999", 600), ("1", 1)])
def test_ciba_requested_expiry_is_bounded_by_the_servers_maximum(
    asked: str | None, granted: int
) -> None:
    assert parse(requested_expiry=asked).expires_in == granted


@pytest.mark.parametrize("asked", ["0", "-5", "ten", "1.5"])
def test_ciba_requested_expiry_that_is_not_a_positive_integer_is_refused(asked: str) -> None:
    with pytest.raises(InvalidRequest, match="requested_expiry"):
        parse(requested_expiry=asked)


def test_ciba_auth_req_id_has_at_least_128_random_bits_and_only_its_hash_is_kept() -> None:
    ids = {new_auth_req_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) >= 43 for i in ids)  # 256 bits in URL-safe base64
    one = next(iter(ids))
    assert auth_req_key(one) != one
    assert len(auth_req_key(one)) == 64
    assert auth_req_key(one) == auth_req_key(one)


# -- polling -----------------------------------------------------------------------------------


def test_ciba_poll_before_the_user_answers_gets_authorization_pending() -> None:
    result = poll(pending(), client=CLIENT, now=later(1))
    assert isinstance(result.error, AuthorizationPending)
    assert result.approval.last_polled_at == later(1)


def test_ciba_poll_faster_than_interval_gets_slow_down() -> None:
    first = poll(pending(interval=5), client=CLIENT, now=later(1)).approval
    again = poll(first, client=CLIENT, now=later(3))
    assert isinstance(again.error, SlowDown)
    # Hammering keeps being slowed down: each poll counts from itself.
    assert isinstance(poll(again.approval, client=CLIENT, now=later(7)).error, SlowDown)
    assert isinstance(poll(again.approval, client=CLIENT, now=later(8)).error, AuthorizationPending)


def test_ciba_poll_by_another_client_is_invalid_grant_and_reveals_nothing() -> None:
    approval = answer(pending(), user="alice", approve=[0], now=later(1))
    result = poll(approval, client=OTHER_CLIENT, now=later(2))
    assert isinstance(result.error, InvalidGrant)
    assert result.approval == approval  # its poll time is the asker's alone


def test_ciba_poll_after_expiry_gets_expired_token_even_when_approved() -> None:
    approved = answer(pending(expiry=60), user="alice", approve=[0], now=later(10))
    assert isinstance(poll(approved, client=CLIENT, now=later(60)).error, ExpiredToken)
    assert isinstance(poll(pending(expiry=60), client=CLIENT, now=later(61)).error, ExpiredToken)


def test_ciba_poll_after_a_refusal_gets_access_denied() -> None:
    refused = answer(pending(), user="alice", approve=None, now=later(1))
    assert refused.state is ApprovalState.DENIED
    assert isinstance(poll(refused, client=CLIENT, now=later(2)).error, AccessDenied)


def test_ciba_redeemed_auth_req_id_cannot_be_redeemed_again() -> None:
    approved = answer(pending(), user="alice", approve=[0], now=later(1))
    result = poll(approved, client=CLIENT, now=later(2))
    assert result.ready
    used = redeemed(result.approval, now=later(2))
    again = poll(used, client=CLIENT, now=later(30))
    assert isinstance(again.error, InvalidGrant)
    with pytest.raises(InvalidGrant):
        redeemed(used, now=later(30))


# -- the user's answer -------------------------------------------------------------------------


def test_ciba_only_the_user_asked_may_answer() -> None:
    with pytest.raises(Forbidden):
        answer(pending(), user="mallory", approve=[0], now=later(1))


def test_ciba_a_request_is_answered_once() -> None:
    refused = answer(pending(), user="alice", approve=None, now=later(1))
    with pytest.raises(Conflict, match="answered already"):
        answer(refused, user="alice", approve=[0], now=later(2))


def test_ciba_an_answer_after_expiry_is_refused_a_timeout_is_a_denial() -> None:
    with pytest.raises(Conflict, match="expired"):
        answer(pending(expiry=30), user="alice", approve=[0], now=later(30))


def test_ciba_approving_an_item_the_request_does_not_hold_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="items 0 to 0"):
        answer(pending(), user="alice", approve=[1], now=later(1))


def test_ciba_partial_approval_token_carries_only_the_approved_items() -> None:
    approval = answer(pending(TRANSFER, FEE), user="alice", approve=[1], now=later(1))
    claims = approval_claims(
        approval, now=1_800_000_000, issuer="https://t", audience="https://t", jti="j", ttl=60
    )
    assert [d["call_digest"] for d in claims["authorization_details"]] == [FEE]
    assert bound_approval(claims, call_digest=FEE, instance=CLIENT, user="alice") is not None
    assert bound_approval(claims, call_digest=TRANSFER, instance=CLIENT, user="alice") is None


def test_ciba_approval_token_names_the_approver_and_the_approval_and_is_short_lived() -> None:
    approval = answer(pending(), user="alice", approve=[0], now=later(1))
    claims = approval_claims(
        approval, now=1_800_000_000, issuer="https://t", audience="https://t", jti="j", ttl=3600
    )
    assert claims["approver"] == "alice"
    assert claims["approval_id"] == "apr_test"
    assert claims["sub"] == "alice"
    assert claims["act"] == {"sub": CLIENT}
    assert claims["token_use"] == "approval"
    assert claims["jti"] == "j"
    assert claims["exp"] - claims["iat"] == APPROVAL_TOKEN_TTL


def test_ciba_a_pending_or_refused_request_gives_no_token() -> None:
    for approval in (pending(), answer(pending(), user="alice", approve=[], now=later(1))):
        with pytest.raises(InvalidGrant):
            approval_claims(approval, now=1, issuer="i", audience="a", jti="j", ttl=60)


# -- binding to the call -----------------------------------------------------------------------


def _claims(**changes: Any) -> dict[str, Any]:
    approval = answer(pending(), user="alice", approve=[0], now=later(1))
    claims = approval_claims(approval, now=1, issuer="i", audience="a", jti="j", ttl=60)
    return claims | changes


def test_ciba_approval_for_one_call_never_authorizes_a_substituted_call() -> None:
    assert bound_approval(_claims(), call_digest=SUBSTITUTED, instance=CLIENT, user="alice") is None
    proven = bound_approval(_claims(), call_digest=TRANSFER, instance=CLIENT, user="alice")
    assert proven == {"id": "apr_test", "call_digest": TRANSFER, "approver": "alice"}


def test_ciba_approval_given_to_one_instance_does_not_serve_another() -> None:
    assert bound_approval(_claims(), call_digest=TRANSFER, instance=OTHER_CLIENT, user=None) is None


def test_ciba_approval_of_one_user_does_not_serve_a_call_for_another() -> None:
    assert bound_approval(_claims(), call_digest=TRANSFER, instance=CLIENT, user="bob") is None


def test_ciba_a_token_that_is_not_an_approval_proves_no_approval() -> None:
    forged = _claims(token_use="delegated")
    assert bound_approval(forged, call_digest=TRANSFER, instance=CLIENT, user="alice") is None


# -- random walks ------------------------------------------------------------------------------


class ApprovalWalk(RuleBasedStateMachine):
    """Random polls (by the asker and by another client), answers and redemptions over time:
    a token is given at most once, only to the asker, only for approved items, only in time."""

    def __init__(self) -> None:
        super().__init__()
        self.approval = pending(TRANSFER, FEE, interval=5, expiry=120)
        self.now = T0
        self.tokens: list[tuple[datetime, tuple[int, ...]]] = []

    @rule(seconds=st.integers(min_value=0, max_value=40))
    def wait(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    @rule(approve=st.one_of(st.none(), st.lists(st.integers(0, 1), max_size=2)))
    def user_answers(self, approve: list[int] | None) -> None:
        try:
            self.approval = answer(self.approval, user="alice", approve=approve, now=self.now)
        except Conflict:
            assert self.approval.state is not ApprovalState.PENDING or self.approval.expired(
                self.now
            )

    @rule(asker=st.booleans())
    def client_polls(self, asker: bool) -> None:
        result = poll(self.approval, client=CLIENT if asker else OTHER_CLIENT, now=self.now)
        if result.ready:
            assert asker
            claims = approval_claims(
                result.approval, now=1, issuer="i", audience="a", jti="j", ttl=60
            )
            assert len(claims["authorization_details"]) == len(result.approval.approved)
            self.tokens.append((self.now, result.approval.approved))
            self.approval = redeemed(result.approval, now=self.now)
        else:
            self.approval = result.approval

    @invariant()
    def a_token_at_most_once_in_time_for_approved_items(self) -> None:
        assert len(self.tokens) <= 1
        for when, approved in self.tokens:
            assert when < self.approval.expires_at
            assert approved
            assert set(approved) <= {0, 1}


TestApprovalWalk = ApprovalWalk.TestCase
TestApprovalWalk.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)


def test_ciba_a_refused_walk_still_ends_refused_when_polled_by_the_asker() -> None:
    refused = answer(pending(), user="alice", approve=None, now=later(1))
    later_poll = poll(replace(refused, last_polled_at=None), client=CLIENT, now=later(200))
    assert isinstance(later_poll.error, AccessDenied)

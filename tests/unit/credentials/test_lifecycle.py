"""Lease state rules (tether.credentials.lifecycle): pure functions, no engine, no store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.credentials import lifecycle
from tether.credentials.models import EndKind, Lease, LeaseState
from tether.errors import InvalidInput, InvalidTransition, LeaseMaxTtl

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _lease(*, ttl: int = 60, max_ttl: int = 600) -> Lease:
    return lifecycle.new_lease(
        id="lea_1",
        engine="pg",
        role="ro",
        credential="tether_lea_1",
        agent="faq-bot",
        instance="i-1",
        now=NOW,
        ttl=ttl,
        max_ttl=max_ttl,
    )


def _active(**kwargs: int) -> Lease:
    return lifecycle.activated(_lease(**kwargs), now=NOW)


def _at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def test_new_lease_is_issuing_until_the_engine_created_it() -> None:
    lease = _lease()
    assert lease.state is LeaseState.ISSUING
    assert lease.live
    assert not lease.usable(NOW)
    assert lifecycle.activated(lease, now=NOW).usable(NOW)


@pytest.mark.parametrize("ttl", [0, -1, True, 601])
def test_lease_ttl_must_be_positive_and_within_the_max(ttl: int) -> None:
    with pytest.raises(InvalidInput, match="ttl"):
        _lease(ttl=ttl)


def test_lease_is_not_usable_at_its_expiry() -> None:
    lease = _active(ttl=60)
    assert lease.usable(_at(59.999))
    assert not lease.usable(_at(60))


def test_lease_renew_moves_expiry_from_now() -> None:
    renewed = lifecycle.renew(_active(ttl=60), now=_at(50), ttl=60)
    assert renewed.expires_at == _at(110)
    assert renewed.renewals == 1
    assert renewed.version == 3


def test_lease_renew_past_max_ttl_is_capped_then_refused() -> None:
    capped = lifecycle.renew(_active(ttl=60, max_ttl=120), now=_at(50), ttl=100)
    assert capped.expires_at == capped.max_expires_at == _at(120)
    with pytest.raises(LeaseMaxTtl):
        lifecycle.renew(capped, now=_at(60), ttl=100)


def test_lease_renew_asking_more_than_the_max_ttl_is_invalid() -> None:
    with pytest.raises(InvalidInput, match="max ttl"):
        lifecycle.renew(_active(ttl=60, max_ttl=120), now=_at(1), ttl=121)


def test_expired_lease_does_not_renew() -> None:
    with pytest.raises(InvalidTransition, match="expired"):
        lifecycle.renew(_active(ttl=60), now=_at(60), ttl=30)


@pytest.mark.parametrize("state", [LeaseState.ISSUING, LeaseState.REVOKING, LeaseState.REVOKED])
def test_only_an_active_lease_renews(state: LeaseState) -> None:
    lease = _lease() if state is LeaseState.ISSUING else _ending(state)
    with pytest.raises(InvalidTransition):
        lifecycle.renew(lease, now=_at(1), ttl=30)


def _ending(state: LeaseState = LeaseState.REVOKING, kind: EndKind = EndKind.REVOKED) -> Lease:
    ending = lifecycle.begin_end(
        _active(), now=_at(1), kind=kind, reason="done", claim_until=_at(31)
    )
    if state is LeaseState.REVOKED:
        return lifecycle.ended(ending, now=_at(2))
    return ending


def test_ending_keeps_its_first_reason_and_only_renews_the_hold() -> None:
    first = _ending()
    again = lifecycle.begin_end(
        first, now=_at(40), kind=EndKind.EXPIRED, reason="ttl", claim_until=_at(70)
    )
    assert (again.ending, again.reason) == (EndKind.REVOKED, "done")
    assert again.claimed_until == _at(70)


@pytest.mark.parametrize(
    ("kind", "final"),
    [
        (EndKind.EXPIRED, LeaseState.EXPIRED),
        (EndKind.REVOKED, LeaseState.REVOKED),
        (EndKind.FAILED, LeaseState.REVOKED),
    ],
)
def test_ended_lease_says_whether_its_ttl_or_a_revocation_ended_it(
    kind: EndKind, final: LeaseState
) -> None:
    done = lifecycle.ended(_ending(kind=kind), now=_at(2))
    assert done.state is final
    assert not done.live
    assert done.ended_at == _at(2)
    assert done.claimed_until is None


def test_ended_lease_cannot_start_ending_again() -> None:
    with pytest.raises(InvalidTransition, match="ended"):
        lifecycle.begin_end(
            _ending(LeaseState.REVOKED),
            now=_at(3),
            kind=EndKind.REVOKED,
            reason=None,
            claim_until=_at(4),
        )


def test_failed_revocation_backs_off_then_becomes_irrevocable_and_is_still_retried() -> None:
    policy = lifecycle.RetryPolicy(base=1.0, cap=8.0, max_attempts=4)
    lease = _ending()
    delays = []
    for n in range(1, 6):
        now = _at(100 * n)
        lease = lifecycle.revocation_failed(lease, now=now, error="boom", policy=policy)
        assert lease.next_attempt_at is not None
        delays.append((lease.next_attempt_at - now).total_seconds())
        assert lease.state is (LeaseState.IRREVOCABLE if n >= 4 else LeaseState.REVOKING)
        assert lease.live
        assert lease.claimed_until is None
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert lifecycle.ended(lease, now=_at(999)).state is LeaseState.REVOKED


def test_revocation_failure_of_a_lease_not_ending_is_refused() -> None:
    with pytest.raises(InvalidTransition):
        lifecycle.revocation_failed(
            _active(), now=_at(1), error="x", policy=lifecycle.RetryPolicy()
        )


@given(
    ttl=st.integers(min_value=1, max_value=3600),
    extra=st.integers(min_value=0, max_value=3600),
    steps=st.lists(
        st.tuples(st.integers(min_value=0, max_value=4000), st.integers(1, 7200)), max_size=8
    ),
)
def test_renewals_never_move_expiry_back_nor_past_max_ttl(
    ttl: int, extra: int, steps: list[tuple[int, int]]
) -> None:
    max_ttl = ttl + extra
    lease = _active(ttl=ttl, max_ttl=max_ttl)
    clock = 0.0
    for wait, asked in steps:
        clock += wait
        before = lease.expires_at
        try:
            lease = lifecycle.renew(lease, now=_at(clock), ttl=asked)
        except (InvalidInput, InvalidTransition, LeaseMaxTtl):
            continue
        assert before < lease.expires_at <= lease.max_expires_at == _at(max_ttl)

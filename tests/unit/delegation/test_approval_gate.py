"""An approval token lets each approved call through once, for as long as the token verifies:
the spend of :class:`tether.delegation.approval_gate.ApprovalGate` on the memory store's replay
keys, on a clock the test moves."""

from __future__ import annotations

from datetime import UTC, datetime

from tether._internal.clock import FixedClock
from tether.delegation.approval_gate import ApprovalGate
from tether.delegation.tokens import ProvenApproval
from tether.identity.svid import VERIFY_LEEWAY
from tether.policy.engine import APPROVAL
from tether.policy.models import Decision, Effect
from tether.store.memory import MemoryStore

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
ALLOW = Decision(effect=Effect.ALLOW, obligations=(APPROVAL,))


def approval(digest: str = "sha256:" + "a" * 64, *, ttl: int = 120) -> ProvenApproval:
    return ProvenApproval(
        id="apr_1", approver="alice", call_digest=digest, jti="jti_1",
        expires_at=int(T0.timestamp()) + ttl,
    )  # fmt: skip


def gate(clock: FixedClock) -> ApprovalGate:
    # The spend reads the replay keys only: no token is verified here.
    return ApprovalGate(tokens=None, replay=MemoryStore(clock=clock))  # type: ignore[arg-type]


async def test_an_approval_spent_just_before_exp_stays_spent_while_it_still_verifies() -> None:
    clock = FixedClock(T0)
    spending = gate(clock)
    clock.advance(119)
    assert (await spending.spend(approval(), ALLOW)).allowed
    # Past exp, but within the leeway the token is still verified with: still spent.
    clock.advance(1 + VERIFY_LEEWAY)
    assert not (await spending.spend(approval(), ALLOW)).allowed


async def test_each_approved_call_of_one_token_goes_through_once() -> None:
    spending = gate(FixedClock(T0))
    first, second = approval("sha256:" + "1" * 64), approval("sha256:" + "2" * 64)
    assert (await spending.spend(first, ALLOW)).allowed
    assert (await spending.spend(second, ALLOW)).allowed
    assert not (await spending.spend(first, ALLOW)).allowed
    assert not (await spending.spend(second, ALLOW)).allowed


async def test_an_allow_that_did_not_need_the_approval_does_not_spend_it() -> None:
    spending = gate(FixedClock(T0))
    plain = Decision(effect=Effect.ALLOW)
    assert (await spending.spend(approval(), plain)).allowed
    assert (await spending.spend(approval(), ALLOW)).allowed
    refused = Decision.deny("no")
    assert not (await spending.spend(approval(), refused)).allowed

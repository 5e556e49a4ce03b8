"""The checkpoint's side of approvals (OpenID CIBA, :mod:`tether.delegation.approvals`): which
approval an approval token proves for one exact call, and its single use.

Example::

    gate = ApprovalGate(tokens=access_tokens, replay=store)
    proven = await gate.proven(token, call_digest=digest, caller=caller, user="alice")
    decision = await gate.spend(proven, decision)   # a deny if it was spent already
"""

from __future__ import annotations

from datetime import UTC, datetime

from tether.delegation.tokens import AccessTokens, ProvenApproval
from tether.errors import ReplayDetected, Unauthenticated
from tether.identity.svid import VERIFY_LEEWAY, AgentCaller
from tether.policy.engine import APPROVAL
from tether.policy.models import Decision
from tether.store.interfaces import ReplayStore

__all__ = ["ApprovalGate"]


class ApprovalGate:
    """The checkpoint's side of approvals: which approval an approval token proves for one
    exact call, and its single use — spent by the call it lets through, and only then (a
    call refused for another reason leaves the approval for the call it was meant for)."""

    def __init__(self, *, tokens: AccessTokens, replay: ReplayStore) -> None:
        self._tokens = tokens
        self._replay = replay

    async def proven(
        self, token: str | None, *, call_digest: str, caller: AgentCaller, user: str | None
    ) -> ProvenApproval | None:
        """``None`` without a token; ``Unauthenticated`` for one that does not approve this
        exact call by this instance — for ``user`` when the call is made for one, else
        approved by one of the agent's owners."""
        if token is None:
            return None
        proven = await self._tokens.approval(
            token, call_digest=call_digest, instance=caller.spiffe_id, user=user
        )
        if user is None and proven.approver not in caller.agent.owners:
            raise Unauthenticated("an agent's own call is approved by one of its owners")
        return proven

    async def spend(self, approval: ProvenApproval | None, decision: Decision) -> Decision:
        """``decision``, unless it is an allow that needed ``approval`` and the approval was
        spent already (by a call with the same token, here or on another replica)."""
        if approval is None or not decision.allowed or APPROVAL not in decision.obligations:
            return decision
        # Kept until the token cannot verify any more: past its exp by the leeway it is
        # verified with (else it would pass again once the key expired).
        expires = datetime.fromtimestamp(approval.expires_at + VERIFY_LEEWAY + 1, tz=UTC)
        # One call per approved item: an approval of several items lets each through once.
        key = f"approval:{approval.jti}:{approval.call_digest}"
        try:
            await self._replay.consume_once(key, expires_at=expires)
        except ReplayDetected:
            why = "the approval was used already: an approval lets one call through"
            return Decision.deny(why, policy_version=decision.policy_version)
        return decision

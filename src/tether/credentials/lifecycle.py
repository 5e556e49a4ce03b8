"""Lease state transitions: pure functions over values and a time, no I/O.

Every rule of a lease's life is here, so it is tested without a database or an engine: a TTL
is positive and at most the role's max TTL; a renewal moves the expiry forward but never past
``max_expires_at`` (fixed at issuance: renewals cannot stretch a lease forever); only an active,
unexpired lease renews; ending is one way; a failed revocation is retried with exponential
backoff and, after ``max_attempts``, the lease is marked irrevocable (and still retried, at the
slowest pace) — never silently forgotten.

Example::

    >>> from datetime import UTC, datetime, timedelta
    >>> now = datetime(2026, 1, 1, tzinfo=UTC)
    >>> lease = new_lease(id="lea_1", engine="pg", role="ro", credential="tether_1",
    ...                   agent="faq", instance="i1", now=now, ttl=60, max_ttl=120)
    >>> renewed = renew(activated(lease, now=now), now=now + timedelta(seconds=50), ttl=100)
    >>> renewed.expires_at - now   # capped at the max TTL
    datetime.timedelta(seconds=120)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from tether.credentials.models import EndKind, Lease, LeaseState
from tether.errors import InvalidInput, InvalidTransition, LeaseMaxTtl

__all__ = [
    "RetryPolicy",
    "activated",
    "begin_end",
    "check_ttl",
    "ended",
    "new_lease",
    "renew",
    "revocation_failed",
]


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How a failed revocation is retried: after ``base`` seconds, doubling up to ``cap``;
    after ``max_attempts`` failures the lease is irrevocable (retried every ``cap``)."""

    base: float = 1.0
    cap: float = 300.0
    max_attempts: int = 8

    def delay(self, attempts: int) -> float:
        return float(min(self.cap, self.base * 2 ** max(0, attempts - 1)))


def check_ttl(ttl: int, *, max_ttl: int) -> int:
    """``ttl`` if it is a whole number of seconds in ``1..max_ttl``, else ``InvalidInput``."""
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
        raise InvalidInput("a lease's ttl is a positive number of seconds", details={"ttl": ttl})
    if ttl > max_ttl:
        raise InvalidInput(
            f"a lease's ttl is at most the role's max ttl ({max_ttl} s)",
            details={"ttl": ttl, "max_ttl": max_ttl},
        )
    return ttl


def new_lease(
    *,
    id: str,
    engine: str,
    role: str,
    credential: str,
    agent: str,
    instance: str,
    now: datetime,
    ttl: int,
    max_ttl: int,
    grant_id: str | None = None,
    user: str | None = None,
) -> Lease:
    """A lease being issued (``issuing``): the engine creates its credential next, then the
    lease is stored ``activated`` (see :mod:`tether.credentials.leases`)."""
    check_ttl(ttl, max_ttl=max_ttl)
    return Lease(
        id=id,
        engine=engine,
        role=role,
        credential=credential,
        agent=agent,
        instance=instance,
        grant_id=grant_id,
        user=user,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl),
        max_expires_at=now + timedelta(seconds=max_ttl),
        renewals=0,
        state=LeaseState.ISSUING,
        updated_at=now,
    )


def _next(lease: Lease, now: datetime, **changes: object) -> Lease:
    return replace(lease, **changes, updated_at=now, version=lease.version + 1)  # type: ignore[arg-type]


def activated(lease: Lease, *, now: datetime) -> Lease:
    """The engine created the credential: the lease is in force."""
    if lease.state is not LeaseState.ISSUING:
        raise InvalidTransition(f"lease {lease.id} is {lease.state}, not issuing")
    return _next(lease, now, state=LeaseState.ACTIVE)


def renew(lease: Lease, *, now: datetime, ttl: int) -> Lease:
    """Expiry moved to ``now + ttl``, capped at ``max_expires_at``. Only an active lease
    that has not expired renews (``InvalidTransition``); one already at its max TTL raises
    ``LeaseMaxTtl``."""
    if lease.state is not LeaseState.ACTIVE or now >= lease.expires_at:
        state = "expired" if lease.state is LeaseState.ACTIVE else str(lease.state)
        raise InvalidTransition(
            f"lease {lease.id} is {state}: only an active lease renews",
            details={"lease_id": lease.id, "state": state},
        )
    check_ttl(ttl, max_ttl=int((lease.max_expires_at - lease.created_at).total_seconds()))
    expires = min(now + timedelta(seconds=ttl), lease.max_expires_at)
    if expires <= lease.expires_at:
        raise LeaseMaxTtl(
            f"lease {lease.id} cannot be renewed past its max ttl",
            details={"lease_id": lease.id, "max_expires_at": lease.max_expires_at.isoformat()},
        )
    return _next(lease, now, expires_at=expires, renewals=lease.renewals + 1)


def begin_end(
    lease: Lease, *, now: datetime, kind: EndKind, reason: str | None, claim_until: datetime
) -> Lease:
    """The lease starts to end: ``revoking``, held by the caller until ``claim_until``. A
    lease already ending keeps its first reason (``InvalidTransition`` if it has ended)."""
    if not lease.live:
        raise InvalidTransition(
            f"lease {lease.id} has ended ({lease.state})",
            details={"lease_id": lease.id, "state": str(lease.state)},
        )
    if lease.ending is not None:
        return _next(lease, now, claimed_until=claim_until)
    return _next(
        lease,
        now,
        state=LeaseState.REVOKING,
        ending=kind,
        reason=reason,
        claimed_until=claim_until,
        next_attempt_at=now,
    )


def ended(lease: Lease, *, now: datetime) -> Lease:
    """The engine removed the credential: ``expired`` if the TTL ended it, else ``revoked``."""
    if lease.state not in {LeaseState.REVOKING, LeaseState.IRREVOCABLE}:
        raise InvalidTransition(f"lease {lease.id} is {lease.state}, not being revoked")
    final = LeaseState.EXPIRED if lease.ending is EndKind.EXPIRED else LeaseState.REVOKED
    return _next(lease, now, state=final, ended_at=now, claimed_until=None, next_attempt_at=None)


def revocation_failed(lease: Lease, *, now: datetime, error: str, policy: RetryPolicy) -> Lease:
    """One more failed attempt: retried after the backoff; irrevocable after
    ``policy.max_attempts`` (still retried, every ``policy.cap`` seconds)."""
    if lease.state not in {LeaseState.REVOKING, LeaseState.IRREVOCABLE}:
        raise InvalidTransition(f"lease {lease.id} is {lease.state}, not being revoked")
    attempts = lease.attempts + 1
    state = LeaseState.IRREVOCABLE if attempts >= policy.max_attempts else LeaseState.REVOKING
    return _next(
        lease,
        now,
        state=state,
        attempts=attempts,
        last_error=error[:500],
        claimed_until=None,
        next_attempt_at=now + timedelta(seconds=policy.delay(attempts)),
    )

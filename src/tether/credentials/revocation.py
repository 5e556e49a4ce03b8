"""Ending leases: have the engine remove each credential, then close its lease — and the
reaper's rounds.

Whoever moved a lease to ``revoking`` holds it for a while (``claimed_until``) and finishes it
here: the engine blocks and removes the credential, the lease becomes ``revoked`` or
``expired``, and ``lease.ended`` is recorded. A failure is recorded (``lease.revocation_failed``),
published for monitoring, and retried with backoff by the reaper; after N failures the lease is
``irrevocable`` and a ``lease.irrevocable`` alert event is published. If the holder dies, its
hold runs out and another replica's reaper takes the lease over.

The reaper's round (:meth:`Revoker.reap`) takes, under ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, the leases that expired (including those that expired while Tether was down), the
issuances that never finished and the retries that are due. At start,
:meth:`Revoker.sweep_orphans` removes managed credentials no live lease accounts for (an
issuance stores its lease only once the credential exists, so a crash in between leaves such a
credential, valid until its ``VALID UNTIL`` at most and handed to no one).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from tether._internal.clock import Clock
from tether.audit.records import AuditRecord, Outcome
from tether.audit.sink import AuditSink
from tether.credentials import lifecycle
from tether.credentials.engine import CredentialEngine
from tether.credentials.engines import Engines, role_of
from tether.credentials.models import EndKind, EngineConfig, Lease, LeaseState, RoleTemplate
from tether.errors import Error, LeaseNotFound, VersionConflict
from tether.identity.access import Actor
from tether.monitor.events import Event, EventStream
from tether.store.interfaces import LeaseStore

__all__ = ["PAGE", "Revoker", "failed"]

#: Leases one round or one bulk revocation changes per transaction.
PAGE = 500
#: Revocations that run at once.
_CONCURRENCY = 8


class Revoker:
    def __init__(
        self,
        *,
        store: LeaseStore,
        engines: Engines,
        audit: AuditSink,
        clock: Clock,
        events: EventStream | None = None,
        retry: lifecycle.RetryPolicy | None = None,
        claim_seconds: float = 30.0,
        issuing_grace_seconds: float = 10.0,
    ) -> None:
        self._store = store
        self._engines = engines
        self._audit = audit
        self._clock = clock
        self._events = events
        self._retry = retry or lifecycle.RetryPolicy()
        self.claim = timedelta(seconds=claim_seconds)
        self._grace = timedelta(seconds=issuing_grace_seconds)

    async def reap(self, *, limit: int = PAGE) -> int:
        """One round: end the leases that expired, the revocations whose retry is due and any
        stored ``issuing`` lease past the grace (see :mod:`tether.credentials.models`); how
        many were taken."""
        now = self._clock.now()
        claim_until = now + self.claim

        def change(lease: Lease) -> Lease:
            if lease.state is LeaseState.ACTIVE:
                return lifecycle.begin_end(
                    lease, now=now, kind=EndKind.EXPIRED, reason="ttl", claim_until=claim_until
                )
            if lease.state is LeaseState.ISSUING:
                reason = "issuance did not finish"
                return lifecycle.begin_end(
                    lease, now=now, kind=EndKind.FAILED, reason=reason, claim_until=claim_until
                )
            return lifecycle.begin_end(
                lease, now=now, kind=EndKind.REVOKED, reason=None, claim_until=claim_until
            )

        due = await self._store.change_due_leases(
            now=now, stale_before=now - self._grace, change=change, limit=limit
        )
        await self.finish_all(due)
        return len(due)

    async def next_expiry(self) -> datetime | None:
        return await self._store.next_lease_expiry()

    async def sweep_orphans(self, *, grace: float | None = None) -> int:
        """Remove, in every engine, the managed credentials no live lease accounts for (left
        by a crash between creating a credential and storing its lease, or by a lease record
        lost in a restore); how many.

        A credential is stored as a lease only once it exists, so one created by an issuance
        in flight (on another replica) has no lease yet: a credential counts as an orphan
        only if it still has none ``grace`` seconds (default: the issuing grace) later."""
        wait = self._grace.total_seconds() if grace is None else grace
        removed = 0
        for config in await self._engines.all():
            try:
                removed += await self._sweep(config, wait)
            except Error as exc:
                self._publish("lease.sweep_failed", {"engine": config.name, "error": exc.code})
        return removed

    async def _sweep(self, config: EngineConfig, grace: float) -> int:
        _, engine = await self._engines.open(config.name)
        suspects = await engine.managed() - await self._store.live_credentials(config.name)
        if not suspects:
            return 0
        await asyncio.sleep(grace)
        # Credentials first, then leases: a lease stored meanwhile is read after its
        # credential, so a credential still here with no lease read after is an orphan.
        present = await engine.managed()
        orphans = (suspects & present) - await self._store.live_credentials(config.name)
        template = next(iter(config.roles.values()))
        for credential in sorted(orphans):
            record = AuditRecord.new(
                type="lease.orphan_removed",
                actor=Actor.system().label,
                subject=f"engine:{config.name}",
                time=self._clock.now(),
                details={"engine": config.name, "credential": credential},
            )
            await self._audit.append(record)
            await engine.revoke(credential=credential, role=template)
        return len(orphans)

    async def finish_all(self, leases: Collection[Lease]) -> list[Lease]:
        """Finish each lease (``_CONCURRENCY`` at once). Each engine is opened once for the
        lot: when it cannot be, every lease of it is retried later at once, instead of each
        waiting out its own connection timeout."""
        gate = asyncio.Semaphore(_CONCURRENCY)
        opened: dict[str, asyncio.Task[tuple[EngineConfig, CredentialEngine]]] = {}

        async def one(lease: Lease) -> Lease:
            if lease.engine not in opened:
                opened[lease.engine] = asyncio.ensure_future(self._engines.open(lease.engine))
            async with gate:
                try:
                    config, engine = await asyncio.shield(opened[lease.engine])
                    template = role_of(config, lease.role)
                except Error as exc:
                    return await self.retry_later(lease, exc)
                return await self.finish(lease, engine, template)

        return list(await asyncio.gather(*(one(lease) for lease in leases)))

    async def finish(self, lease: Lease, engine: CredentialEngine, template: RoleTemplate) -> Lease:
        """Have the engine remove the credential of a ``revoking`` lease we hold, then
        close the lease; a failure schedules the next attempt."""
        try:
            await engine.revoke(credential=lease.credential, role=template)
        except Error as exc:
            return await self.retry_later(lease, exc)
        ended = lifecycle.ended(lease, now=self._clock.now())
        # The fact first (the credential is gone, whoever closes the lease), then the lease.
        await self._audit.append(self.end_record(ended, lease))
        try:
            await self._store.save_lease(ended, expected_version=lease.version)
        except VersionConflict:
            # Our hold ran out and another replica ended it (or retries it): its record wins.
            return await self._reload(lease.id)
        return ended

    def end_record(self, ended: Lease, ending: Lease) -> AuditRecord:
        """``lease.ended``: the engine removed the credential of ``ending``, now ``ended``."""
        facts = {"ending": str(ending.ending), "attempts": ending.attempts}
        return self.record("lease.ended", Actor.system().label, ended, facts)

    async def retry_later(self, lease: Lease, exc: Error) -> Lease:
        retried = lifecycle.revocation_failed(
            lease, now=self._clock.now(), error=f"{exc.code}: {exc.message}", policy=self._retry
        )
        try:
            await self._store.save_lease(retried, expected_version=lease.version)
        except VersionConflict:
            return await self._reload(lease.id)  # another replica took it over meanwhile
        irrevocable = retried.state is LeaseState.IRREVOCABLE
        facts = {
            "attempts": retried.attempts,
            "error": exc.code,
            "next_attempt_at": _iso(retried.next_attempt_at),
            "irrevocable": irrevocable,
        }
        record = self.record("lease.revocation_failed", Actor.system().label, retried, facts)
        await self._audit.append(failed(record))
        kind = "lease.irrevocable" if irrevocable else "lease.revocation_failed"
        self._publish(kind, retried.facts() | facts)
        return retried

    async def _reload(self, lease_id: str) -> Lease:
        lease = await self._store.get_lease(lease_id)
        if lease is None:
            raise LeaseNotFound(f"no lease {lease_id!r}", details={"lease_id": lease_id})
        return lease

    def record(self, tag: str, actor: str, lease: Lease, extra: dict[str, Any]) -> AuditRecord:
        return AuditRecord.new(
            type=tag,
            actor=actor,
            subject=f"lease:{lease.id}",
            time=self._clock.now(),
            details=lease.facts() | extra,
        )

    def _publish(self, kind: str, data: dict[str, object]) -> None:
        if self._events is not None:
            self._events.publish(
                Event(type=kind, time=self._clock.now().timestamp(), data=MappingProxyType(data))
            )


def failed(record: AuditRecord) -> AuditRecord:
    return AuditRecord.new(
        type=record.type,
        actor=record.actor,
        subject=record.subject,
        time=record.time,
        outcome=Outcome.FAILURE,
        correlation_id=record.correlation_id,
        details=record.details,
    )


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()

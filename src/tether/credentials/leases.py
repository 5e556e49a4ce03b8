"""The lease service: issue, renew and revoke just-in-time credentials, one or all at once.

Issuance, in this order:

1. the checkpoint decides ``use_credential`` on the role's resource for the presented agent
   token (and records the decision durably — no audit, no credential);
2. the engine creates the credential, valid until the lease's expiry where it can enforce it
   (``VALID UNTIL``), under the engine's managed prefix;
3. the lease is stored (``active``) and ``lease.issued`` recorded, both at once — on the
   embedded SQLite store in one transaction, the record's, shared with the records committed
   beside it (``SqlStore.lease_create_carried``): issuances in flight together commit their
   leases and records in one ``fsync``. If either fails, the credential is removed before the
   caller hears of the failure (fail closed).

One round of durable writes after the engine's, and nothing unknown left by a crash: one
between (2) and (3) leaves a managed credential with no lease, handed to no one; the orphan
sweep at start removes it (:meth:`tether.credentials.revocation.Revoker.sweep_orphans`).

Revocation of one lease removes the credential, then closes the lease. Revocation of every
lease of an agent, an instance, a grant or a user in one call (``revoke_all``; Vault has no
revoke-by-entity) first marks the leases ``revoking`` in one transaction — a hold that another
replica takes over if this one dies — and records who asked and why; then the engine blocks
and removes each credential.
A failed removal is retried with backoff by the reaper and, after N tries, the lease is
``irrevocable`` and an alert event is published: a credential is never silently leaked.

Secrets (an issued password) are returned to the caller once and never stored, logged,
audited or put in an error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TypeVar

from tether._internal.clock import Clock
from tether._internal.ids import new_id
from tether.audit.records import AuditRecord
from tether.audit.sink import AuditSink
from tether.checkpoint import Checkpoint, CheckRequest, Verdict
from tether.credentials import lifecycle
from tether.credentials._requests import (
    agent_name,
    allowed_caller,
    delegation_of,
    error_code,
    instance_of,
    resource_of,
)
from tether.credentials.engine import CredentialEngine
from tether.credentials.engines import Engines, role_of
from tether.credentials.models import (
    EndKind,
    EngineConfig,
    IssuedCredential,
    Lease,
    LeaseMatch,
    LeaseState,
    RoleTemplate,
)
from tether.credentials.revocation import PAGE, Revoker, failed
from tether.errors import (
    AuditUnavailable,
    Error,
    Forbidden,
    InvalidInput,
    LeaseNotFound,
    LogPositionTaken,
    NotFound,
    VersionConflict,
)
from tether.identity.access import Actor, Permission, allowed, require
from tether.identity.svid import AgentCaller
from tether.store.interfaces import AgentStore, LeaseStore

__all__ = ["Issued", "Leases"]

#: States a revocation moves to ``revoking`` (later ones are ending or ended already).
_ENDABLE = (LeaseState.ISSUING, LeaseState.ACTIVE)
_T = TypeVar("_T")


@dataclass(frozen=True, kw_only=True)
class Issued:
    """A new lease, its credential (the secret, once) and the decision that allowed it."""

    lease: Lease
    credential: IssuedCredential
    decision_id: str


class Leases:
    def __init__(
        self,
        *,
        store: LeaseStore,
        agents: AgentStore,
        engines: Engines,
        checkpoint: Checkpoint,
        audit: AuditSink,
        clock: Clock,
        revoker: Revoker,
    ) -> None:
        self._store = store
        self._agents = agents
        self._engines = engines
        self._checkpoint = checkpoint
        self._audit = audit
        self._clock = clock
        self._revoker = revoker

    # -- issue ---------------------------------------------------------------------------

    async def issue(
        self,
        *,
        token: str,
        engine: str,
        role: str,
        ttl: int | None = None,
        certificate_thumbprint: str | None = None,
        correlation_id: str | None = None,
        audience: str | None = None,
    ) -> Issued:
        """A new lease for the agent instance that presents ``token`` (minted for ``audience``:
        an enforcement point taking the lease for the agent names itself): ``Unauthenticated``,
        ``Forbidden`` (the decision's reasons), ``NotFound`` (no such engine or role),
        ``InvalidInput`` (the TTL), ``EngineUnavailable``, ``AuditUnavailable``.

        The token is checked before anything about the engine is told or done: an unknown
        engine or role is refused only once the caller is known (and allowed), and the engine
        is connected to only for an allowed request."""
        caller, verdict, template = await self._decide(
            token=token, engine=engine, role=role, ttl=ttl,
            certificate_thumbprint=certificate_thumbprint, correlation_id=correlation_id,
            audience=audience,
        )  # fmt: skip
        ttl = lifecycle.check_ttl(
            template.default_ttl if ttl is None else ttl, max_ttl=template.max_ttl
        )
        now = self._clock.now()
        owner = delegation_of(verdict, ttl=ttl, max_ttl=template.max_ttl, now=now)
        _, credential_engine = await self._engines.open(engine)
        lease_id = new_id("lea")
        lease = lifecycle.new_lease(
            id=lease_id, engine=engine, role=role,
            credential=credential_engine.credential_name(lease_id), agent=caller.agent.name,
            instance=caller.instance_id, now=now, ttl=owner.ttl, max_ttl=owner.max_ttl,
            grant_id=owner.grant_id, user=owner.user,
        )  # fmt: skip
        facts: dict[str, object] = {"decision_id": verdict.decision_id}
        try:
            credential = await credential_engine.create(
                credential=lease.credential,
                role=template,
                expires_at=lease.expires_at,
                holder=caller.spiffe_id,
                user=lease.user,
            )
        except Error as exc:
            await self._refused(lease, caller.spiffe_id, facts | {"error": exc.code})
            raise
        active = await self._put_in_force(lease, credential_engine, template, caller, facts)
        return Issued(lease=active, credential=credential, decision_id=verdict.decision_id)

    async def _decide(
        self,
        *,
        token: str,
        engine: str,
        role: str,
        ttl: int | None,
        certificate_thumbprint: str | None,
        correlation_id: str | None,
        audience: str | None = None,
    ) -> tuple[AgentCaller, Verdict, RoleTemplate]:
        """The caller, the allowing verdict and the role's template; the refusal otherwise.
        An unknown engine or role is told only to a caller that is known and allowed."""
        config: EngineConfig | None = None
        template: RoleTemplate | None = None
        missing: NotFound | None = None
        try:
            config = await self._engines.config(engine)
            template = role_of(config, role)
        except NotFound as exc:
            missing = exc
        verdict = await self._checkpoint.check(
            CheckRequest(
                token=token,
                action="use_credential",
                resource=resource_of(engine, config, template),
                enforcement_point="leases",
                certificate_thumbprint=certificate_thumbprint,
                arguments={"engine": engine, "role": role, "ttl": ttl},
                correlation_id=correlation_id,
                audience=audience,
            )
        )
        caller = allowed_caller(verdict)
        if missing is not None or template is None:
            raise missing or NotFound(f"engine {engine!r} has no role {role!r}")
        return caller, verdict, template

    async def _put_in_force(
        self,
        lease: Lease,
        engine: CredentialEngine,
        template: RoleTemplate,
        caller: AgentCaller,
        facts: dict[str, object],
    ) -> Lease:
        """Store the lease and record ``lease.issued``, both at once; if either fails, the
        credential is removed before the error reaches the caller (fail closed).

        Then the agent's state is read again: an agent stopped while its credential was being
        created ended its leases without seeing this one (not stored yet), so the credential
        is withdrawn here. Stored first, read after: a stop committed later ends it itself."""
        active = lifecycle.activated(lease, now=self._clock.now())
        record = self._revoker.record("lease.issued", caller.spiffe_id, active, facts)
        stored, recorded = await self._store_recorded(active, record)
        problem = next((r for r in (stored, recorded) if isinstance(r, BaseException)), None)
        if problem is None:
            agent = await self._agents.get_agent(caller.agent.name)
            if agent is not None and agent.can_authenticate:
                return active
            state = agent.state if agent is not None else "gone"
            problem = Forbidden(f"agent {caller.agent.name!r} is {state}: no credential")
        await self._withdraw(active, engine, template, stored=not isinstance(stored, BaseException))
        await self._refused(active, caller.spiffe_id, facts | {"error": error_code(problem)})
        raise problem

    async def _store_recorded(
        self, lease: Lease, record: AuditRecord
    ) -> tuple[BaseException | None, BaseException | None]:
        """Store ``lease`` and make ``record`` durable, both at once; the error of each. Where
        the store can (``SqlStore.lease_create_carried``), the lease goes in the record's own
        transaction — both or neither, one commit shared with the records committed beside
        it — and is stored the usual way if it did not go in (that tells why). If the record
        failed, whether the lease went in with it is read back: a stored lease is ended, an
        unstored credential removed (see :meth:`_withdraw`)."""
        create = getattr(self._store, "lease_create_carried", None)
        append_with: Callable[[AuditRecord, object], Awaitable[object]] | None
        append_with = getattr(self._audit, "append_with", None)
        carried = None if create is None or append_with is None else create(lease)
        if carried is None or append_with is None:
            stored, recorded = await asyncio.gather(
                self._store.create_lease(lease), self._audit.append(record), return_exceptions=True
            )
            return _error(stored), _error(recorded)
        unrecorded = _error(await _settled(append_with(record, carried)))
        if carried.written:
            return None, unrecorded
        if unrecorded is None:
            return _error(await _settled(self._store.create_lease(lease))), None
        found = await _settled(self._store.get_lease(lease.id))
        return (None if isinstance(found, Lease) else unrecorded), unrecorded

    async def _withdraw(
        self, lease: Lease, engine: CredentialEngine, template: RoleTemplate, *, stored: bool
    ) -> None:
        """Remove a credential issued to no one. If that fails, the stored lease is left to
        the reaper's retries, an unstored one to the orphan sweep."""
        if not stored:
            with contextlib.suppress(Error):
                await engine.revoke(credential=lease.credential, role=template)
            return
        now = self._clock.now()
        ending = lifecycle.begin_end(
            lease,
            now=now,
            kind=EndKind.FAILED,
            reason="issuance failed",
            claim_until=now + self._revoker.claim,
        )
        try:
            await self._store.save_lease(ending, expected_version=lease.version)
        except Error:
            return  # the lease is stored active: it ends at its TTL
        await self._revoker.finish(ending, engine, template)

    async def _refused(self, lease: Lease, actor: str, facts: dict[str, object]) -> None:
        """Record that an issuance failed (best effort: the error goes to the caller)."""
        record = self._revoker.record("lease.issued", actor, lease, facts)
        with contextlib.suppress(Error):
            await self._audit.append(failed(record))

    # -- renew ---------------------------------------------------------------------------

    async def renew(
        self,
        lease_id: str,
        *,
        actor: Actor,
        ttl: int | None = None,
        token: str | None = None,
        certificate_thumbprint: str | None = None,
    ) -> Lease:
        """Move the lease's expiry forward (capped at its max TTL). The agent instance that
        holds it may renew it, presenting its ``token``: the policy decides again, so a
        permission withdrawn since the issuance stops the renewal. Operators need
        ``lease.renew``."""
        lease = await self._load(lease_id)
        await self._require(actor, Permission.LEASE_RENEW, lease)
        config, engine = await self._engines.open(lease.engine)
        template = role_of(config, lease.role)
        ttl = template.default_ttl if ttl is None else ttl
        if actor.kind == "agent":
            if token is None:
                raise Forbidden("an agent renews a lease with its token: the policy decides again")
            verdict = await self._checkpoint.check(
                CheckRequest(
                    token=token,
                    action="use_credential",
                    resource=resource_of(lease.engine, config, template),
                    enforcement_point="leases",
                    certificate_thumbprint=certificate_thumbprint,
                    arguments={"engine": lease.engine, "role": lease.role, "ttl": ttl},
                    correlation_id=lease.id,
                )
            )
            allowed_caller(verdict)
        renewed = lifecycle.renew(lease, now=self._clock.now(), ttl=ttl)
        record = self._revoker.record(
            "lease.renewed",
            actor.label,
            renewed,
            {"previous_expires_at": lease.expires_at.isoformat()},
        )
        await self._audit.append(record)
        try:
            await engine.extend(
                credential=lease.credential, role=template, expires_at=renewed.expires_at
            )
            await self._store.save_lease(renewed, expected_version=lease.version)
        except Error as exc:
            await self._audit.append(record.failure(exc.code, time=self._clock.now()))
            raise
        return renewed

    # -- revoke --------------------------------------------------------------------------

    async def revoke(self, lease_id: str, *, actor: Actor, reason: str | None = None) -> Lease:
        """End one lease now; returns it ended (or ``revoking``/``irrevocable`` if the
        engine failed: the reaper retries). The agent holding it may end it. A lease already
        ending or ended is returned as it is.

        The credential is removed first, then the lease is closed and both records written
        at once: where the store can (SQLite, the audit log idle), in one transaction and one
        commit; otherwise side by side. A crash in between leaves the lease recorded as
        active with its credential gone — access already ended; the reaper closes the lease
        at its expiry."""
        lease = await self._load(lease_id)
        await self._require(actor, Permission.LEASE_REVOKE, lease)
        if lease.state not in _ENDABLE:
            return lease
        config, engine = await self._engines.open(lease.engine)
        template = role_of(config, lease.role)
        ending = self._ending(actor, reason)(lease)
        try:
            await engine.revoke(credential=lease.credential, role=template)
        except Error as exc:
            try:
                await self._store.save_lease(ending, expected_version=lease.version)
            except VersionConflict:
                return await self._load(lease_id)  # the reaper or another call took it
            await self._records_of_revocation([ending], actor, reason)
            return await self._revoker.retry_later(ending, exc)
        ended = lifecycle.ended(ending, now=self._clock.now())
        records = (self._revocation_record(ending, actor, reason),
                   self._revoker.end_record(ended, ending))  # fmt: skip
        try:
            together = await self._close_recorded(ended, lease, records, actor, reason)
        except (AuditUnavailable, LogPositionTaken):
            together = None  # neither was written: side by side, which closes the lease
        if together is not None:
            return together
        recorded = asyncio.gather(*map(self._audit.append, records), return_exceptions=True)
        try:
            closed = await self._close(ended, lease, actor, reason)
        finally:
            outcomes = await recorded
        problem = next((o for o in outcomes if isinstance(o, BaseException)), None)
        if problem is not None:
            raise problem
        return closed

    async def _close_recorded(
        self,
        ended: Lease,
        lease: Lease,
        records: Sequence[AuditRecord],
        actor: Actor,
        reason: str | None,
    ) -> Lease | None:
        """Store ``ended`` over ``lease`` in the transaction that appends ``records``, when the
        store and the audit log can (see ``SqlStore.lease_save_carried`` and
        ``AuditLog.append_carrying``): the lease as it stands then, or None with nothing
        written. If the lease moved meanwhile, the records are in and :meth:`_close` settles
        it."""
        save = getattr(self._store, "lease_save_carried", None)
        carry = getattr(self._audit, "append_carrying", None)
        if save is None or carry is None:
            return None
        carried = save(ended, expected_version=lease.version)
        if carried is None or await carry(records, carried) is None:
            return None
        if carried.written:
            return ended
        return await self._close(ended, lease, actor, reason)

    async def _close(self, ended: Lease, lease: Lease, actor: Actor, reason: str | None) -> Lease:
        """Store ``ended`` over ``lease``. If the lease moved meanwhile (renewed), its
        credential is gone all the same: close what is stored now; if another replica ended
        it, that stands."""
        for _ in range(3):
            try:
                await self._store.save_lease(ended, expected_version=lease.version)
            except VersionConflict:
                lease = await self._load(lease.id)
                if lease.state not in _ENDABLE:
                    return lease  # the reaper (or another call) is ending or ended it
                ending = self._ending(actor, reason)(lease)
                ended = lifecycle.ended(ending, now=self._clock.now())
                continue
            return ended
        return await self._load(lease.id)

    async def revoke_all(
        self, match: LeaseMatch, *, actor: Actor, reason: str | None = None
    ) -> list[Lease]:
        """End every live lease of an agent, an instance, a grant or a user (at least one of
        them given) in one call; returns them as they ended."""
        owner_fields = (match.agent, match.instance, match.grant_id, match.user)
        if all(value is None for value in owner_fields):
            raise InvalidInput(
                "name an agent, an instance, a grant or a user whose leases to revoke",
                details={"rule": "agent, instance, grant or user required"},
            )
        await self._require_bulk(actor, match)
        done: list[Lease] = []
        while True:
            page = await self._store.change_leases(
                match,
                states=_ENDABLE,
                change=self._ending(actor, reason),
                limit=PAGE,
            )
            if not page:
                return done
            await self._records_of_revocation(page, actor, reason)
            done += await self._revoker.finish_all(page)

    async def end_stopped_agents(self) -> int:
        """End the leases of agents that can no longer authenticate (suspended, quarantined,
        retired, back in review): the backstop for a stop whose own revocation failed (the
        store or the audit log was down then). How many were ended."""
        ended, after = 0, None
        judged: dict[str, bool] = {}
        while page := await self._store.list_leases(
            LeaseMatch(), states=_ENDABLE, limit=PAGE, after=after
        ):
            after = page[-1].id
            for name in dict.fromkeys(lease.agent for lease in page):
                if name not in judged:
                    agent = await self._agents.get_agent(name)
                    judged[name] = agent is not None and agent.can_authenticate
                    if not judged[name]:
                        ended += await self.revoke_agent(name, Actor.system(), "agent not active")
        return ended

    async def revoke_agent(self, agent: str, actor: Actor, reason: str) -> int:
        """Every lease of ``agent`` (when it is quarantined, suspended or retired): how
        many were ended."""
        return len(await self.revoke_all(LeaseMatch(agent=agent), actor=actor, reason=reason))

    def _ending(self, actor: Actor, reason: str | None) -> Callable[[Lease], Lease]:
        now = self._clock.now()
        said = f"revoked by {actor.label}" + (f": {reason}" if reason else "")

        def change(lease: Lease) -> Lease:
            return lifecycle.begin_end(
                lease,
                now=now,
                kind=EndKind.REVOKED,
                reason=said,
                claim_until=now + self._revoker.claim,
            )

        return change

    async def _records_of_revocation(
        self, leases: Collection[Lease], actor: Actor, reason: str | None
    ) -> None:
        for lease in leases:
            await self._audit.append(self._revocation_record(lease, actor, reason))

    def _revocation_record(self, lease: Lease, actor: Actor, reason: str | None) -> AuditRecord:
        return self._revoker.record("lease.revoked", actor.label, lease, {"reason": reason})

    # -- reading -------------------------------------------------------------------------

    async def get(self, lease_id: str, *, actor: Actor) -> Lease:
        lease = await self._load(lease_id)
        await self._require(actor, Permission.LEASE_READ, lease)
        return lease

    async def list(
        self,
        match: LeaseMatch,
        *,
        actor: Actor,
        states: Collection[LeaseState] | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[Lease]:
        """Leases matching ``match``; an agent instance sees only its own."""
        if actor.kind == "agent":
            mine = {"agent": agent_name(actor), "instance": instance_of(actor)}
            match = LeaseMatch(**(match.fields() | mine))
        elif not allowed(actor, Permission.LEASE_READ):
            await self._require_bulk(actor, match, Permission.LEASE_READ)
        return await self._store.list_leases(match, states=states, limit=limit, after=after)

    # -- internals -----------------------------------------------------------------------

    async def _load(self, lease_id: str) -> Lease:
        lease = await self._store.get_lease(lease_id) if isinstance(lease_id, str) else None
        if lease is None:
            raise LeaseNotFound(f"no lease {lease_id!r}", details={"lease_id": str(lease_id)})
        return lease

    async def _require(self, actor: Actor, permission: Permission, lease: Lease) -> None:
        """The agent instance holding the lease, an operator with ``permission``, or a
        developer who owns the agent (for reading and revoking)."""
        if actor.kind == "agent":
            if agent_name(actor) != lease.agent or instance_of(actor) != lease.instance:
                raise Forbidden("an agent instance may act only on its own leases")
            return
        if allowed(actor, permission):
            return  # by role: the agent's owners need not be read
        agent = await self._agents.get_agent(lease.agent)
        require(actor, permission, owners=agent.owners if agent else ())

    async def _require_bulk(
        self, actor: Actor, match: LeaseMatch, permission: Permission = Permission.LEASE_REVOKE
    ) -> None:
        if actor.kind == "agent":
            if match.agent != agent_name(actor):
                raise Forbidden("an agent may act only on its own leases")
            return
        if allowed(actor, permission):
            return
        owners: tuple[str, ...] = ()
        if match.agent is not None:
            agent = await self._agents.get_agent(match.agent)
            owners = agent.owners if agent else ()
        require(actor, permission, owners=owners)


async def _settled(pending: Awaitable[_T]) -> _T | BaseException:
    """What ``pending`` returns, or what it raises (an ``Exception``; anything else goes on)."""
    try:
        return await pending
    except Exception as exc:  # noqa: BLE001 - handed back, the caller decides
        return exc


def _error(outcome: object) -> BaseException | None:
    return outcome if isinstance(outcome, BaseException) else None

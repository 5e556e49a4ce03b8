"""The composition root: build every service once from :class:`~tether.config.Settings`.

``Services.open`` opens the store (running migrations), the key ring (creating keys on first
start), makes sure a root token exists, loads the revoked agent tokens, and wires the domain
services together. ``close`` gives everything back. The API and the benchmarks both start here,
so they measure the same thing. While the app serves, :meth:`Services.run_maintenance` runs the
upkeep rounds and, every ``hot_state_refresh_seconds``, learns what other replicas changed in
the hot-path state: revoked agent tokens and the active policy version.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeGuard, TypeVar

import structlog

from tether._internal.clock import Clock, SystemClock
from tether.api import _core
from tether.api._credentials import credential_services
from tether.api._delegation import Delegation, access_tokens, delegation_services
from tether.api._freshness import Freshness
from tether.api._mcp import McpServices, mcp_services
from tether.api._monitor import monitor_service
from tether.audit.log import AuditLog
from tether.audit.redact import Redactor
from tether.checkpoint import Checkpoint
from tether.config import Settings
from tether.credentials.engines import Engines
from tether.credentials.leases import Leases
from tether.credentials.revocation import Revoker
from tether.crypto.keyring import KeyRing
from tether.delegation.approval_gate import ApprovalGate
from tether.errors import Error
from tether.identity.client_auth import ClientAuthenticator
from tether.identity.directory import AgentDirectory
from tether.identity.operators import OperatorTokens
from tether.identity.registry import Registry
from tether.identity.revocations import RevocationList
from tether.identity.svid import VERIFY_LEEWAY, SvidIssuer
from tether.monitor.events import Event, EventStream
from tether.monitor.service import Monitor
from tether.policy._cedar import CedarEngine
from tether.policy.service import PolicySets
from tether.store.interfaces import Store
from tether.store.sql import SqlStore, open_sql_store
from tether.store.sql.changes import (
    ALL,
    GRANT_PREFIX,
    GRANTS,
    POLICIES,
    REVOCATIONS,
    USER_PREFIX,
    ChangeListener,
    topics,
)

__all__ = ["Services"]

_T = TypeVar("_T")
#: The shortest wait of the lease reaper between two rounds that took nothing.
_REAP_PAUSE = 0.2

log = structlog.get_logger("tether.maintenance")


@dataclass(kw_only=True)
class Services:
    settings: Settings
    clock: Clock
    store: Store
    audit: AuditLog
    keyring: KeyRing
    registry: Registry
    operators: OperatorTokens
    client_auth: ClientAuthenticator
    svids: SvidIssuer
    revocations: RevocationList
    policies: PolicySets
    checkpoint: Checkpoint
    #: Decisions (and, later, changes) for monitoring: subscribe to read them.
    events: EventStream
    #: Hides sensitive values in audit records as their HMAC (``/v1/audit/hash``).
    redactor: Redactor
    #: Agents as the hot path reads them (see :mod:`tether.identity.directory`).
    directory: AgentDirectory
    #: Credential engines, leases, and the ending of leases (the reaper's work).
    engines: Engines
    leases: Leases
    revoker: Revoker
    #: Users, their grants, their and delegated access tokens, and token exchange.
    delegation: Delegation
    #: The MCP gateway: its registry of upstream servers, its handlers and HTTP front.
    mcp: McpServices
    #: Detectors over the events, and the alerts they raise (run by :meth:`run_maintenance`).
    monitor: Monitor
    #: Set once this replica listens for other replicas' change notes and has caught up
    #: (PostgreSQL only).
    listening: asyncio.Event = field(default_factory=asyncio.Event)
    #: How current the hot state is; the checkpoint resyncs stale state (PostgreSQL).
    freshness: Freshness
    #: Other replicas may write the store (PostgreSQL): the hot state can go stale.
    shared: bool = False
    #: A root token generated on this start (shown once), else None.
    new_root_token: str | None = None

    @classmethod
    async def open(cls, settings: Settings, *, clock: Clock | None = None) -> Services:
        clock = clock or SystemClock()
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        store = await open_sql_store(settings.database_url, clock=clock)
        try:
            # On SQLite the audit log commits in a process of its own, two batches in its
            # hands at once (one committing, the next built meanwhile).
            audit_depth = 2 if await store.start_audit_writer() else 1
            return await cls._wire(settings, clock, store, audit_depth)
        except BaseException:
            await store.close()
            raise

    @classmethod
    async def _wire(cls, settings: Settings, clock: Clock, store: Store, depth: int) -> Services:
        events = EventStream()
        kek = _core.kek(settings)
        keyring = await _core.keyring(settings, clock, store, kek)
        audit = await _core.audit_log(settings, clock, store, keyring, events, depth=depth)
        await _core.audit_key_changes(audit, clock, keyring.changes)
        operators = OperatorTokens(store=store, audit=audit, clock=clock,
                                   default_ttl=settings.operator_token_ttl_seconds)  # fmt: skip
        new_root = await operators.ensure_root(settings.root_token)
        directory = AgentDirectory(store, ttl=settings.agent_cache_seconds)
        engine = CedarEngine()
        policies = await PolicySets.open(store=store, engine=engine, audit=audit, clock=clock)
        revocations = await RevocationList.load(
            store, clock=clock, max_token_lifetime=settings.token_max_ttl_seconds,
            leeway=VERIFY_LEEWAY,
        )  # fmt: skip
        svids = _core.svids(settings, clock, store, audit, keyring, directory, revocations)
        redactor = Redactor(kek.derive(_core.AUDIT_HMAC_PURPOSE))
        tokens, grants = access_tokens(settings, clock, store, audit, keyring=keyring,
                                       revocations=revocations)  # fmt: skip
        shared = _shared(store)
        freshness = Freshness(
            refresh_seconds=settings.hot_state_refresh_seconds,
            parts={"revocations": revocations, "policies": policies},
        )
        checkpoint = Checkpoint(
            svids=svids, policies=policies, engine=engine, audit=audit, clock=clock,
            directory=directory, events=events, redactor=redactor, tokens=tokens,
            max_depth=settings.max_delegation_depth,
            approvals=ApprovalGate(tokens=tokens, replay=store),
            # Another replica may change the state (PostgreSQL): never decide from stale state.
            current=freshness.ensure if shared else None,
        )  # fmt: skip
        engines, revoker, leases = credential_services(
            settings, clock, store, audit, kek, events, checkpoint, keyring
        )
        delegation = delegation_services(
            settings, clock, store, audit, tokens=tokens, grants=grants, svids=svids,
            directory=directory, checkpoint=checkpoint, leases=leases, kek=kek,
        )  # fmt: skip
        registry = Registry(
            store=store, audit=audit, clock=clock, trust_domain=settings.trust_domain,
            directory=directory, revocations=revocations, on_stop=leases.revoke_agent,
        )  # fmt: skip
        mcp = mcp_services(settings, clock, store, audit, events, checkpoint,
                           delegation.approvals, leases, engines)  # fmt: skip
        monitor = monitor_service(settings, clock=clock, store=store, audit=audit,
                                  events=events, registry=registry, directory=directory,
                                  revoker=revoker)  # fmt: skip
        services = cls(
            settings=settings, clock=clock, store=store, audit=audit, keyring=keyring,
            registry=registry, operators=operators,
            client_auth=_core.client_auth(settings, clock, store, audit), svids=svids,
            revocations=revocations, policies=policies, checkpoint=checkpoint, events=events,
            directory=directory, redactor=redactor, engines=engines, leases=leases,
            revoker=revoker, delegation=delegation, mcp=mcp, monitor=monitor,
            new_root_token=new_root, freshness=freshness, shared=shared,
        )  # fmt: skip
        freshness.forget = services.forget_cached
        return services

    async def maintain(self) -> None:
        """One round of upkeep: rotate keys past their age (and learn of rotations other
        replicas made), put in force a policy version another replica applied, and forget
        single-use values and token revocations that have expired."""
        now = self.clock.now()
        await _core.audit_key_changes(self.audit, self.clock, await self.keyring.refresh(now=now))
        await self.policies.refresh()
        await self.store.purge_replay_keys(before=now)
        await self.revocations.purge()

    async def run_maintenance(self) -> None:
        """Until cancelled: :meth:`maintain` every ``maintenance_interval_seconds``, and every
        ``hot_state_refresh_seconds`` re-read the revocation list and the active policy
        version (what other replicas changed). A failed round (the store is down) is logged
        and tried again next time; a failed refresh keeps what is in force."""
        settings = self.settings
        async with asyncio.TaskGroup() as upkeep:
            upkeep.create_task(
                _every(settings.maintenance_interval_seconds, self.maintain, "maintenance_failed")
            )
            upkeep.create_task(
                _every(
                    settings.hot_state_refresh_seconds,
                    self._refresh_revocations,
                    "revocation_refresh_failed",
                )
            )
            upkeep.create_task(
                _every(
                    settings.hot_state_refresh_seconds,
                    self._refresh_policies,
                    "policy_refresh_failed",
                )
            )
            upkeep.create_task(self.monitor.run())
            upkeep.create_task(self._reap_leases())
            upkeep.create_task(_logged(self._sweep_and_reconcile, "lease_sweep_failed"))
            upkeep.create_task(
                _every(
                    settings.maintenance_interval_seconds,
                    self._sweep_and_reconcile,
                    "lease_sweep_failed",
                )
            )
            upkeep.create_task(
                _every(
                    settings.maintenance_interval_seconds,
                    self.scan_credentials,
                    "credential_scan_failed",
                )
            )
            if self.shared and isinstance(self.store, SqlStore):
                # Other replicas' changes at once, not at the next refresh.
                upkeep.create_task(ChangeListener(self.store.url).run(self._apply_change))

    async def scan_credentials(self) -> None:
        """The posture scan: publish every login in a managed system that Tether did not
        create (a standing privilege, or an agent bypassing the broker)."""
        found, failed = await self.engines.scan()
        now = self.clock.now().timestamp()
        for engine, code in failed:
            failure: dict[str, object] = {"engine": engine, "error": code}
            self.events.publish(Event(type="credential.scan_failed", time=now, data=failure))
        for engine, login in found:
            data: dict[str, object] = {"engine": engine, "login": login.name}
            data |= login.details
            self.events.publish(Event(type="credential.unmanaged_login", time=now, data=data))

    async def _reap_leases(self) -> None:
        """Until cancelled: end leases on time — waking at the next expiry, and at least every
        ``lease_reaper_interval_seconds`` (a lease issued by another replica may expire
        sooner than the one this replica knew). A failed round waits a full interval; a round
        that found nothing to take (what is due is held by another replica) waits at least
        :data:`_REAP_PAUSE`, so the loop never spins."""
        interval = self.settings.lease_reaper_interval_seconds
        while True:
            taken = await _logged(self.revoker.reap, "lease_reap_failed")
            if taken:
                continue  # more may be due: another round at once
            delay = interval
            nxt = (
                None
                if taken is None
                else await _logged(self.revoker.next_expiry, "lease_reap_failed")
            )
            if nxt is not None:
                until = (nxt - self.clock.now()).total_seconds()
                delay = min(interval, max(_REAP_PAUSE, until))
            await asyncio.sleep(delay)

    async def _sweep_and_reconcile(self) -> None:
        """Remove orphaned credentials (at start, then every maintenance interval) and end
        the leases of agents that stopped without their leases ending."""
        await self.revoker.sweep_orphans()
        await self.leases.end_stopped_agents()

    # The services are looked up at each call (not bound when the loops start).
    async def _refresh_revocations(self) -> None:
        await self.freshness.read("revocations")

    async def _refresh_policies(self) -> None:
        try:
            await self.freshness.read("policies")
        except Exception as exc:  # told to the monitor (policy_store_failed), then logged
            error = exc.code if isinstance(exc, Error) else type(exc).__name__
            self.events.publish(Event(type="policy.refresh_failed",
                                      time=self.clock.now().timestamp(),
                                      data={"error": error}))  # fmt: skip
            raise

    async def _apply_change(self, payload: str) -> None:
        await self.apply_change(payload)

    async def apply_change(self, payload: str) -> None:
        """Refresh what a change note from another replica names (:mod:`~tether.store.sql.
        changes`): the revocation list, the policy set, agents; everything for ``*``."""
        plain, agents = topics(payload)
        every = ALL in plain
        # The caches first: they do no I/O, so a failing refresh below cannot skip them.
        if every:
            self.directory.invalidate_all()
        for name in agents:
            self.directory.invalidate(name)
        self._forget_delegation(plain, every=every)
        if every or REVOCATIONS in plain:
            await self.freshness.read("revocations")
        if every or POLICIES in plain:
            await self.freshness.read("policies")
        if every:
            self.listening.set()

    async def ensure_current(self) -> None:
        """Before an answer that rests on the hot state outside the checkpoint (the token
        endpoint, introspection): resync stale state first, or raise ``StoreUnavailable``."""
        if self.shared:
            await self.freshness.ensure()

    def forget_cached(self) -> None:
        """Forget every agent, user and grant read (a resync: read afresh on next use)."""
        self.directory.invalidate_all()
        self._forget_delegation((), every=True)

    def _forget_delegation(self, plain: Sequence[str], *, every: bool) -> None:
        """Users and grants another replica changed are read afresh on the next check."""
        grants, tokens = self.delegation.grants, self.delegation.tokens
        if every or GRANTS in plain:
            grants.cache.invalidate_all()
        for topic in plain:
            if topic.startswith(GRANT_PREFIX):
                grants.cache.invalidate(topic.removeprefix(GRANT_PREFIX))
            elif topic.startswith(USER_PREFIX):
                tokens.forget_user(topic.removeprefix(USER_PREFIX))
        if every:
            tokens.forget_users()

    async def close(self) -> None:
        try:
            await self.mcp.close()
            await self.engines.close()
            await self.audit.close()
        finally:
            await self.store.close()


def _shared(store: Store) -> TypeGuard[SqlStore]:
    """Whether other replicas may write the store (PostgreSQL), so what this one keeps in
    memory can go stale."""
    return isinstance(store, SqlStore) and store.url.get_backend_name() == "postgresql"


async def _logged(work: Callable[[], Awaitable[_T]], event: str) -> _T | None:
    """``work()``, or None when it failed (logged, as :func:`_every` does)."""
    try:
        return await work()
    except Error as exc:
        log.warning(event, code=exc.code, error=exc.message)
    except Exception as exc:  # logged with its traceback; the caller's loop goes on
        log.exception(event, code="internal_error", error=type(exc).__name__)
    return None


async def _every(seconds: float, work: Callable[[], Awaitable[None]], event: str) -> None:
    """Run ``work`` every ``seconds`` until cancelled. A round that fails is logged and the
    next one runs: whatever went wrong (the store is down, a row this version cannot read),
    the loop never ends by itself — the others beside it would be cancelled with it, and the
    replica would go on deciding with frozen revocations and policies."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await work()
        except Error as exc:
            log.warning(event, code=exc.code, error=exc.message)
        except Exception as exc:  # logged with its traceback; the loop goes on
            log.exception(event, code="internal_error", error=type(exc).__name__)

"""Policy sets over time: validate, apply, roll back, compare — and the one set in force.

The operators' policy set is versioned in the store. A set is checked against the schema before
it can become active; a set that does not check is refused and the active one stays. The
compiled set in force lives in memory and is replaced in one assignment, so a decision sees
either the old set or the new one, never half of one. Replicas pick up a version another
replica applied on :meth:`PolicySets.refresh` (the server's maintenance round).

Example::

    sets = await PolicySets.open(store=store, engine=CedarEngine(), audit=sink, clock=clock)
    version = await sets.apply(text, actor=security_admin, comment="faq-bot may search")
    decision = engine.decide(sets.current, request)
"""

from __future__ import annotations

import asyncio
import builtins
import difflib
import hashlib
from collections.abc import AsyncIterable
from dataclasses import dataclass, field
from typing import Any

from tether._internal.clock import Clock
from tether.audit.records import AuditRecord
from tether.audit.sink import AuditSink
from tether.errors import InvalidInput, InvalidPolicySet, PolicySetNotFound
from tether.identity.access import Actor, Permission, require
from tether.policy.engine import CompiledPolicies, PolicyEngine
from tether.policy.models import DecisionRequest, PolicySetVersion
from tether.store.interfaces import PolicyStore

__all__ = ["MAX_COMMENT", "Flip", "PolicySets", "ReplayReport"]

MAX_COMMENT = 500


@dataclass(frozen=True, kw_only=True)
class Flip:
    """A recorded decision the proposed set would answer differently."""

    decision_id: str
    time: str
    agent: str | None
    action: str | None
    resource: str | None
    before: str
    after: str
    before_policies: tuple[str, ...]
    after_policies: tuple[str, ...]


@dataclass(kw_only=True)
class ReplayReport:
    evaluated: int = 0
    #: Decisions that cannot be replayed: refused before any policy ran (no token, wrong
    #: subject, inactive agent), or recorded before requests were kept.
    skipped: int = 0
    flips: list[Flip] = field(default_factory=list)
    #: More flips than reported (only the first ``max_flips`` are listed).
    truncated: bool = False


class PolicySets:
    def __init__(
        self, *, store: PolicyStore, engine: PolicyEngine, audit: AuditSink, clock: Clock
    ) -> None:
        self._store = store
        self._engine = engine
        self._audit = audit
        self._clock = clock
        self._current: CompiledPolicies = engine.compile("", version=None)
        # One change at a time: a refresh that read the store before an apply finished must
        # not put the older version back after it.
        self._changing = asyncio.Lock()
        #: A stored version this engine refused to compile (not tried again).
        self._refused: int | None = None

    @classmethod
    async def open(
        cls, *, store: PolicyStore, engine: PolicyEngine, audit: AuditSink, clock: Clock
    ) -> PolicySets:
        sets = cls(store=store, engine=engine, audit=audit, clock=clock)
        await sets.refresh()
        return sets

    @property
    def current(self) -> CompiledPolicies:
        """The compiled policies in force (the shipped defaults plus the active version)."""
        return self._current

    async def refresh(self) -> bool:
        """Load the active version if it is not the one in force; True if it changed. Asks
        only for the active version's number first (cheap enough for every second), and
        reads and compiles the set only when it moved."""
        version = await self._store.active_policy_version()
        if version == self._current.version:
            self._refused = None  # e.g. rolled back to the set in force
            return False
        if version is not None and version == self._refused:
            return False
        async with self._changing:
            return await self._refresh()

    @property
    def refused_version(self) -> int | None:
        """The active version this replica cannot compile (a set written for a newer schema,
        during a rolling upgrade), or None. While there is one, the checkpoint denies every
        decision and the replica reports itself not ready: deciding on the older set would
        allow what the active one forbids."""
        return self._refused

    async def _refresh(self) -> bool:
        active = await self._store.active_policy_set()
        version = active.version if active else None
        if version == self._current.version:
            return False
        # A stored version was valid when applied; if a newer schema refuses it, this raises
        # and the set in force stays — a decision never runs on a half-understood set. The
        # refused version is remembered, so it is not read and compiled again every second.
        try:
            self._current = self._engine.compile(active.text if active else "", version=version)
        except InvalidPolicySet:
            self._refused = version
            raise
        self._refused = None
        return True

    def check(self, text: str, *, actor: Actor) -> list[str]:
        require(actor, Permission.POLICY_READ)
        return self._engine.check(text)

    async def apply(
        self, text: str, *, actor: Actor, comment: str | None = None
    ) -> PolicySetVersion:
        """Store ``text`` as the next version and put it in force; ``InvalidPolicySet`` (and
        nothing stored) if it does not check."""
        require(actor, Permission.POLICY_APPLY)
        async with self._changing:
            if comment is not None and len(comment) > MAX_COMMENT:
                raise InvalidInput(f"a comment is at most {MAX_COMMENT} characters")
            compiled = self._engine.compile(text, version=None)  # raises before anything is stored
            active = await self._store.active_policy_set()
            expected = active.version if active else None
            digest = hashlib.sha256(text.encode()).hexdigest()
            now = self._clock.now()
            await self._audit.append(
                AuditRecord.new(
                    type="policy.applied",
                    actor=actor.label,
                    subject="policy-set",
                    time=now,
                    details={
                        "sha256": digest,
                        "previous_version": expected,
                        "policy_ids": list(compiled.policy_ids),
                        "comment": comment,
                    },
                )
            )
            stored = await self._store.add_policy_set(
                text=text,
                sha256=digest,
                created_at=now,
                created_by=actor.label,
                comment=comment,
                activate=True,
                expected_active=expected,
            )
            self._current = compiled.with_version(stored.version)
            return stored

    async def rollback(self, version: int, *, actor: Actor) -> PolicySetVersion:
        """Put an earlier version back in force (it is checked again first)."""
        require(actor, Permission.POLICY_APPLY)
        async with self._changing:
            target = await self._version(version)
            compiled = self._engine.compile(target.text, version=target.version)
            active = await self._store.active_policy_set()
            expected = active.version if active else None
            now = self._clock.now()
            await self._audit.append(
                AuditRecord.new(
                    type="policy.rolled_back",
                    actor=actor.label,
                    subject="policy-set",
                    time=now,
                    details={"version": version, "previous_version": expected},
                )
            )
            await self._store.activate_policy_set(version, expected_active=expected, at=now)
            self._current = compiled
            return target

    async def show(self, version: int | None, *, actor: Actor) -> PolicySetVersion | None:
        """A version, or the active one (``None`` before any was applied)."""
        require(actor, Permission.POLICY_READ)
        if version is None:
            return await self._store.active_policy_set()
        return await self._version(version)

    async def list(
        self, *, actor: Actor, limit: int = 100, before: int | None = None
    ) -> builtins.list[PolicySetVersion]:
        require(actor, Permission.POLICY_READ)
        return await self._store.list_policy_sets(limit=limit, before=before)

    async def diff(self, old: int, new: int | None, *, actor: Actor) -> str:
        """A unified diff from version ``old`` to ``new`` (default: the active one)."""
        require(actor, Permission.POLICY_READ)
        before = await self._version(old)
        after = (
            await self._version(new) if new is not None else await self._store.active_policy_set()
        )
        if after is None:
            raise PolicySetNotFound("no policy set is active")
        lines = difflib.unified_diff(
            before.text.splitlines(keepends=True),
            after.text.splitlines(keepends=True),
            fromfile=f"v{before.version}",
            tofile=f"v{after.version}",
        )
        return "".join(lines)

    async def replay(
        self,
        text: str,
        *,
        actor: Actor,
        decisions: AsyncIterable[Any],
        max_flips: int = 1000,
    ) -> ReplayReport:
        """What if ``text`` had been in force? Re-evaluate recorded decisions (audit records
        of type ``decision``, with the request the engine saw and its ``now``) against it and
        list every one that would flip. Nothing is applied."""
        require(actor, Permission.POLICY_READ)
        require(actor, Permission.AUDIT_READ)
        proposed = self._engine.compile(text, version=None)
        report = ReplayReport()
        async for record in decisions:
            details = record.details
            request = details.get("request")
            if record.type != "decision" or not isinstance(request, dict):
                report.skipped += 1
                continue
            after = self._engine.decide(proposed, DecisionRequest.from_json(request))
            report.evaluated += 1
            before = str(details.get("effect"))
            if str(after.effect) == before:
                continue
            if len(report.flips) >= max_flips:
                report.truncated = True
                continue
            report.flips.append(
                Flip(
                    decision_id=str(details.get("decision_id")),
                    time=record.time.isoformat(),
                    agent=details.get("agent"),
                    action=details.get("action"),
                    resource=details.get("resource"),
                    before=before,
                    after=str(after.effect),
                    before_policies=tuple(details.get("policy_ids") or ()),
                    after_policies=after.policy_ids,
                )
            )
        return report

    async def _version(self, version: int) -> PolicySetVersion:
        found = await self._store.get_policy_set(version)
        if found is None:
            raise PolicySetNotFound(f"no policy set version {version}")
        return found

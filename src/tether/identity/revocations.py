"""Revocation of agent tokens (JWT-SVIDs) before they expire, and the hot path's view of it.

A JWT-SVID lives a few minutes and is verified offline, so revoking one is a *deny list* the
checkpoint consults on every decision (RFC 7009 §2.2: a revoked token is refused from then on;
SPIFFE JWT-SVID §4: validators may refuse a token for reasons of their own). An entry revokes:

* ``jti``: that one token;
* ``agent``: every token of the agent (any instance) issued before the revocation;
* ``instance``: every token of that instance (its SPIFFE ID) issued before it.

"Before" has a margin, :data:`ISSUANCE_MARGIN` (30 s): a token counts as issued before the
revocation if its ``iat`` is at most that long after ``revoked_at``. A token can be in the
middle of being issued while a suspension is written (its request read the agent as active a
moment earlier), and replicas' clocks differ by a little; without the margin such a token
would outlive the revocation and, after a resume, work again. Tokens issued later than that
work again, so an agent resumed after a suspension gets fresh tokens while its old ones stay
dead (for the margin's 30 s after a revocation, new tokens of that agent are refused too).

An entry is needed only while a token it covers could still be accepted: until ``revoked_at``
plus the margin, the longest JWT-SVID lifetime, the verification leeway and a second for
``iat``'s rounding (its ``until``). So the set is small — entries of the last few minutes —
and each replica holds all of it in memory:
:class:`RevocationList` answers :meth:`~RevocationList.is_revoked` with dictionary lookups,
learns of its own revocations at once and of other replicas' on :meth:`~RevocationList.refresh`.
A refresh only ever adds what the store holds to what is known; it never drops a live entry,
and a failed refresh changes nothing.

Example::

    >>> import asyncio
    >>> from datetime import UTC, datetime
    >>> from tether._internal.clock import FixedClock
    >>> from tether.store.memory import MemoryStore
    >>> clock = FixedClock(datetime(2026, 1, 1, tzinfo=UTC))
    >>> revocations = asyncio.run(RevocationList.load(MemoryStore(clock=clock), clock=clock,
    ...                                               max_token_lifetime=300, leeway=30))
    >>> entry = revocations.entry(kind=RevocationKind.AGENT, target="faq-bot",
    ...                           actor="operator:sam", reason="key leaked")
    >>> asyncio.run(revocations.record(entry))
    >>> issued_before = int(clock.now().timestamp()) - 60
    >>> revocations.is_revoked(jti="jti_1", agent="faq-bot", instance=None,
    ...                        issued_at=issued_before)
    'agent revocation: key leaked'
    >>> revocations.is_revoked(jti="jti_2", agent="faq-bot", instance=None,
    ...                        issued_at=issued_before + 60 + ISSUANCE_MARGIN + 1) is None
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from tether._internal.clock import Clock
from tether._internal.ids import new_id

if TYPE_CHECKING:  # the store's interfaces name this module's values
    from tether.store.interfaces import RevocationStore

__all__ = ["ISSUANCE_MARGIN", "Revocation", "RevocationKind", "RevocationList"]

#: Tokens of a revoked agent or instance issued up to this long (seconds) after the revocation
#: are revoked too: see the module docstring.
ISSUANCE_MARGIN = 30


class RevocationKind(StrEnum):
    JTI = "jti"
    AGENT = "agent"
    INSTANCE = "instance"


@dataclass(frozen=True, kw_only=True)
class Revocation:
    """One entry of the deny list. ``target`` is the ``jti``, the agent's name or the
    instance's SPIFFE ID; ``until`` is when every token it covers has expired."""

    id: str
    kind: RevocationKind
    target: str
    revoked_at: datetime
    until: datetime
    actor: str
    reason: str | None = None

    def covers(self, issued_at: int | None) -> bool:
        """Whether a token of this agent or instance issued at ``issued_at`` is revoked (up to
        :data:`ISSUANCE_MARGIN` after the revocation); a token without ``iat`` is (fail
        closed)."""
        return issued_at is None or issued_at <= self.revoked_at.timestamp() + ISSUANCE_MARGIN

    @property
    def description(self) -> str:
        """Why a token is refused, as a decision's reason says it."""
        said = f"{self.kind} revocation"
        return f"{said}: {self.reason}" if self.reason else said


class RevocationList:
    """The live revocations in memory, indexed for the checkpoint; see the module docstring.

    ``max_token_lifetime`` (seconds) is the longest JWT-SVID this server issues and ``leeway``
    the verification leeway: together they decide each entry's ``until``.
    """

    def __init__(
        self, store: RevocationStore, *, clock: Clock, max_token_lifetime: int, leeway: int
    ) -> None:
        self._store = store
        self._clock = clock
        # The last token an entry covers is issued ISSUANCE_MARGIN after it, lives
        # max_token_lifetime, is accepted ``leeway`` longer, and ``iat``/``exp`` are whole
        # seconds: keep the entry until then, and a second more.
        self._keep = timedelta(seconds=ISSUANCE_MARGIN + max_token_lifetime + leeway + 1)
        self._entries: dict[str, Revocation] = {}
        self._jti: dict[str, Revocation] = {}
        self._agents: dict[str, Revocation] = {}
        self._instances: dict[str, Revocation] = {}

    @classmethod
    async def load(
        cls, store: RevocationStore, *, clock: Clock, max_token_lifetime: int, leeway: int
    ) -> RevocationList:
        """The list with every live entry of the store (what a server does at start-up)."""
        revocations = cls(store, clock=clock, max_token_lifetime=max_token_lifetime, leeway=leeway)
        await revocations.refresh()
        return revocations

    # -- the hot path ----------------------------------------------------------------------

    def blocks_issuance(self, *, agent: str, instance: str, issued_at: int) -> int:
        """Seconds until a token of ``agent``/``instance`` issued now would no longer be
        covered by a revocation (0: issue it). The token endpoint refuses to issue a token
        every check would refuse for its whole life, and says when to ask again."""
        waits = [
            int(hit.revoked_at.timestamp()) + ISSUANCE_MARGIN + 1 - issued_at
            for hit in (self._agents.get(agent), self._instances.get(instance))
            if hit is not None and hit.covers(issued_at)
        ]
        return max(waits, default=0)

    def is_revoked(
        self, *, jti: str | None, agent: str, instance: str | None, issued_at: int | None
    ) -> str | None:
        """Why the token with these claims is revoked, or ``None`` if it is not. Three
        dictionary lookups; no I/O."""
        if jti is not None and (hit := self._jti.get(jti)) is not None:
            return hit.description
        hit = self._agents.get(agent)
        if hit is not None and hit.covers(issued_at):
            return hit.description
        hit = self._instances.get(instance) if instance is not None else None
        if hit is not None and hit.covers(issued_at):
            return hit.description
        return None

    # -- changing it -----------------------------------------------------------------------

    def entry(
        self, *, kind: RevocationKind, target: str, actor: str, reason: str | None = None
    ) -> Revocation:
        """A new entry revoking as of now, kept until every token it covers has expired."""
        now = self._clock.now()
        return Revocation(
            id=new_id("rvk"),
            kind=kind,
            target=target,
            revoked_at=now,
            until=now + self._keep,
            actor=actor,
            reason=reason,
        )

    async def record(self, revocation: Revocation) -> None:
        """Write ``revocation`` to the store (durably), then put it in force here."""
        await self._store.add_revocation(revocation)
        self.add(revocation)

    def add(self, revocation: Revocation) -> None:
        """Put an entry already in the store in force on this replica."""
        self._entries[revocation.id] = revocation
        self._index(revocation, self._jti, self._agents, self._instances)

    async def refresh(self) -> None:
        """Learn the entries other replicas wrote and forget expired ones. A store failure
        propagates and leaves the list as it was."""
        stored = await self._store.list_revocations(now=self._clock.now())
        now = self._clock.now()
        # Entries added while the store was read are kept: the union never loses one.
        merged = {r.id: r for r in (*stored, *self._entries.values()) if r.until > now}
        jti: dict[str, Revocation] = {}
        agents: dict[str, Revocation] = {}
        instances: dict[str, Revocation] = {}
        for revocation in merged.values():
            self._index(revocation, jti, agents, instances)
        self._entries, self._jti, self._agents, self._instances = merged, jti, agents, instances

    async def purge(self) -> int:
        """Delete the store's expired entries (the maintenance round); how many went."""
        return await self._store.purge_revocations(before=self._clock.now())

    def live(self) -> list[Revocation]:
        """The entries in force here, oldest first."""
        now = self._clock.now()
        entries = (r for r in self._entries.values() if r.until > now)
        return sorted(entries, key=lambda r: (r.revoked_at, r.id))

    @staticmethod
    def _index(
        revocation: Revocation,
        jti: dict[str, Revocation],
        agents: dict[str, Revocation],
        instances: dict[str, Revocation],
    ) -> None:
        if revocation.kind is RevocationKind.JTI:
            jti[revocation.target] = revocation
            return
        by_target = agents if revocation.kind is RevocationKind.AGENT else instances
        known = by_target.get(revocation.target)
        # The latest revocation of a target covers every token the earlier ones did.
        if known is None or known.revoked_at <= revocation.revoked_at:
            by_target[revocation.target] = revocation

"""How current this replica's hot state is, and a resync before deciding on stale state.

Every replica decides from state it keeps in memory: the revoked tokens, the policy set in
force, agents, users and grants. Another replica's change reaches it by a change note
(:mod:`tether.store.sql.changes`, milliseconds) and, as a safety net for a note it missed, by
re-reading the revocation list and the active policy version every
``hot_state_refresh_seconds``. Both run on this replica's event loop, so neither runs while the
process is paused (``SIGSTOP``, a VM frozen, a debugger, a long GC): when it resumes, a request
can be decided before the overdue refresh or the waiting note is read — from state older than
anything the refresh promises.

So the checkpoint asks first (:meth:`Freshness.ensure`): the state is current if the revocation
list and the policy set were both last read (a refresh, or a note about them) less than
:data:`STALE_FACTOR` refresh intervals ago; if not, everything is read again before the
decision (:meth:`Freshness.resync`, once for all the requests that wait), and when that fails
the decision is refused (``store_unavailable``): a replica never decides from state it cannot
show is current. On a healthy replica the check is one clock read; SQLite (one process, no
other writer) has no freshness to check.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from tether.errors import Error, StoreUnavailable

__all__ = ["STALE_FACTOR", "Freshness", "Part"]

#: Stale after this many refresh intervals without a read of every part.
STALE_FACTOR = 2.0


class Part(Protocol):
    """A part of the hot state that reads itself again from the store."""

    async def refresh(self) -> object: ...


class Freshness:
    """When each part of the hot state was last read, and the resync that reads it all."""

    def __init__(
        self,
        *,
        refresh_seconds: float,
        parts: Mapping[str, Part],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stale_after = STALE_FACTOR * refresh_seconds
        self._parts = dict(parts)
        self._monotonic = monotonic
        started = monotonic()  # read when the services opened
        self._read_at = dict.fromkeys(self._parts, started)  # each one's last read must be recent
        #: What a full resync does besides re-reading the parts (forget cached agents, users
        #: and grants); set once the services exist.
        self.forget: Callable[[], None] = lambda: None
        self._resyncing = asyncio.Lock()
        #: Resyncs made because the state was stale (a paused replica, a silent listener).
        self.resyncs = 0

    @property
    def age(self) -> float:
        """Seconds since the least recently read part was read."""
        return self._monotonic() - min(self._read_at.values())

    async def read(self, part: str) -> None:
        """Read ``part`` again (a scheduled refresh, or a note about it); on success it counts
        as current from when the read began."""
        began = self._monotonic()
        await self._parts[part].refresh()  # looked up now: a part's method may be replaced
        self._read_at[part] = max(self._read_at[part], began)

    async def resync(self) -> None:
        """Forget what is cached and read every part again."""
        self.forget()
        for part in self._parts:
            await self.read(part)

    async def ensure(self) -> None:
        """Return at once while the state is current; else resync first (one resync for
        every request waiting), or raise :class:`StoreUnavailable` when it cannot."""
        if self.age <= self.stale_after:
            return
        async with self._resyncing:
            if self.age <= self.stale_after:  # another request's resync just made it
                return
            try:
                await self.resync()
            except Exception as exc:  # any failure: refuse, never decide from stale state
                why = exc.message if isinstance(exc, Error) else type(exc).__name__
                raise StoreUnavailable(
                    f"this replica cannot show that its revocations and policies are current: {why}"
                ) from exc
            self.resyncs += 1

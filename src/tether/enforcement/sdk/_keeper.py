"""When to renew what: the pure schedule behind the SDK's background renewal.

A client keeps its own JWT-SVID and the leases open in its ``with`` blocks alive while work
is in progress: each is renewed once two thirds of its life have passed (so a renewal that
fails has the last third to be retried in), and forgotten when its block ends. The blocking
client runs the schedule on a thread, the asynchronous one on a task; both ask this class
what is due, so the timing rule is written once. Times are monotonic seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RENEW_AT", "RETRY_SECONDS", "Schedule", "renew_time"]

#: The fraction of a credential's life after which it is renewed.
RENEW_AT = 2 / 3
#: After a failed renewal, try again this much later (never past the credential's end).
RETRY_SECONDS = 1.0


def renew_time(*, issued: float, expires: float) -> float:
    """The moment to renew a credential valid from ``issued`` to ``expires``."""
    return issued + (expires - issued) * RENEW_AT


@dataclass
class _Entry:
    due: float
    expires: float


class Schedule:
    """Keys (``"token"``, a lease id) and when each is next due."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def keep(self, key: str, *, issued: float, expires: float) -> None:
        """Renew ``key`` at two thirds of its life from ``issued`` to ``expires``."""
        self._entries[key] = _Entry(due=renew_time(issued=issued, expires=expires), expires=expires)

    def failed(self, key: str, *, now: float, final: bool = False) -> None:
        """A renewal of ``key`` failed: retry soon, while it is still valid (unless the
        refusal is ``final``)."""
        entry = self._entries.get(key)
        if entry is None:
            return
        if final or now + RETRY_SECONDS >= entry.expires:
            del self._entries[key]  # too late: it ends on its own
            return
        entry.due = now + RETRY_SECONDS

    def drop(self, key: str) -> None:
        self._entries.pop(key, None)

    def due(self, now: float) -> list[str]:
        """The keys to renew now, soonest first."""
        ready = [k for k, e in self._entries.items() if e.due <= now]
        return sorted(ready, key=lambda k: self._entries[k].due)

    def next_wake(self, now: float, *, idle: float = 60.0) -> float:
        """Seconds until the next renewal is due (``idle`` when nothing is kept)."""
        if not self._entries:
            return idle
        return max(0.0, min(e.due for e in self._entries.values()) - now)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

"""Slowing down password guessing at the sign-in form.

Failures are counted per user name and per client address over a sliding window; past the
limit, further attempts for that name or from that address are refused at once
(``temporarily_unavailable``) until the window has moved on — before any password is hashed,
so a guessing run costs the server nothing more. A success clears the name's count. The
counts are this replica's (memory, bounded); each replica slows down what reaches it.

Example::

    throttle = SignInThrottle()
    throttle.check(name="alice", address="192.0.2.7")     # raises while over the limit
    throttle.failed(name="alice", address="192.0.2.7")
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from tether.errors import TemporarilyUnavailable

__all__ = ["SignInThrottle"]

#: The most names and addresses counted at once (beyond, the counts start over).
MAX_KEYS = 100_000


class SignInThrottle:
    def __init__(
        self,
        *,
        per_name: int = 5,
        per_address: int = 20,
        window: float = 300.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = {"name": per_name, "address": per_address}
        self._window = window
        self._monotonic = monotonic
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def check(self, *, name: str, address: str | None) -> None:
        """Refuse (``temporarily_unavailable``) a name or an address over its limit."""
        for kind, key in self._keys(name, address):
            if len(self._recent((kind, key))) >= self._limits[kind]:
                raise TemporarilyUnavailable(
                    "too many failed sign-ins: wait a few minutes",
                    details={"retry_after": int(self._window)},
                )

    def failed(self, *, name: str, address: str | None) -> None:
        if len(self._failures) >= MAX_KEYS:
            self._failures.clear()
        now = self._monotonic()
        for entry in self._keys(name, address):
            self._failures.setdefault(entry, deque(maxlen=64)).append(now)

    def succeeded(self, *, name: str) -> None:
        self._failures.pop(("name", name), None)

    def _recent(self, entry: tuple[str, str]) -> deque[float]:
        times = self._failures.get(entry, deque())
        horizon = self._monotonic() - self._window
        while times and times[0] <= horizon:
            times.popleft()
        return times

    @staticmethod
    def _keys(name: str, address: str | None) -> list[tuple[str, str]]:
        keys = [("name", name[:128])]
        if address:
            keys.append(("address", address))
        return keys

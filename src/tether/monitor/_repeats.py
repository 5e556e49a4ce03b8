"""Repeats of active alerts counted in memory until the monitor's next tick writes them (see
:mod:`tether.monitor.service`, "Repeats are coalesced")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tether.monitor.models import Finding

__all__ = ["Repeat", "Repeats"]

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Repeat:
    """Findings of one alert not written yet: the latest, how many, when last seen, and the
    id of the alert they were counted for."""

    finding: Finding
    times: int
    seen: datetime
    alert_id: str


class Repeats:
    """The repeats waiting, by ``(kind, key)``."""

    def __init__(self) -> None:
        self._waiting: dict[Key, Repeat] = {}

    def count(self, found: Finding, *, seen: datetime, alert_id: str) -> None:
        """One more of ``found`` for the alert ``alert_id``."""
        key = (found.kind, found.key)
        was = self._waiting.get(key)
        self._waiting[key] = Repeat(found, 1 if was is None else was.times + 1, seen, alert_id)

    def take(self) -> dict[Key, Repeat]:
        """Every repeat waiting; none is left."""
        taken, self._waiting = self._waiting, {}
        return taken

    def pop(self, key: Key, alert_id: str) -> Repeat | None:
        """The repeats waiting for the alert ``alert_id`` of ``key`` (None when there are
        none, or they were counted for another alert)."""
        was = self._waiting.get(key)
        if was is None or was.alert_id != alert_id:
            return None
        return self._waiting.pop(key)

    def keep(self, key: Key, repeat: Repeat) -> None:
        """Put back ``repeat``, not written: merged into what was counted since (the newer
        finding and time kept)."""
        later = self._waiting.get(key)
        self._waiting[key] = (
            repeat
            if later is None
            else Repeat(later.finding, later.times + repeat.times, later.seen, later.alert_id)
        )

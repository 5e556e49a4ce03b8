"""The event stream: what the checkpoint decided and what changed, for monitoring.

Events: ``decision`` (the checkpoint), ``change`` (every other durable audit record — an agent
registered, a lease revoked, a policy applied; :func:`change_event`), and the troubles the
parts report (``impersonation``, ``lease.revocation_failed``, ``audit.sink_failed``, …; see
:mod:`tether.monitor.detectors`).

In process, fan-out, bounded. Every subscriber (a detector, the console's live feed, a metrics
exporter) has its own queue of at most ``capacity`` events. Publishing never waits and never
fails: the checkpoint answers at machine speed whatever the monitors do, so when a subscriber's
queue is full the event is dropped *for that subscriber* and counted — a monitor that falls
behind loses events, it never slows a decision down. The drop counts are public
(:attr:`EventStream.dropped`, :attr:`Subscription.dropped`) so that a lagging monitor is itself
something to alert on.

Example::

    >>> import asyncio
    >>> stream = EventStream()
    >>> feed = stream.subscribe(capacity=2)
    >>> for n in range(3):
    ...     _ = stream.publish(Event(type="decision", time=float(n), data={"n": n}))
    >>> [e.data["n"] for e in feed.drain()], feed.dropped, stream.published
    ([0, 1], 1, 3)
    >>> feed.close()
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from tether.audit.records import AuditRecord

__all__ = ["Event", "EventStream", "Subscription", "change_event"]

#: Events a subscriber may hold before new ones are dropped for it, unless it asks otherwise.
DEFAULT_CAPACITY = 10_000


@dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    """One thing that happened: a stable ``type`` tag (``decision``, …), when (Unix seconds),
    and its details (never a secret: the same values the audit record carries)."""

    type: str
    time: float
    data: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))


class Subscription:
    """One subscriber's bounded queue. Read with ``await next()`` or ``drain()``; ``close()``
    when done (the stream stops filling it)."""

    def __init__(self, stream: EventStream, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a subscription holds at least one event")
        self._stream = stream
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=capacity)
        #: Events dropped for this subscriber because its queue was full.
        self.dropped = 0

    def offer(self, event: Event) -> bool:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            return False
        return True

    async def next(self) -> Event:
        """The oldest waiting event; waits for one."""
        return await self._queue.get()

    @property
    def depth(self) -> int:
        """Events waiting to be read."""
        return self._queue.qsize()

    def drain(self) -> list[Event]:
        """Every waiting event, oldest first, without waiting."""
        taken: list[Event] = []
        while not self._queue.empty():
            taken.append(self._queue.get_nowait())
        return taken

    def close(self) -> None:
        self._stream.unsubscribe(self)


class EventStream:
    def __init__(self) -> None:
        self._subscribers: list[Subscription] = []
        #: Events published since start.
        self.published = 0
        #: Deliveries dropped since start, over every subscriber (a full queue).
        self.dropped = 0

    def subscribe(self, *, capacity: int = DEFAULT_CAPACITY) -> Subscription:
        subscription = Subscription(self, capacity)
        self._subscribers = [*self._subscribers, subscription]
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers = [s for s in self._subscribers if s is not subscription]

    def publish(self, event: Event) -> bool:
        """Hand ``event`` to every subscriber without waiting; False when any dropped it."""
        self.published += 1
        delivered = True
        for subscription in self._subscribers:
            if not subscription.offer(event):
                self.dropped += 1
                delivered = False
        return delivered


def change_event(record: AuditRecord) -> Event:
    """The ``change`` event of a durable audit record: what changed, by whom, on what, and
    whether it worked (the details stay in the log, to be read with the record's id)."""
    data = {
        "record_id": record.id,
        "record_type": record.type,
        "actor": record.actor,
        "subject": record.subject,
        "outcome": str(record.outcome),
        "correlation_id": record.correlation_id,
    }
    return Event(type="change", time=record.time.timestamp(), data=MappingProxyType(data))

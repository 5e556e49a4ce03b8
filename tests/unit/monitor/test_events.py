"""The event stream: bounded per subscriber, publishing never waits, every drop is counted."""

from __future__ import annotations

import asyncio

import pytest

from tether.monitor.events import Event, EventStream


def _event(n: int) -> Event:
    return Event(type="decision", time=float(n), data={"n": n})


def test_publish_with_no_subscriber_is_counted_and_never_fails() -> None:
    stream = EventStream()
    assert stream.publish(_event(1)) is True
    assert (stream.published, stream.dropped) == (1, 0)


def test_a_full_queue_drops_new_events_for_that_subscriber_only_and_counts_them() -> None:
    stream = EventStream()
    slow = stream.subscribe(capacity=2)
    fast = stream.subscribe(capacity=10)
    delivered = [stream.publish(_event(n)) for n in range(5)]
    assert delivered == [True, True, False, False, False]
    assert [e.data["n"] for e in slow.drain()] == [0, 1]  # the oldest are kept, in order
    assert [e.data["n"] for e in fast.drain()] == [0, 1, 2, 3, 4]
    assert (slow.dropped, fast.dropped, stream.dropped, stream.published) == (3, 0, 3, 5)


def test_a_drained_subscriber_receives_again() -> None:
    stream = EventStream()
    feed = stream.subscribe(capacity=1)
    stream.publish(_event(1))
    stream.publish(_event(2))
    assert [e.data["n"] for e in feed.drain()] == [1]
    stream.publish(_event(3))
    assert [e.data["n"] for e in feed.drain()] == [3]
    assert feed.dropped == 1


def test_closed_subscription_is_no_longer_filled() -> None:
    stream = EventStream()
    feed = stream.subscribe(capacity=1)
    feed.close()
    stream.publish(_event(1))
    stream.publish(_event(2))
    assert feed.drain() == []
    assert stream.dropped == 0


async def test_next_waits_for_the_next_event() -> None:
    stream = EventStream()
    feed = stream.subscribe()
    waiting = asyncio.create_task(feed.next())
    await asyncio.sleep(0)
    assert not waiting.done()
    stream.publish(_event(7))
    assert (await asyncio.wait_for(waiting, timeout=5)).data["n"] == 7


def test_a_subscription_holds_at_least_one_event() -> None:
    with pytest.raises(ValueError, match="at least one"):
        EventStream().subscribe(capacity=0)

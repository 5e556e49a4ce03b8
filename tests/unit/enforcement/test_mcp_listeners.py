"""Routing of an upstream's own messages to the one caller session they are for (pure logic;
the gateway end to end is in ``tests/integration/mcp/test_gateway_notices.py``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, cast

import mcp_types as types
import pytest

from tether.enforcement.mcp._listeners import MAX_KEPT, Listeners
from tether.enforcement.mcp._upstreams import (
    IDLE_SECONDS,
    MAX_LISTENERS,
    TooManyListeners,
    UpstreamPool,
)
from tether.enforcement.mcp._upstreams import _Session as _Kept


@dataclass
class _Session:
    """What a caller's session was sent: (method, related request id)."""

    sent: list[tuple[str, Any]] = field(default_factory=list)

    async def send_notification(
        self, notice: types.ServerNotification, related_request_id: Any = None
    ) -> None:
        self.sent.append((notice.method, related_request_id))


@dataclass
class _Ctx:
    session: _Session
    request_id: int


class _Pool:
    def __init__(self) -> None:
        self.stopped: list[str] = []

    def stop_listening(self, key: str) -> None:
        self.stopped.append(key)


def _listeners() -> tuple[Listeners, _Pool]:
    pool = _Pool()
    return Listeners(cast(UpstreamPool, pool)), pool


def _updated(uri: str) -> types.ResourceUpdatedNotification:
    return types.ResourceUpdatedNotification(
        params=types.ResourceUpdatedNotificationParams(uri=uri)
    )


def _log(text: str) -> types.LoggingMessageNotificationParams:
    return types.LoggingMessageNotificationParams(level="info", data=text)


async def test_an_update_of_a_resource_the_caller_did_not_subscribe_to_is_dropped() -> None:
    listeners, _ = _listeners()
    standalone = _Session()
    listener = listeners.listen("s1", cast(Any, _Ctx(standalone, 1)))
    listener.subscribed.add("kb://hours")
    await listener.receive(_updated("kb://payroll"))
    await listener.receive(_updated("kb://hours"))
    assert standalone.sent == [("notifications/resources/updated", None)]


async def test_a_log_notice_goes_on_the_newest_running_call_else_the_session_stream() -> None:
    listeners, _ = _listeners()
    standalone, first, second = _Session(), _Session(), _Session()
    listener = listeners.listen("s1", cast(Any, _Ctx(standalone, 1)))
    with listeners.calling("s1", cast(Any, _Ctx(first, 7))):
        with listeners.calling("s1", cast(Any, _Ctx(second, 8))):
            await listener.on_log(_log("both running"))
        await listener.on_log(_log("first still running"))
    await listener.on_log(_log("none running"))
    assert second.sent == [("notifications/message", 8)]
    assert first.sent == [("notifications/message", 7)]
    assert standalone.sent == [("notifications/message", None)]


async def test_input_is_refused_when_no_call_of_the_caller_runs() -> None:
    listeners, _ = _listeners()
    listener = listeners.listen("s1", cast(Any, _Ctx(_Session(), 1)))
    form = types.ElicitRequestFormParams(message="?", requested_schema={"type": "object"})
    answer = await listener.on_elicit(cast(Any, None), form)
    assert isinstance(answer, types.ErrorData)
    assert answer.code == types.INVALID_REQUEST


async def test_a_caller_session_that_ends_closes_its_upstream_session_once() -> None:
    listeners, pool = _listeners()
    listeners.listen("s1", cast(Any, _Ctx(_Session(), 1)))
    listeners.ended("s1")
    listeners.ended("s1")
    listeners.ended("never-listened")
    assert pool.stopped == ["s1"]
    assert listeners.of("s1") is None


async def test_listeners_beyond_the_bound_stop_the_least_recently_used() -> None:
    listeners, pool = _listeners()
    for n in range(MAX_KEPT):
        listeners.listen(f"s{n}", cast(Any, _Ctx(_Session(), n)))
    assert listeners.of("s0") is not None  # used: now the most recent
    listeners.listen("one-more", cast(Any, _Ctx(_Session(), 0)))
    assert pool.stopped == ["s1"]
    assert listeners.of("s0") is not None


def _pool_with(*sessions: _Kept) -> UpstreamPool:
    pool = UpstreamPool(timeout=5.0)
    pool._sessions = {s.key: s for s in sessions}  # the pool's bookkeeping is the subject
    return pool


def test_a_listening_session_that_only_waits_is_not_closed_as_idle() -> None:
    old = time.monotonic() - IDLE_SECONDS - 1
    shared = _Kept(key=("kb", 1, "", ""), used=old)
    waiting = _Kept(key=("kb", 1, "", "s1"), used=old)  # subscribed, no call for a while
    pool = _pool_with(shared, waiting)
    pool._evict()
    assert list(pool._sessions) == [waiting.key]
    assert shared.stop.is_set()
    assert not waiting.stop.is_set()


def test_listeners_beyond_the_bound_make_room_by_closing_idle_ones_or_are_refused() -> None:
    old, now = time.monotonic() - IDLE_SECONDS - 1, time.monotonic()
    busy = [_Kept(key=("kb", 1, "", f"s{n}"), used=now) for n in range(MAX_LISTENERS)]
    with pytest.raises(TooManyListeners):
        _pool_with(*busy)._make_room("kb")
    idle = _Kept(key=("kb", 1, "", "idle"), used=old)
    pool = _pool_with(*busy[1:], idle)
    pool._make_room("kb")  # room: the idle one closed
    assert idle.stop.is_set()
    assert idle.key not in pool._sessions

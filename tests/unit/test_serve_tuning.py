"""What ``tether serve`` does to its own process before serving."""

from __future__ import annotations

import gc
import sys
from typing import Any

from tether.cli.commands.serve import GC_THRESHOLDS, SWITCH_INTERVAL, _tune_process

#: The most objects one young collection may free at once: each costs about 1-2 us to walk
#: and free, so this bounds the event loop's pause to a few milliseconds.
MOST_FREED_AT_ONCE = 5_000


def test_serving_process_freezes_start_up_and_hands_the_gil_over_sooner() -> None:
    before, interval = gc.get_threshold(), sys.getswitchinterval()
    frozen_before = gc.get_freeze_count()
    survivor = [object() for _ in range(100)]  # built "at start-up"
    try:
        _tune_process()
        assert gc.get_freeze_count() >= frozen_before + len(survivor)
        assert gc.get_threshold() == GC_THRESHOLDS
        assert sys.getswitchinterval() == SWITCH_INTERVAL < interval
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
        sys.setswitchinterval(interval)


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_no_young_collection_stops_the_loop_long_on_a_gateways_cyclic_garbage() -> None:
    # The MCP gateway leaves objects in reference cycles on every call; with a young
    # threshold of 50,000 each collection freed ~50,000 of them at once (60-106 ms stalls).
    before = gc.get_threshold()
    freed: list[int] = []

    def count(phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info["generation"] == 0:
            freed.append(info["collected"])

    enabled = gc.isenabled()
    gc.collect()
    gc.enable()
    gc.set_threshold(*GC_THRESHOLDS)
    gc.callbacks.append(count)
    try:
        for _ in range(120_000):
            _Cycle()
    finally:
        gc.callbacks.remove(count)
        gc.set_threshold(*before)
        if not enabled:
            gc.disable()
    assert freed, "young collections ran"
    assert max(freed) <= MOST_FREED_AT_ONCE
    assert sum(freed) >= 100_000, "the cycles were collected as they came"

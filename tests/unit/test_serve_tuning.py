"""What ``tether serve`` does to its own process before serving."""

from __future__ import annotations

import gc

from tether.cli.commands.serve import GC_THRESHOLDS, _tune_garbage_collector


def test_serving_process_hides_startup_objects_from_the_collector_and_collects_rarely() -> None:
    before = gc.get_threshold()
    survivor = [object() for _ in range(100)]  # built "at start-up"
    try:
        _tune_garbage_collector()
        assert gc.get_freeze_count() >= len(survivor)
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] > before[0]  # young collections less often than the default
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)

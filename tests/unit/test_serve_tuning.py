"""What ``tether serve`` does to its own process before serving."""

from __future__ import annotations

import gc
import sys

from tether.cli.commands.serve import GC_THRESHOLDS, SWITCH_INTERVAL, _tune_process


def test_serving_process_collects_rarely_and_hands_the_gil_over_sooner() -> None:
    before, interval = gc.get_threshold(), sys.getswitchinterval()
    frozen_before = gc.get_freeze_count()
    survivor = [object() for _ in range(100)]  # built "at start-up"
    try:
        _tune_process()
        assert gc.get_freeze_count() >= frozen_before + len(survivor)
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] > before[0]  # young collections less often than the default
        assert sys.getswitchinterval() == SWITCH_INTERVAL < interval
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
        sys.setswitchinterval(interval)

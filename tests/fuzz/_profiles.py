"""The two Hypothesis profiles of the fuzz suite, and the settings every fuzz test takes.

``quick`` (the default, in ``make test``): 150 examples per test, derandomized so CI is
reproducible, no example database. ``fuzz`` (``TETHER_FUZZ`` set, ``make fuzz``): 20,000
examples per test (``TETHER_FUZZ_EXAMPLES`` to change it), random, with the example database
so a failure is replayed first. Both hold every example to a 1 s deadline: an input that takes
longer is a hang.

The profiles are applied per test (``@FUZZ``), never loaded globally, so the rest of the suite
keeps its own Hypothesis settings.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

__all__ = ["FUZZ", "PROFILE", "QUICK_EXAMPLES"]

#: Examples per fuzz test in the quick profile.
QUICK_EXAMPLES = 150
_DEADLINE_MS = 1000
_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]

settings.register_profile(
    "quick",
    max_examples=QUICK_EXAMPLES,
    deadline=_DEADLINE_MS,
    derandomize=True,
    database=None,
    suppress_health_check=_HEALTH,
)
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("TETHER_FUZZ_EXAMPLES", "20000")),
    deadline=_DEADLINE_MS,
    derandomize=False,
    suppress_health_check=_HEALTH,
)

#: ``fuzz`` when the environment asks for the long run, else ``quick``.
PROFILE = "fuzz" if os.environ.get("TETHER_FUZZ") else "quick"
#: The settings of the active profile, as a decorator for each fuzz test.
FUZZ = settings(settings.get_profile(PROFILE))

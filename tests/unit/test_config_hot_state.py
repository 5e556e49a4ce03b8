"""The revocation refresh interval: a bounded, safe default (a new file only because this
change did not own ``test_config.py``; the lead may fold it in there)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.config import Settings
from tether.errors import ConfigError


def test_revocations_are_refreshed_every_second_by_default(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).hot_state_refresh_seconds == 1.0


@pytest.mark.parametrize("seconds", [0.0, 0.01, 61.0])
def test_revocation_refresh_out_of_bounds_is_refused(tmp_path: Path, seconds: float) -> None:
    with pytest.raises(ConfigError, match="hot_state_refresh_seconds"):
        Settings(data_dir=tmp_path, hot_state_refresh_seconds=seconds)

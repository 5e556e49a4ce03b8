"""Fuzz suite fixtures: the Hypothesis profiles (``quick`` by default, ``fuzz`` when
``TETHER_FUZZ`` is set) and one real Tether server, in-process on a loopback port, shared by
the targets that need a signed token, a registered agent or the MCP gateway."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fuzz._profiles import PROFILE
from tests.fuzz._world import World, serving


def pytest_report_header() -> str:
    return f"tether fuzz profile: {PROFILE}"


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with serving(tmp_path_factory.mktemp("fuzz-world")) as found:
        yield found

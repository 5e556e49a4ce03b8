"""The monitor as the server runs it: a real app on SQLite in process, its upkeep (and so the
monitor) running, and a way to wait for an alert the way an operator would — by reading the
store the API lists alerts from."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from pathlib import Path

import pytest

from tests.integration.api.conftest import (  # the API tests' fixtures, shared
    ISSUER,
    ROOT,
    TRUST_DOMAIN,
    agent_token,
    client,
    make_agent,
)
from tether.api.services import Services
from tether.config import Settings
from tether.monitor.models import Alert
from tether.store.interfaces import AlertMatch

__all__ = ["agent_token", "client", "make_agent", "wait_for_alert"]

#: The issue's bound: an injected fault raises its alert within this many seconds.
WITHIN = 30.0


@pytest.fixture
def monitor_settings() -> dict[str, object]:
    """Settings a test module may change (thresholds lowered to what a test can inject)."""
    return {}


@pytest.fixture
def settings(tmp_path: Path, monitor_settings: dict[str, object]) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        issuer=ISSUER,
        trust_domain=TRUST_DOMAIN,
        root_token=ROOT,
        allowed_audiences=("https://api.acme.org",),
        **monitor_settings,  # type: ignore[arg-type]
    )


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    """The services with their upkeep running: the monitor reads the events as they come."""
    opened = await Services.open(settings)
    upkeep = asyncio.create_task(opened.run_maintenance())
    try:
        yield opened
    finally:
        upkeep.cancel()
        try:
            with suppress(asyncio.CancelledError):
                await upkeep  # an upkeep that ended in an error raises it here …
        finally:
            await opened.close()  # … after the services are closed all the same


async def wait_for_alert(
    services: Services,
    kind: str,
    *,
    where: Callable[[Alert], bool] = lambda _: True,
    within: float = WITHIN,
) -> Alert:
    """The first stored alert of ``kind`` that ``where`` accepts, once it is there; fails the
    test if none is within ``within`` seconds."""
    async with asyncio.timeout(within):
        while True:
            found = await services.store.list_alerts(AlertMatch(kind=kind), limit=100)
            for alert in found:
                if where(alert):
                    return alert
            await asyncio.sleep(0.05)

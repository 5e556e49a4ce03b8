"""The delegation services' unit tests run on the memory store with a real audit log."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.audit import open_log
from tether._internal.clock import FixedClock
from tether.audit.log import AuditLog
from tether.store.memory import MemoryStore


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def store(clock: FixedClock) -> MemoryStore:
    return MemoryStore(clock=clock)


@pytest.fixture
async def audit(store: MemoryStore, clock: FixedClock) -> AsyncIterator[AuditLog]:
    log = await open_log(store, clock)
    yield log
    await log.close()

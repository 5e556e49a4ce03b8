"""The upkeep loops outlive any failure: one that breaks must not stop the others."""

from __future__ import annotations

import asyncio
import time

import httpx
from structlog.testing import capture_logs

from tether.api.services import Services
from tether.config import Settings

from .conftest import running_replica


async def test_an_unexpected_failure_in_one_refresh_neither_ends_it_nor_the_others(
    client: httpx.AsyncClient, services: Services, settings: Settings
) -> None:
    del services  # opened first: it created the database and the keys
    async with running_replica(settings.with_(hot_state_refresh_seconds=0.05)) as replica:

        async def broken() -> None:
            raise RuntimeError("a row this version cannot read")

        replica.revocations.refresh = broken  # type: ignore[method-assign]
        with capture_logs() as logs:
            await asyncio.sleep(0.3)  # several rounds fail
            text = '@id("still-heard")\npermit (principal, action, resource);'
            applied = await client.post("/v1/policies", json={"text": text})
            assert applied.status_code == 201
            deadline = time.monotonic() + 5
            while replica.policies.current.version != applied.json()["version"]:
                assert time.monotonic() < deadline, "the policy refresh stopped with the other"
                await asyncio.sleep(0.02)
        failed = [e for e in logs if e["event"] == "revocation_refresh_failed"]
        assert len(failed) >= 2, "the failing loop ended after its first failure"
        assert failed[0]["code"] == "internal_error"
        assert failed[0]["log_level"] == "error"

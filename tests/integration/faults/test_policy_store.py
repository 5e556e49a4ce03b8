"""The policy store unavailable while the rest of the store answers (in process, over SQLite:
the table holding which policy version is active is made unreadable, the audit tables are
not).

Policies live in the store; each replica decides with the compiled set in force, held in
memory and refreshed from the store every second (:mod:`tether.policy.service`). The rule
(issue 13 §4; documented there: "a failed refresh keeps what is in force"): while the policy
store cannot be read, decisions keep the set in force — what it denies stays denied, nothing
is allowed that it does not allow —, the failure is told to the monitor, a new set cannot be
applied (503 ``store_unavailable``); once the store answers again, a set applied then is in
force at once, with no restart.
"""

from __future__ import annotations

import sqlite3

import httpx
import pytest

from tether._internal.clock import FixedClock
from tether.api.services import Services
from tether.errors import StoreUnavailable

from .conftest import agent_token, decide

#: Which policy version is active: what every refresh reads first.
TABLE = "policy_state"
WRITES = """
@id("bot-writes-orders")
permit (principal == Tether::Agent::"faq-bot", action == Tether::Action::"write", resource);
"""
WRITE = "/v1/ext_authz/orders/orders/7"


def _rename(services: Services, old: str, new: str) -> None:
    database = services.settings.data_dir / "tether.db"
    with sqlite3.connect(database, isolation_level=None) as raw:
        raw.execute("PRAGMA busy_timeout=10000")
        raw.execute(f"ALTER TABLE {old} RENAME TO {new}")
    raw.close()


async def _writes(client: httpx.AsyncClient, token: str) -> int:
    answer = await client.post(WRITE, headers={"Authorization": f"Bearer {token}"})
    return answer.status_code


async def test_policy_store_unreadable_keeps_the_set_in_force_and_allows_nothing_more(
    client: httpx.AsyncClient, clock: FixedClock, services: Services
) -> None:
    token = await agent_token(client, clock)
    in_force = services.policies.current.version
    assert (await decide(client, token), await _writes(client, token)) == (200, 403)
    events = services.events.subscribe()
    _rename(services, TABLE, f"{TABLE}_away")
    with pytest.raises(StoreUnavailable):
        await services.policies.refresh()
    with pytest.raises(StoreUnavailable):
        await services._refresh_policies()  # the server's round: told to the monitor
    assert "policy.refresh_failed" in {e.type for e in events.drain()}
    applied = await client.post("/v1/policies", json={"text": WRITES})
    assert applied.status_code == 503, applied.text
    assert applied.json()["error"]["code"] == "store_unavailable"
    assert services.policies.current.version == in_force
    assert (await decide(client, token), await _writes(client, token)) == (200, 403)
    _rename(services, f"{TABLE}_away", TABLE)
    assert await services.policies.refresh() is False, "nothing changed meanwhile"
    assert (await client.post("/v1/policies", json={"text": WRITES})).status_code == 201
    assert (await decide(client, token), await _writes(client, token)) == (403, 200)

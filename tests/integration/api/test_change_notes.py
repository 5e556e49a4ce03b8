"""Replicas on one PostgreSQL database tell each other what changed (LISTEN/NOTIFY).

The periodic refreshes are set to a minute here, so a change seen within seconds on the other
replica arrived by note, not by poll.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy.engine import make_url

from tether.api.services import Services
from tether.config import Settings
from tether.delegation.grants import ACCOUNT_SCOPE
from tether.errors import Unauthenticated
from tether.identity.models import AgentState
from tether.store.sql.changes import (
    ALL,
    CONNECTION_OPTIONS,
    ChangeListener,
    agent_topic,
    both,
    topics,
)

from ...conftest import PgCluster
from .conftest import ISSUER, ROOT, TRUST_DOMAIN, running_replica

SLOW = 60.0  # the periodic refreshes: slower than any test waits


@pytest.fixture
def settings(tmp_path: Path, pg_url: str) -> Settings:
    """Both replicas: one PostgreSQL database, the same data directory (KEK)."""
    return Settings(
        data_dir=tmp_path / "data",
        issuer=ISSUER,
        trust_domain=TRUST_DOMAIN,
        root_token=ROOT,
        allowed_audiences=("https://api.acme.org",),
        database_url_override=pg_url,
        hot_state_refresh_seconds=SLOW,
        agent_cache_seconds=SLOW,
        maintenance_interval_seconds=3600,
    )


@pytest.fixture
async def replica(settings: Settings, services: Services) -> AsyncIterator[Services]:
    """A second server on the same database, listening for change notes."""
    del services  # opened first: it created the schema and the keys
    async with running_replica(settings) as other:
        # Listening and caught up: a change made from now on can only arrive by note.
        await asyncio.wait_for(other.listening.wait(), timeout=10)
        yield other


async def eventually(condition: Callable[[], object], what: str, seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


async def refused(services: Services, token: str) -> bool:
    try:
        await services.svids.verify_agent_token(token, certificate_thumbprint=None)
    except Unauthenticated:
        return True
    return False


async def until_refused(services: Services, token: str, what: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not await refused(services, token):
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


async def test_a_revocation_reaches_the_other_replica_by_note(
    client: httpx.AsyncClient, agent_token: str, replica: Services
) -> None:
    assert not await refused(replica, agent_token)
    revoked = await client.post("/v1/svid/revocations", json={"agent": "faq-bot"})
    assert revoked.status_code == 201
    await until_refused(replica, agent_token, "no note reached the replica", 5)


async def test_a_policy_set_applied_here_is_in_force_there_by_note(
    client: httpx.AsyncClient, agent_token: str, replica: Services
) -> None:
    del agent_token  # applied the decision tests' policies (a note the replica heard)
    text = '@id("by-note")\npermit (principal, action == Tether::Action::"read", resource);'
    applied = await client.post("/v1/policies", json={"text": text})
    assert applied.status_code == 201
    await eventually(
        lambda: replica.policies.current.version == applied.json()["version"],
        "the replica did not hear of the new policy set",
    )


async def test_an_agent_suspended_here_is_read_afresh_there_by_note(
    client: httpx.AsyncClient, agent_token: str, replica: Services
) -> None:
    del agent_token
    seen = await replica.directory.get("faq-bot")  # now kept for a minute
    assert seen is not None
    assert seen.state is AgentState.ACTIVE
    suspended = await client.post("/v1/agents/faq-bot/suspend", json={"reason": "test"})
    assert suspended.status_code == 200, suspended.text

    async def state() -> AgentState:
        agent = await replica.directory.get("faq-bot")
        assert agent is not None
        return agent.state

    deadline = time.monotonic() + 5
    while await state() is not AgentState.SUSPENDED:
        assert time.monotonic() < deadline, "the replica kept the active agent"
        await asyncio.sleep(0.02)


async def test_a_listener_cut_off_reconnects_and_catches_up(
    client: httpx.AsyncClient, agent_token: str, replica: Services, pg_cluster: PgCluster
) -> None:
    assert not await refused(replica, agent_token)
    await asyncio.sleep(0.3)  # the listener is connected
    with pg_cluster.admin() as admin:
        cut = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE query LIKE 'LISTEN tether_changes%'"
        ).fetchone()
    assert cut is not None
    assert isinstance(cut[0], int)
    assert cut[0] >= 1
    revoked = await client.post("/v1/svid/revocations", json={"agent": "faq-bot"})
    assert revoked.status_code == 201
    await until_refused(replica, agent_token, "the replica never caught up after reconnecting", 10)


def test_the_listening_connection_notices_a_vanished_peer_and_gives_up_connecting() -> None:
    url = make_url("postgresql+psycopg://tether:pw@db.internal:5432/tether?sslmode=require")
    options = conninfo_to_dict(ChangeListener(url).conninfo)
    assert options["host"] == "db.internal"
    assert options["sslmode"] == "require"  # the store's own options are kept
    for key, value in CONNECTION_OPTIONS.items():
        assert options[key] == str(value), key


def test_payload_names_plain_topics_and_agents() -> None:
    payload = both(agent_topic("faq-bot"), "revocations")
    assert topics(payload) == (["revocations"], ["faq-bot"])
    assert topics(ALL) == (["*"], [])


async def test_pg_notify_is_sent_only_on_commit(pg_url: str) -> None:
    """What the writers rely on: a note from a rolled-back transaction never arrives."""
    pg_url = pg_url.replace("postgresql+psycopg://", "postgresql://", 1)
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as listener:
        await listener.execute("LISTEN tether_changes")
        async with await psycopg.AsyncConnection.connect(pg_url) as writer:
            await writer.execute("SELECT pg_notify('tether_changes', 'rolled-back')")
            await writer.rollback()
            await writer.execute("SELECT pg_notify('tether_changes', 'committed')")
            await writer.commit()
        got = [n.payload async for n in listener.notifies(timeout=2, stop_after=1)]
    assert got == ["committed"]


async def test_an_agent_registered_here_is_known_there_by_note(
    client: httpx.AsyncClient, replica: Services
) -> None:
    assert await replica.directory.get("new-bot") is None  # "no such agent", kept a minute
    body = {"name": "new-bot", "owners": ["alice"], "declarations": {}}
    assert (await client.post("/v1/agents", json=body)).status_code == 201
    deadline = time.monotonic() + 5
    while await replica.directory.get("new-bot") is None:
        assert time.monotonic() < deadline, "the replica kept 'no such agent'"
        await asyncio.sleep(0.02)


async def _grant_and_user(services: Services, client: httpx.AsyncClient) -> tuple[str, str]:
    """Alice (with a password-less account) consented to faq-bot: her token and the grant."""
    added = await client.post("/v1/users", json={"name": "alice"})
    assert added.status_code == 201, added.text
    user = await services.store.get_user("alice")
    assert user is not None
    issued = await services.delegation.tokens.issue_user_token(
        user=user, client_id="tether-cli", scopes={"faq:read", ACCOUNT_SCOPE}, session=None
    )
    consent = {"agent": "faq-bot", "scopes": ["faq:read"], "purpose": "answers",
               "purpose_code": "support"}  # fmt: skip
    made = await client.post(
        "/v1/grants", json=consent, headers={"Authorization": f"Bearer {issued.token}"}
    )
    assert made.status_code == 201, made.text
    return issued.token, made.json()["id"]


async def test_a_grant_revoked_here_is_refused_there_by_note(
    client: httpx.AsyncClient, agent_token: str, services: Services, replica: Services
) -> None:
    del agent_token  # registered faq-bot
    _, grant_id = await _grant_and_user(services, client)
    grant = await replica.delegation.grants.cache.get(grant_id)  # now kept for a minute
    assert grant is not None
    assert grant.in_force(replica.clock.now())
    assert (await client.delete(f"/v1/grants/{grant_id}")).status_code == 200

    async def in_force() -> bool:
        seen = await replica.delegation.grants.cache.get(grant_id)
        return seen is not None and seen.in_force(replica.clock.now())

    deadline = time.monotonic() + 5
    while await in_force():
        assert time.monotonic() < deadline, "the replica kept the revoked grant"
        await asyncio.sleep(0.02)


async def test_a_user_disabled_here_is_refused_there_by_note(
    client: httpx.AsyncClient, agent_token: str, services: Services, replica: Services
) -> None:
    del agent_token
    token, _ = await _grant_and_user(services, client)
    issuer = (ISSUER,)
    assert await replica.delegation.tokens.verify(token, audiences=issuer)  # kept a minute
    assert (await client.post("/v1/users/alice/disable")).status_code == 200
    deadline = time.monotonic() + 5
    while True:
        try:
            await replica.delegation.tokens.verify(token, audiences=issuer)
        except Unauthenticated:
            break
        assert time.monotonic() < deadline, "the replica kept the disabled user"
        await asyncio.sleep(0.02)

"""Revoking agent tokens over the API: refused at the checkpoint at once, on other replicas
within a refresh, by whom, and forgotten once every token they cover has expired.

The server under test runs on a :class:`FixedClock` (started at the wall clock's time), so a
test can issue a token past :data:`ISSUANCE_MARGIN` without waiting for it."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from tests.support.tokens import client_credentials
from tether._internal.clock import FixedClock
from tether.api.services import Services
from tether.config import Settings
from tether.crypto.assertion import generate_agent_key
from tether.errors import StoreUnavailable, Unauthenticated
from tether.identity.access import Actor
from tether.identity.models import Declarations
from tether.identity.revocations import ISSUANCE_MARGIN, Revocation
from tether.identity.svid import VERIFY_LEEWAY

from .conftest import ISSUER, AgentFactory, RegisteredAgent, running_replica
from .decisions import evaluation
from .test_management_api import as_, operator_token

REVOKE = "/v1/svid/revocations"
REVOKED = "unauthenticated: the token is revoked"


@pytest.fixture
def clock() -> FixedClock:
    """The server's clock: the wall clock's time at the start, then moved only by the test."""
    return FixedClock(datetime.now(UTC))


@pytest.fixture
async def services(settings: Settings, clock: FixedClock) -> AsyncIterator[Services]:
    """The conftest's server, on ``clock``."""
    opened = await Services.open(settings, clock=clock)
    try:
        yield opened
    finally:
        await opened.close()


def claims(token: str) -> dict[str, Any]:
    """The claims of a token this test got from the server (read, not verified)."""
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * 4))
    return decoded


async def evaluate(client: httpx.AsyncClient, token: str) -> dict[str, Any]:
    answer = await client.post(
        "/access/v1/evaluation", json=evaluation(), headers=as_(token), params={"explain": True}
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def ask_token(
    client: httpx.AsyncClient, agent: RegisteredAgent, clock: FixedClock
) -> httpx.Response:
    """The token endpoint's answer for ``agent``'s pod-1, the assertion signed at the server's
    (moved) clock."""
    form = client_credentials(
        agent.key.private_pem,
        client_id=agent.spiffe_id,
        audience=f"{ISSUER}/oauth2/token",
        now=clock.timestamp(),
    )
    return await client.post("/oauth2/token", data=form)


async def svid_now(client: httpx.AsyncClient, agent: RegisteredAgent, clock: FixedClock) -> str:
    """A JWT-SVID for ``agent``'s pod-1, issued at the server's (moved) clock."""
    issued = await ask_token(client, agent, clock)
    assert issued.status_code == 200, issued.text
    token: str = issued.json()["access_token"]
    return token


async def refused_for(client: httpx.AsyncClient, agent: RegisteredAgent, clock: FixedClock) -> str:
    """The token endpoint refuses a token it would have to revoke at once: 503
    ``temporarily_unavailable``, saying when to ask again."""
    refused = await ask_token(client, agent, clock)
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"] == "temporarily_unavailable"
    description: str = refused.json()["error_description"]
    return description


# -- at the checkpoint ---------------------------------------------------------------------------


async def test_revoked_token_is_an_unauthenticated_deny(
    client: httpx.AsyncClient, agent_token: str
) -> None:
    assert (await evaluate(client, agent_token))["decision"] is True  # verified and cached
    jti = claims(agent_token)["jti"]
    revoked = await client.post(REVOKE, json={"jti": jti, "reason": "leaked in a log"})
    assert revoked.status_code == 201, revoked.text
    answer = await evaluate(client, agent_token)
    assert answer["decision"] is False
    assert answer["context"]["reasons"] == [REVOKED]
    assert "leaked in a log" not in json.dumps(answer), "the holder is not told the reason"
    records = await client.get("/v1/audit", params={"type_prefix": "decision"})
    assert records.json()["records"][-1]["details"]["agent"] is None
    refused = await client.post("/v1/svid/x509", json={"csr": "unused"}, headers=as_(agent_token))
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"]["message"] == "the token is revoked"
    assert "leaked in a log" not in refused.text


async def faq_bot_key(client: httpx.AsyncClient) -> RegisteredAgent:
    """faq-bot with a new key (the ``agent_token`` fixture does not hand out its key)."""
    key = generate_agent_key()
    added = await client.post("/v1/agents/faq-bot/keys", json={"jwk": key.public_jwk})
    assert added.status_code == 201, added.text
    spiffe_id = (await client.get("/v1/agents/faq-bot")).json()["spiffe_id"]
    return RegisteredAgent(name="faq-bot", spiffe_id=spiffe_id, key=key, kid=added.json()["kid"])


async def test_agent_revocation_spares_tokens_issued_after_the_margin(
    client: httpx.AsyncClient, agent_token: str, clock: FixedClock
) -> None:
    revoked = await client.post(REVOKE, json={"agent": "faq-bot"})
    assert revoked.status_code == 201, revoked.text
    assert (await evaluate(client, agent_token))["decision"] is False
    key = await faq_bot_key(client)
    clock.advance(ISSUANCE_MARGIN)
    assert await refused_for(client, key, clock) == (
        "this agent's tokens were just revoked; ask again in 1 s"
    )
    clock.advance(1)
    fresh = await svid_now(client, key, clock)
    assert (await evaluate(client, fresh))["decision"] is True


async def test_resume_after_quarantine_does_not_revive_old_tokens(
    client: httpx.AsyncClient, agent_token: str, clock: FixedClock
) -> None:
    assert (await client.post("/v1/agents/faq-bot/quarantine")).status_code == 200
    assert (await client.post("/v1/agents/faq-bot/resume")).status_code == 200
    answer = await evaluate(client, agent_token)
    assert answer["decision"] is False
    assert answer["context"]["reasons"] == [REVOKED]
    listed = (await client.get(REVOKE)).json()["revocations"]
    assert [(r["kind"], r["target"], r["reason"]) for r in listed] == [
        ("agent", "faq-bot", "agent quarantined")
    ]
    key = await faq_bot_key(client)
    assert "ask again in" in await refused_for(client, key, clock), "within the margin"
    clock.advance(ISSUANCE_MARGIN + 1)
    fresh = await svid_now(client, key, clock)
    assert (await evaluate(client, fresh))["decision"] is True


# -- the API -------------------------------------------------------------------------------------


async def test_revocation_answers_201_with_the_entry_and_is_listed(
    client: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    await make_agent()
    created = await client.post(
        REVOKE, json={"agent": "faq-bot", "instance": "pod-1", "reason": "pod compromised"}
    )
    assert created.status_code == 201, created.text
    entry = created.json()
    assert set(entry) == {"id", "kind", "target", "revoked_at", "until", "actor", "reason"}
    assert (entry["kind"], entry["target"], entry["actor"], entry["reason"]) == (
        "instance",
        "spiffe://acme.org/agent/faq-bot/i/pod-1",
        "operator:root",
        "pod compromised",
    )
    assert entry["id"].startswith("rvk_")
    listed = await client.get(REVOKE)
    assert listed.status_code == 200
    assert listed.json() == {"revocations": [entry]}
    audit = (await client.get("/v1/audit", params={"type_prefix": "svid.revoked"})).json()
    [record] = audit["records"]
    assert record["details"]["kind"] == "instance"
    assert record["details"]["target"] == entry["target"]
    assert record["details"]["reason"] == "pod compromised"


async def test_unknown_agent_is_404_agent_not_found(client: httpx.AsyncClient) -> None:
    missing = await client.post(REVOKE, json={"agent": "ghost-bot"})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "agent_not_found"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"reason": "no target"},
        {"jti": "jti_1", "agent": "faq-bot"},
        {"instance": "pod-1"},
        {"jti": "jti_1", "evil": True},
        {"jti": "j" * 129},
    ],
)
async def test_revocation_body_names_exactly_one_target(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    refused = await client.post(REVOKE, json=body)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "invalid_input"


async def test_developer_cannot_revoke_tokens_of_an_agent_they_do_not_own(
    client: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    await make_agent()  # owned by alice
    bob = await operator_token(client, "developer", "bob")
    refused = await client.post(REVOKE, json={"agent": "faq-bot"}, headers=as_(bob))
    assert refused.status_code == 403
    assert refused.json()["error"]["details"]["permission"] == "svid.revoke"
    alice = await operator_token(client, "developer", "alice")
    own = await client.post(REVOKE, json={"agent": "faq-bot"}, headers=as_(alice))
    assert own.status_code == 201, own.text
    one = await client.post(REVOKE, json={"jti": "jti_any"}, headers=as_(alice))
    assert one.status_code == 403, "a jti alone names no owner: admins only"


async def test_revocation_needs_an_operator_token(
    client: httpx.AsyncClient, agent_token: str
) -> None:
    as_agent = await client.post(REVOKE, json={"agent": "faq-bot"}, headers=as_(agent_token))
    assert as_agent.status_code == 401
    assert (await client.get(REVOKE, headers=as_("tto_wrong"))).status_code == 401


# -- other replicas, and forgetting ----------------------------------------------------------


@pytest.fixture
async def replica(settings: Settings, services: Services) -> AsyncIterator[Services]:
    """A second server on the same database, refreshing its hot-path state every 50 ms."""
    del services  # opened first: it created the database and the keys
    async with running_replica(settings.with_(hot_state_refresh_seconds=0.05)) as other:
        yield other


async def refusal(services: Services, token: str) -> str | None:
    """Why ``services`` refuses ``token``, or None if it accepts it."""
    try:
        await services.svids.verify_agent_token(token, certificate_thumbprint=None)
    except Unauthenticated as exc:
        return exc.message
    return None


async def test_other_replica_refuses_a_revoked_token_within_a_refresh(
    client: httpx.AsyncClient, agent_token: str, replica: Services
) -> None:
    await replica.svids.verify_agent_token(agent_token, certificate_thumbprint=None)
    assert (await client.post(REVOKE, json={"agent": "faq-bot"})).status_code == 201
    deadline = time.monotonic() + 2
    while (refused := await refusal(replica, agent_token)) is None:
        assert time.monotonic() < deadline, "the replica did not learn of the revocation"
        await asyncio.sleep(0.02)
    assert refused == "the token is revoked"


async def test_other_replica_decides_with_a_policy_set_applied_here_within_a_refresh(
    client: httpx.AsyncClient, replica: Services
) -> None:
    before = replica.policies.current.version
    text = '@id("new-rule")\npermit (principal, action == Tether::Action::"read", resource);'
    applied = await client.post("/v1/policies", json={"text": text})
    assert applied.status_code == 201, applied.text
    deadline = time.monotonic() + 2
    while replica.policies.current.version == before:
        assert time.monotonic() < deadline, "the replica did not learn of the new policy set"
        await asyncio.sleep(0.02)
    assert replica.policies.current.version == applied.json()["version"]
    assert "new-rule" in replica.policies.current.policy_ids


async def test_failed_refresh_is_logged_and_keeps_the_last_list(
    client: httpx.AsyncClient, agent_token: str, replica: Services
) -> None:
    assert (await client.post(REVOKE, json={"agent": "faq-bot"})).status_code == 201
    await replica.revocations.refresh()

    async def down(*, now: object) -> list[Revocation]:
        raise StoreUnavailable("the database is down")

    replica.store.list_revocations = down  # type: ignore[method-assign]
    with capture_logs() as logs:
        await asyncio.sleep(0.3)  # several refresh rounds fail
    assert any(e["event"] == "revocation_refresh_failed" for e in logs)
    with pytest.raises(Unauthenticated, match="revoked"):
        await replica.svids.verify_agent_token(agent_token, certificate_thumbprint=None)


async def test_maintenance_purges_revocations_whose_tokens_have_all_expired(
    settings: Settings,
) -> None:
    clock = FixedClock()
    services = await Services.open(settings, clock=clock)
    try:
        start = clock.now()
        await services.registry.register(
            actor=Actor.system("test"),
            name="faq-bot",
            owners=["alice"],
            description="",
            declarations=Declarations(),
        )
        entry = await services.svids.revoke(actor=Actor.system("test"), agent="faq-bot")
        # Kept as long as any token the revocation covers may live: delegated tokens of the
        # agent's instances too, which may outlive its JWT-SVIDs.
        keep = ISSUANCE_MARGIN + settings.token_max_ttl_seconds + VERIFY_LEEWAY + 1
        assert entry.until == start + timedelta(seconds=keep)
        clock.advance(keep - 0.001)
        await services.maintain()
        assert len(await services.store.list_revocations(now=start)) == 1, "tokens may live"
        clock.advance(0.001)
        await services.maintain()
        assert await services.store.list_revocations(now=start) == []
    finally:
        await services.close()

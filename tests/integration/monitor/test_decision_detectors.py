"""Detectors fed by the checkpoint's decisions: each behaviour injected through the real API,
its alert expected within 30 s.

Where a test must show that something is *not* alerted on, it does not wait a while and hope:
the monitor reads the events in the order the checkpoint published them, one at a time, so once
the alert of a *later* event is stored, the earlier one has been read and judged."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from tests.integration.api.conftest import ISSUER, ROOT, TRUST_DOMAIN, AgentFactory
from tests.integration.api.decisions import evaluation, svid
from tests.integration.api.forge import forge
from tests.integration.api.test_authzen import on_flaky_sink
from tests.integration.api.test_token_exchange_api import ORDERS, _exchange, _user_token
from tether.api.app import create_app
from tether.api.services import Services
from tether.config import Settings
from tether.crypto.assertion import generate_agent_key
from tether.crypto.jwt import UnverifiedToken
from tether.delegation.grants import ACCOUNT_SCOPE
from tether.monitor.models import Alert, AlertState, Severity
from tether.store.interfaces import AlertMatch

from .conftest import wait_for_alert

#: Password hashing cheap enough for a test that adds a person.
FAST_PASSWORDS = {"password_memory_kib": 32, "password_time_cost": 1}
GHOST = f"spiffe://{TRUST_DOMAIN}/agent/ghost/i/1"


def as_(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def thresholds(**changed: object) -> pytest.MarkDecorator:
    """The module's ``monitor_settings`` for one test (direct parametrization)."""
    return pytest.mark.parametrize("monitor_settings", [changed], ids=["settings"])


async def evaluate(client: httpx.AsyncClient, token: str, tool: str = "search_faq") -> Any:
    answer = await client.post("/access/v1/evaluation", json=evaluation(tool), headers=as_(token))
    assert answer.status_code in {200, 503}, answer.text
    return answer.json()


def forged(sub: str = GHOST) -> str:
    """A well-formed JWT-SVID, signed by a key Tether has never seen, claiming ``sub``."""
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": sub, "aud": ISSUER, "iat": now, "exp": now + 300,
              "jti": f"jti_{now}"}  # fmt: skip
    header = {"alg": "ES256", "typ": "JWT", "kid": "not-a-tether-key"}
    return forge(generate_agent_key().private_pem, claims, header=header)


def sub_of(token: str) -> str:
    sub: str = UnverifiedToken.parse(token).claims["sub"]
    return sub


async def records(client: httpx.AsyncClient, prefix: str) -> list[dict[str, Any]]:
    page = await client.get("/v1/audit", params={"type_prefix": prefix, "limit": 1000})
    assert page.status_code == 200, page.text
    found: list[dict[str, Any]] = page.json()["records"]
    return found


async def alerts_of(services: Services, kind: str) -> list[Alert]:
    return await services.store.list_alerts(AlertMatch(kind=kind), limit=100)


async def test_an_undeclared_tool_call_raises_out_of_declaration_and_reassesses_the_agent(
    client: httpx.AsyncClient, services: Services, agent_token: str
) -> None:
    # faq-bot declared search_faq and transfer only.
    answer = await client.post(
        "/access/v1/evaluation", json=evaluation("wire_money"), headers=as_(agent_token)
    )
    assert answer.status_code == 200
    alert = await wait_for_alert(services, "out_of_declaration")
    assert (alert.agent, alert.owners) == ("faq-bot", ("alice",))
    assert alert.details["resource"] == 'Tool::"wire_money"'
    # The risk assessment runs again, counting what the agent was seen doing.
    assessments = (await client.get("/v1/agents/faq-bot/assessments")).json()["assessments"]
    latest = assessments[-1]
    assert latest["assessed_by"] == "system:monitor"
    assert {f["code"] for f in latest["factors"]} >= {"undeclared_use"}
    assert latest["score"] > assessments[0]["score"]


# -- who is calling ------------------------------------------------------------------------------


async def _users_own_token(client: httpx.AsyncClient, services: Services) -> str:
    added = await client.post("/v1/users", json={"name": "alice", "password": "a" * 16})
    assert added.status_code == 201, added.text
    return await _user_token(services, "alice", {"orders:read", "profile"})


@thresholds(**FAST_PASSWORDS)
async def test_a_users_own_token_presented_as_an_agent_raises_impersonation(
    client: httpx.AsyncClient, services: Services, agent_token: str
) -> None:
    users_token = await _users_own_token(client, services)
    body = evaluation() | {"subject": {"type": "agent", "id": "faq-bot"}}
    answer = await client.post("/access/v1/evaluation", json=body, headers=as_(users_token))
    assert answer.json()["decision"] is False
    alert = await wait_for_alert(services, "impersonation")
    assert (alert.severity, alert.state) == (Severity.CRITICAL, AlertState.OPEN)
    assert alert.details["enforcement_point"] == "authzen"


@thresholds(**FAST_PASSWORDS)
async def test_an_impersonation_alert_names_the_user_whose_token_was_presented(
    client: httpx.AsyncClient, services: Services, agent_token: str
) -> None:
    users_token = await _users_own_token(client, services)
    # Whatever agent the enforcement point says is asking (or none), it is alice's token.
    claimed = evaluation() | {"subject": {"type": "agent", "id": "faq-bot"}}
    for body in (claimed, evaluation()):
        answer = await client.post("/access/v1/evaluation", json=body, headers=as_(users_token))
        assert answer.json()["decision"] is False
    alert = await wait_for_alert(services, "impersonation", where=lambda a: a.count == 2)
    assert alert.key == "alice", alert.summary
    assert "user alice's own token" in alert.summary
    assert [a.id for a in await alerts_of(services, "impersonation")] == [alert.id]


async def test_a_token_from_an_unregistered_agent_raises_unknown_caller(
    client: httpx.AsyncClient, services: Services
) -> None:
    token = forged(GHOST)
    answer = await client.post("/access/v1/evaluation", json=evaluation(), headers=as_(token))
    assert answer.json()["decision"] is False
    alert = await wait_for_alert(services, "unknown_caller")
    assert (alert.key, alert.severity, alert.agent) == (GHOST, Severity.MEDIUM, None)
    assert alert.details["refusal"] == "invalid_token"
    assert alert.details["presented"] == GHOST


async def test_an_expired_token_is_not_an_unknown_caller(
    client: httpx.AsyncClient, services: Services, agent_token: str
) -> None:
    # faq-bot's own token, as Tether signed it, but ten minutes older: it has aged out.
    claims = dict(UnverifiedToken.parse(agent_token).claims)
    for name in ("iat", "nbf", "exp"):
        claims[name] -= 600
    expired = services.keyring.signer.sign_jwt(claims)
    refused = await evaluate(client, expired)
    assert refused["decision"] is False
    # A later event: once its alert is stored, the expired token's event has been judged.
    await evaluate(client, forged(GHOST))
    await wait_for_alert(services, "unknown_caller", where=lambda a: a.key == GHOST)
    assert [a.key for a in await alerts_of(services, "unknown_caller")] == [GHOST]


async def test_a_revoked_token_used_raises_revoked_credential_used(
    client: httpx.AsyncClient, services: Services, agent_token: str
) -> None:
    jti = UnverifiedToken.parse(agent_token).claims["jti"]
    revoked = await client.post("/v1/svid/revocations", json={"jti": jti, "reason": "leaked"})
    assert revoked.status_code == 201, revoked.text
    assert (await evaluate(client, agent_token))["decision"] is False
    alert = await wait_for_alert(services, "revoked_credential_used")
    assert (alert.key, alert.severity) == (sub_of(agent_token), Severity.HIGH)
    assert alert.details["refusal"] == "revoked"
    # Its signature verified before it was found revoked: the agent named is genuine.
    assert (alert.agent, alert.owners) == ("faq-bot", ("alice",))


# -- delegation ----------------------------------------------------------------------------------

#: shop-bot reads orders for its user; ship-bot is asked by shop-bot to do it (a second hop).
CHAIN_POLICIES = """
@id("bots-read-orders-for-their-user")
permit (principal, action == Tether::Action::"read", resource == Tether::Api::"orders")
when { context has user };
"""


@asynccontextmanager
async def lenient_replica(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Another server on the same data directory whose token exchange lets a chain grow to
    the default depth: tokens it mints are verified by the server under test."""
    lenient = settings.with_(max_delegation_depth=4)
    other = await Services.open(lenient)
    try:
        app = create_app(lenient, services=other)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url=ISSUER, headers=as_(ROOT)
        ) as client:
            yield client
    finally:
        await other.close()


@thresholds(max_delegation_depth=1, **FAST_PASSWORDS)
async def test_a_delegation_chain_deeper_than_allowed_raises_chain_too_deep(
    client: httpx.AsyncClient, services: Services, settings: Settings, make_agent: AgentFactory
) -> None:
    # This server allows one actor. Its own token exchange refuses a second hop, so the
    # two-hop token comes from a replica configured for more (a configuration drift between
    # replicas, or a token minted before the limit was lowered).
    shop = await make_agent("shop-bot", may_call_agents=True)
    ship = await make_agent("ship-bot")
    assert (await client.post("/v1/policies", json={"text": CHAIN_POLICIES})).status_code == 201
    added = await client.post("/v1/users", json={"name": "alice", "password": "a" * 16})
    assert added.status_code == 201, added.text
    user = await _user_token(services, "alice", {"orders:read", ACCOUNT_SCOPE})
    for agent in ("shop-bot", "ship-bot"):
        consent = {"agent": agent, "scopes": ["orders:read"], "purpose": "my orders",
                   "purpose_code": "order-tracking"}  # fmt: skip
        granted = await client.post("/v1/grants", json=consent, headers=as_(user))
        assert granted.status_code == 201, granted.text
    hop1 = await _exchange(client, user, await svid(client, shop), audience=ship.spiffe_id)
    assert hop1.status_code == 200, hop1.text
    ship_svid = await svid(client, ship)
    refused = await _exchange(client, hop1.json()["access_token"], ship_svid)
    assert refused.status_code == 400, "this server's exchange refuses the second hop"
    async with lenient_replica(settings) as lenient:
        hop2 = await _exchange(lenient, hop1.json()["access_token"], ship_svid)
    assert hop2.status_code == 200, hop2.text
    answer = await client.post(
        "/access/v1/evaluation",
        json={"action": {"name": "read"}, "resource": ORDERS},
        headers=as_(hop2.json()["access_token"]),
    )
    assert answer.json()["decision"] is False
    alert = await wait_for_alert(services, "chain_too_deep")
    assert (alert.key, alert.agent, alert.severity) == ("ship-bot", "ship-bot", Severity.HIGH)
    assert alert.owners == ("alice",)


# -- over a window -------------------------------------------------------------------------------


@thresholds(monitor_burst_limit=5)
async def test_denied_requests_in_a_burst_raise_denied_burst(
    client: httpx.AsyncClient, services: Services, agent_token: str
) -> None:
    for _ in range(5):
        assert (await evaluate(client, agent_token, "wire_money"))["decision"] is False
    alert = await wait_for_alert(services, "denied_burst")
    assert (alert.key, alert.agent, alert.severity) == ("faq-bot", "faq-bot", Severity.HIGH)
    assert alert.details["denied"] >= 5


@thresholds(monitor_spike_window_seconds=10, monitor_spike_min_decisions=5)
async def test_a_deny_rate_spike_raises_deny_rate_spike(
    client: httpx.AsyncClient, services: Services, agent_token: str
) -> None:
    assert (await evaluate(client, agent_token))["decision"] is True
    for _ in range(8):
        assert (await evaluate(client, agent_token, "wire_money"))["decision"] is False
    alert = await wait_for_alert(services, "deny_rate_spike")
    assert (alert.key, alert.severity) == ("all", Severity.HIGH)
    assert alert.details["share"] >= 0.5


@thresholds(monitor_spike_window_seconds=10, monitor_spike_min_decisions=5)
async def test_decisions_failing_in_the_checkpoint_raise_error_rate_spike(
    client: httpx.AsyncClient, services: Services, agent_token: str
) -> None:
    sink = on_flaky_sink(services)
    assert (await evaluate(client, agent_token))["decision"] is True
    sink.mode = "fail"  # the audit store is down: every decision fails (and is denied)
    for _ in range(5):
        assert (await evaluate(client, agent_token))["decision"] is False
    alert = await wait_for_alert(services, "error_rate_spike")
    assert (alert.key, alert.severity) == ("all", Severity.HIGH)
    assert alert.details["share"] >= 0.05


async def test_a_decision_that_cannot_be_recorded_raises_audit_sink_failed(
    client: httpx.AsyncClient, services: Services, agent_token: str
) -> None:
    on_flaky_sink(services).mode = "fail"
    answer = await client.post("/access/v1/evaluation", json=evaluation(), headers=as_(agent_token))
    assert answer.status_code == 503
    alert = await wait_for_alert(services, "audit_sink_failed")
    assert (alert.key, alert.severity) == ("decisions", Severity.CRITICAL)
    assert alert.details["decision_id"] == answer.json()["context"]["id"]


# -- one alert per problem -----------------------------------------------------------------------


async def test_the_same_finding_twice_bumps_one_alert(
    client: httpx.AsyncClient, services: Services
) -> None:
    for _ in range(2):
        await evaluate(client, forged(GHOST))
    alert = await wait_for_alert(services, "unknown_caller", where=lambda a: a.count == 2)
    assert alert.state is AlertState.OPEN
    assert [a.id for a in await alerts_of(services, "unknown_caller")] == [alert.id]
    raised = [r for r in await records(client, "alert.") if r["type"] == "alert.raised"]
    assert [r["details"]["alert_id"] for r in raised] == [alert.id]
    assert raised[0]["actor"] == "system:monitor"


# -- the automatic response ----------------------------------------------------------------------


@thresholds(monitor_burst_limit=5)
async def test_quarantine_on_alerts_is_off_by_default(
    client: httpx.AsyncClient, services: Services, agent_token: str
) -> None:
    for _ in range(5):
        await evaluate(client, agent_token, "wire_money")
    await wait_for_alert(services, "denied_burst")
    # A later event: once its alert is stored, the burst's alert has been answered (or not).
    await evaluate(client, forged(GHOST))
    await wait_for_alert(services, "unknown_caller")
    assert (await client.get("/v1/agents/faq-bot")).json()["state"] == "active"
    assert [r for r in await records(client, "alert.response")] == []
    assert (await evaluate(client, agent_token))["decision"] is True


async def _response_record(client: httpx.AsyncClient) -> dict[str, Any]:
    """The ``alert.response`` record, once it is there (within 30 s)."""
    deadline = time.monotonic() + 30
    while not (found := await records(client, "alert.response")):
        assert time.monotonic() < deadline, "no alert.response record within 30 s"
        await asyncio.sleep(0.05)
    [record] = found
    return record


@thresholds(monitor_burst_limit=5, alert_quarantine_at="high")
async def test_quarantine_response_quarantines_the_agent_and_is_audited(
    client: httpx.AsyncClient, services: Services, agent_token: str
) -> None:
    for _ in range(5):
        await evaluate(client, agent_token, "wire_money")
    alert = await wait_for_alert(services, "denied_burst")
    record = await _response_record(client)
    assert record["outcome"] == "success"
    assert record["actor"] == "system:monitor"
    assert record["subject"] == f"alert:{alert.id}"
    assert record["details"]["action"] == "quarantine"
    assert record["details"]["agent"] == "faq-bot"
    assert record["details"]["alert_id"] == alert.id
    assert (await client.get("/v1/agents/faq-bot")).json()["state"] == "quarantined"
    after = await client.post(
        "/access/v1/evaluation",
        json=evaluation(),
        headers=as_(agent_token),
        params={"explain": True},
    )
    assert after.json()["decision"] is False


@thresholds(alert_quarantine_at="high")
async def test_a_revoked_token_used_quarantines_its_agent_when_responses_are_on(
    client: httpx.AsyncClient, services: Services, agent_token: str
) -> None:
    jti = UnverifiedToken.parse(agent_token).claims["jti"]
    revoked = await client.post("/v1/svid/revocations", json={"jti": jti, "reason": "leaked"})
    assert revoked.status_code == 201, revoked.text
    await evaluate(client, agent_token)
    alert = await wait_for_alert(services, "revoked_credential_used")
    record = await _response_record(client)
    assert (record["outcome"], record["details"]["alert_id"]) == ("success", alert.id)
    assert (await client.get("/v1/agents/faq-bot")).json()["state"] == "quarantined"

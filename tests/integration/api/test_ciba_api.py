"""Approvals (OpenID CIBA, poll mode) over HTTP on the SQLite store: an agent asks, its user
answers in the inbox, the agent polls and redeems; each rule of the issue is a test, named
after it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.calls import CALLS, FEE, TRANSFER, TRANSFER_CALL, item
from tether.api.services import Services
from tether.config import Settings
from tether.crypto.assertion import sign_client_assertion
from tether.crypto.jwt import UnverifiedToken
from tether.delegation import ciba
from tether.delegation.ciba import GRANT_TYPE as CIBA
from tether.delegation.grants import ACCOUNT_SCOPE
from tether.delegation.models import Approval, ApprovalMatch, ApprovalState
from tether.delegation.token_exchange import ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE
from tether.delegation.token_exchange import GRANT_TYPE as TOKEN_EXCHANGE
from tether.identity.client_auth import ASSERTION_TYPE

from .conftest import ISSUER, ROOT, TRUST_DOMAIN, AgentFactory, RegisteredAgent
from .decisions import evaluation, svid

__all__ = ["FEE", "TRANSFER", "World", "make_world"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        issuer=ISSUER,
        trust_domain=TRUST_DOMAIN,
        root_token=ROOT,
        password_memory_kib=32,
        password_time_cost=1,
        approval_requests_per_minute=3,
        dev=True,  # pings reach the tests' receivers on loopback
    )


@dataclass
class World:
    client: httpx.AsyncClient
    services: Services
    bank: RegisteredAgent
    alice: dict[str, str]
    bob: dict[str, str]

    def auth(self, instance: str = "pod-1", agent: RegisteredAgent | None = None) -> dict[str, str]:
        """Client authentication of an instance of ``agent`` (private_key_jwt)."""
        agent = agent or self.bank
        assertion = sign_client_assertion(
            agent.key.private_pem, client_id=agent.spiffe_id, audience=ISSUER, now=int(time.time())
        )
        return {
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
            "instance_id": instance,
        }

    async def ask(self, *digests: str, **fields: str) -> httpx.Response:
        items = [item(CALLS[d], amount="100.00") for d in digests]
        form = {
            "login_hint": "alice",
            "scope": "openid",
            "binding_message": "TX-42",
            "authorization_details": json.dumps(items),
            **self.auth(),
        } | fields
        return await self.client.post("/oauth2/bc-authorize", data=form)

    async def poll(self, auth_req_id: str, instance: str = "pod-1") -> httpx.Response:
        form = {"grant_type": CIBA, "auth_req_id": auth_req_id, **self.auth(instance)}
        return await self.client.post("/oauth2/token", data=form)

    async def inbox(self, who: dict[str, str], **params: str) -> list[dict[str, Any]]:
        listed = await self.client.get("/v1/approvals", params=params, headers=who)
        assert listed.status_code == 200, listed.text
        found: list[dict[str, Any]] = listed.json()["approvals"]
        return found


async def _own_token(services: Services, name: str) -> dict[str, str]:
    user = await services.store.get_user(name)
    assert user is not None
    issued = await services.delegation.tokens.issue_user_token(
        user=user, client_id="tether-cli", scopes={ACCOUNT_SCOPE}, session="sid_1"
    )
    return {"Authorization": f"Bearer {issued.token}"}


@pytest.fixture
async def world(client: httpx.AsyncClient, services: Services, make_agent: AgentFactory) -> World:
    return await make_world(client, services, make_agent)


async def make_world(
    client: httpx.AsyncClient, services: Services, make_agent: AgentFactory, **declarations: object
) -> World:
    """bank-bot (with ``declarations``), alice and bob, and their own sign-ins."""
    bank = await make_agent("bank-bot", **declarations)
    for name in ("alice", "bob"):
        added = await client.post("/v1/users", json={"name": name, "password": "p" * 16})
        assert added.status_code == 201, added.text
    alice, bob = await _own_token(services, "alice"), await _own_token(services, "bob")
    return World(client, services, bank, alice, bob)


async def _records(world: World, kind: str) -> list[dict[str, Any]]:
    found = await world.client.get("/v1/audit", params={"type_prefix": kind, "limit": 1000})
    assert found.status_code == 200, found.text
    return [r for r in found.json()["records"] if r["type"] == kind]


def _error(response: httpx.Response) -> str:
    assert response.status_code in (400, 401, 403), response.text
    return str(response.json()["error"])


async def test_ciba_poll_approve_redeem_round_trip_over_http(world: World) -> None:
    asked = await world.ask(TRANSFER)
    assert asked.status_code == 200, asked.text
    body = asked.json()
    assert set(body) == {"auth_req_id", "expires_in", "interval"}
    assert len(body["auth_req_id"]) >= 43
    assert body["interval"] == 5
    assert _error(await world.poll(body["auth_req_id"])) == "authorization_pending"
    [pending] = await world.inbox(world.alice, state="pending")
    assert pending["binding_message"] == "TX-42"
    assert pending["authorization_details"][0]["amount"] == "100.00"
    answered = await world.client.post(
        f"/v1/approvals/{pending['id']}/approve", json={}, headers=world.alice
    )
    assert answered.status_code == 200, answered.text
    assert answered.json()["state"] == "approved"
    await _wait_interval(world)
    redeemed = await world.poll(body["auth_req_id"])
    assert redeemed.status_code == 200, redeemed.text
    token = UnverifiedToken.parse(redeemed.json()["access_token"]).claims
    assert token["approver"] == "alice"
    assert token["approval_id"] == pending["id"]
    assert token["sub"] == "alice"
    assert token["act"] == {"sub": f"{world.bank.spiffe_id}/i/pod-1"}
    assert [d["call_digest"] for d in token["authorization_details"]] == [TRANSFER]
    assert UnverifiedToken.parse(redeemed.json()["id_token"]).claims["sub"] == "alice"
    await _wait_interval(world)
    assert _error(await world.poll(body["auth_req_id"])) == "invalid_grant"


async def _wait_interval(world: World) -> None:
    """The poll interval, passed on the server's clock (the tests' clock is the system's: the
    last poll's time is moved back instead of sleeping 5 s)."""
    store = world.services.store
    for approval in await store.list_approvals(ApprovalMatch()):
        if approval.last_polled_at is not None:
            moved = replace(
                approval,
                last_polled_at=approval.last_polled_at - timedelta(seconds=approval.interval),
                version=approval.version + 1,
            )
            await store.update_approval(moved, expected_version=approval.version)


async def test_ciba_poll_faster_than_interval_gets_slow_down(world: World) -> None:
    auth_req_id = (await world.ask(TRANSFER)).json()["auth_req_id"]
    assert _error(await world.poll(auth_req_id)) == "authorization_pending"
    assert _error(await world.poll(auth_req_id)) == "slow_down"


async def test_ciba_poll_racing_the_persons_answer_is_answered_from_the_answer_not_slowed_down(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The person approves between the poll's read and its write: the poll reads the request
    again and redeems it (once), instead of telling a well-behaved agent to slow down."""
    auth_req_id = (await world.ask(TRANSFER)).json()["auth_req_id"]
    assert _error(await world.poll(auth_req_id)) == "authorization_pending"
    await _wait_interval(world)
    store = world.services.store
    write = store.update_approval
    raced: list[str] = []

    async def answered_first(approval: Approval, *, expected_version: int) -> None:
        if not raced and approval.state is ApprovalState.PENDING:
            raced.append(approval.id)  # the poll's write of its time, after its read
            current = await store.get_approval(approval.id)
            assert current is not None
            now = current.last_polled_at or current.created_at
            yes = ciba.answer(current, user="alice", approve=[0], now=now)
            await write(replace(yes, version=current.version + 1), expected_version=current.version)
        await write(approval, expected_version=expected_version)

    monkeypatch.setattr(store, "update_approval", answered_first)
    redeemed = await world.poll(auth_req_id)
    assert raced, "the person's answer landed between the poll's read and write"
    assert redeemed.status_code == 200, redeemed.text
    token = UnverifiedToken.parse(redeemed.json()["access_token"]).claims
    assert [d["call_digest"] for d in token["authorization_details"]] == [TRANSFER]
    await _wait_interval(world)
    assert _error(await world.poll(auth_req_id)) == "invalid_grant", "redeemed once only"


async def test_ciba_user_refusal_gets_access_denied(world: World) -> None:
    auth_req_id = (await world.ask(TRANSFER)).json()["auth_req_id"]
    [pending] = await world.inbox(world.alice)
    denied = await world.client.post(f"/v1/approvals/{pending['id']}/deny", headers=world.alice)
    assert denied.status_code == 200, denied.text
    assert _error(await world.poll(auth_req_id)) == "access_denied"


async def test_ciba_partial_approval_token_carries_only_the_approved_items(world: World) -> None:
    auth_req_id = (await world.ask(TRANSFER, FEE)).json()["auth_req_id"]
    [pending] = await world.inbox(world.alice)
    answered = await world.client.post(
        f"/v1/approvals/{pending['id']}/approve", json={"items": [1]}, headers=world.alice
    )
    assert answered.json()["approved"] == [1]
    redeemed = await world.poll(auth_req_id)
    assert redeemed.status_code == 200, redeemed.text
    items = UnverifiedToken.parse(redeemed.json()["access_token"]).claims["authorization_details"]
    assert [d["call_digest"] for d in items] == [FEE]


async def test_ciba_another_instance_redeeming_gets_invalid_grant_and_is_recorded(
    world: World,
) -> None:
    auth_req_id = (await world.ask(TRANSFER)).json()["auth_req_id"]
    [pending] = await world.inbox(world.alice)
    await world.client.post(f"/v1/approvals/{pending['id']}/approve", json={}, headers=world.alice)
    assert _error(await world.poll(auth_req_id, instance="pod-2")) == "invalid_grant"
    # The asker still gets its token: the thief's attempt took nothing away.
    assert (await world.poll(auth_req_id)).status_code == 200
    assert len(await _records(world, "approval.redeem_refused")) == 1


async def test_ciba_unknown_auth_req_id_is_invalid_grant(world: World) -> None:
    assert _error(await world.poll("x" * 43)) == "invalid_grant"


async def test_ciba_multiple_hints_are_invalid_request(world: World) -> None:
    assert _error(await world.ask(TRANSFER, login_hint_token="eyJ.x.y")) == "invalid_request"


async def test_ciba_unknown_user_is_unknown_user_id(world: World) -> None:
    assert _error(await world.ask(TRANSFER, login_hint="nobody")) == "unknown_user_id"


async def test_ciba_request_without_client_authentication_is_refused(world: World) -> None:
    form = {
        "login_hint": "alice",
        "scope": "openid",
        "authorization_details": json.dumps([item(TRANSFER_CALL)]),
    }
    refused = await world.client.post("/oauth2/bc-authorize", data=form)
    assert refused.status_code in (400, 401)
    assert await world.inbox(world.alice) == []


async def test_ciba_only_the_user_asked_answers_and_sees_the_request(world: World) -> None:
    await world.ask(TRANSFER)
    [pending] = await world.inbox(world.alice)
    assert await world.inbox(world.bob) == []
    by_bob = await world.client.post(
        f"/v1/approvals/{pending['id']}/approve", json={}, headers=world.bob
    )
    assert by_bob.status_code == 404
    # Security reads every inbox but answers for no one.
    by_root = await world.client.post(f"/v1/approvals/{pending['id']}/approve", json={})
    assert by_root.status_code == 403
    assert (await world.inbox(world.alice))[0]["state"] == "pending"


async def test_ciba_requests_to_one_person_are_rate_limited(world: World) -> None:
    for _ in range(3):
        assert (await world.ask(TRANSFER)).status_code == 200
    assert _error(await world.ask(TRANSFER)) == "slow_down"


async def test_ciba_every_request_answer_and_redemption_is_recorded_naming_the_approver(
    world: World,
) -> None:
    auth_req_id = (await world.ask(TRANSFER)).json()["auth_req_id"]
    [pending] = await world.inbox(world.alice)
    await world.client.post(f"/v1/approvals/{pending['id']}/approve", json={}, headers=world.alice)
    assert (await world.poll(auth_req_id)).status_code == 200
    kinds: dict[str, dict[str, Any]] = {}
    for kind in ("approval.requested", "approval.approved", "approval.redeemed"):
        [record] = await _records(world, kind)
        kinds[kind] = record
        assert record["details"]["approval_id"] == pending["id"]
    assert kinds["approval.approved"]["details"]["approver"] == "alice"
    assert kinds["approval.redeemed"]["details"]["approver"] == "alice"
    assert auth_req_id not in json.dumps(kinds)


async def test_ciba_discovery_names_the_backchannel_endpoint(world: World) -> None:
    meta = (await world.client.get("/.well-known/openid-configuration")).json()
    assert meta["backchannel_authentication_endpoint"] == f"{ISSUER}/oauth2/bc-authorize"
    assert meta["backchannel_token_delivery_modes_supported"] == ["poll", "ping"]
    assert CIBA in meta["grant_types_supported"]


BANK_POLICIES = """
@id("bank-bot-transfers-with-approval")
@obligation("approval")
permit (
  principal == Tether::Agent::"bank-bot",
  action == Tether::Action::"call_tool",
  resource == Tether::Tool::"transfer"
);
"""


def _transfer(amount: int, token: str | None = None) -> dict[str, Any]:
    action = {"name": "call_tool", "properties": {"arguments": {"amount": amount, "to": "bob"}}}
    context = {"approval_token": token} if token else {}
    return evaluation("transfer", action=action, context=context)


async def _evaluate(world: World, agent_token: str, body: dict[str, Any]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {agent_token}"}
    answered = await world.client.post("/access/v1/evaluation", json=body, headers=headers)
    assert answered.status_code == 200, answered.text
    result: dict[str, Any] = answered.json()
    return result


async def _approved_token(world: World, digest: str) -> str:
    auth_req_id = (await world.ask(digest)).json()["auth_req_id"]
    [pending] = await world.inbox(world.alice, state="pending")
    approved = await world.client.post(
        f"/v1/approvals/{pending['id']}/approve", json={}, headers=world.alice
    )
    assert approved.status_code == 200, approved.text
    redeemed = await world.poll(auth_req_id)
    assert redeemed.status_code == 200, redeemed.text
    token: str = redeemed.json()["access_token"]
    return token


async def test_ciba_approval_lets_exactly_the_approved_call_through_once(world: World) -> None:
    applied = await world.client.post("/v1/policies", json={"text": BANK_POLICIES})
    assert applied.status_code == 201, applied.text
    agent_token = await svid(world.client, world.bank)
    first = await _evaluate(world, agent_token, _transfer(100))
    assert first["decision"] is False
    assert first["context"]["effect"] == "approval_required"
    # The checkpoint's digest of the call is the one Tether computes from the item's call.
    assert first["context"]["call_digest"] == TRANSFER
    approval = await _approved_token(world, first["context"]["call_digest"])
    # A substituted amount is refused, and does not spend the approval ...
    substituted = await _evaluate(world, agent_token, _transfer(10_000, approval))
    assert substituted["decision"] is False
    # ... which lets the approved call through, once.
    assert (await _evaluate(world, agent_token, _transfer(100, approval)))["decision"] is True
    again = await _evaluate(world, agent_token, _transfer(100, approval))
    assert again["decision"] is False
    [allowed] = [r for r in await _records(world, "decision") if r["details"]["effect"] == "allow"]
    assert allowed["details"]["approver"] == "alice"
    assert allowed["details"]["approval_id"].startswith("apr_")


async def test_ciba_approval_token_is_not_an_access_token(world: World) -> None:
    applied = await world.client.post("/v1/policies", json={"text": BANK_POLICIES})
    assert applied.status_code == 201, applied.text
    agent_token = await svid(world.client, world.bank)
    digest = (await _evaluate(world, agent_token, _transfer(100)))["context"]["call_digest"]
    approval = await _approved_token(world, digest)
    # Presented as the bearer, in place of the agent's own token, it proves nothing.
    answered = await _evaluate(world, approval, _transfer(100))
    assert answered["decision"] is False
    introspected = await world.client.post("/oauth2/introspect", data={"token": approval})
    assert introspected.json() == {"active": False}


async def _delegated_token(world: World) -> tuple[str, str]:
    """Alice's grant to bank-bot, and the delegated token its instance pod-1 holds for her."""
    user = await world.services.store.get_user("alice")
    assert user is not None
    issued = await world.services.delegation.tokens.issue_user_token(
        user=user, client_id="bank-app", scopes={"payments", ACCOUNT_SCOPE}, session="sid_1"
    )
    consent = {"agent": "bank-bot", "scopes": ["payments"], "purpose": "pay my bills",
               "purpose_code": "bill-payment", "session": "sid_1"}  # fmt: skip
    grant = await world.client.post("/v1/grants", json=consent, headers=world.alice)
    assert grant.status_code == 201, grant.text
    form = {
        "grant_type": TOKEN_EXCHANGE, "subject_token": issued.token,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "actor_token": await svid(world.client, world.bank), "actor_token_type": JWT_TOKEN_TYPE,
    }  # fmt: skip
    exchanged = await world.client.post("/oauth2/token", data=form, headers={"Authorization": ""})
    assert exchanged.status_code == 200, exchanged.text
    return str(grant.json()["id"]), str(exchanged.json()["access_token"])


async def test_ciba_login_hint_token_names_the_user_and_the_grant(world: World) -> None:
    grant_id, delegated = await _delegated_token(world)
    asked = await world.ask(TRANSFER, login_hint="", login_hint_token=delegated)
    assert asked.status_code == 200, asked.text
    [pending] = await world.inbox(world.alice)
    assert pending["grant_id"] == grant_id


async def test_ciba_login_hint_token_of_another_instance_is_unknown_user_id(world: World) -> None:
    _, delegated = await _delegated_token(world)
    form = {"login_hint_token": delegated, **world.auth("pod-2")}
    asked = await world.ask(TRANSFER, login_hint="", **form)
    assert _error(asked) == "unknown_user_id"


async def test_ciba_id_token_hint_is_an_id_token_given_to_this_instance(world: World) -> None:
    auth_req_id = (await world.ask(TRANSFER)).json()["auth_req_id"]
    [pending] = await world.inbox(world.alice)
    await world.client.post(f"/v1/approvals/{pending['id']}/approve", json={}, headers=world.alice)
    id_token = (await world.poll(auth_req_id)).json()["id_token"]
    again = await world.ask(FEE, login_hint="", id_token_hint=id_token)
    assert again.status_code == 200, again.text
    elsewhere = await world.ask(FEE, login_hint="", id_token_hint=id_token, **world.auth("pod-2"))
    assert _error(elsewhere) == "unknown_user_id"
    agent_token = await svid(world.client, world.bank)
    assert _error(await world.ask(FEE, login_hint="", id_token_hint=agent_token)) == (
        "unknown_user_id"
    )


async def test_ciba_an_agent_asks_only_its_owners_and_the_people_it_acts_for(world: World) -> None:
    # bob neither owns bank-bot nor gave it a grant: it may not prompt him.
    assert _error(await world.ask(TRANSFER, login_hint="bob")) == "unknown_user_id"
    consent = {"agent": "bank-bot", "scopes": ["payments"], "purpose": "pay my bills",
               "purpose_code": "bill-payment"}  # fmt: skip
    granted = await world.client.post("/v1/grants", json=consent, headers=world.bob)
    assert granted.status_code == 201, granted.text
    assert (await world.ask(TRANSFER, login_hint="bob")).status_code == 200


async def test_ciba_an_agents_own_call_is_approved_by_one_of_its_owners(world: World) -> None:
    applied = await world.client.post("/v1/policies", json={"text": BANK_POLICIES})
    assert applied.status_code == 201, applied.text
    consent = {"agent": "bank-bot", "scopes": ["payments"], "purpose": "pay my bills",
               "purpose_code": "bill-payment"}  # fmt: skip
    assert (await world.client.post("/v1/grants", json=consent, headers=world.bob)).is_success
    agent_token = await svid(world.client, world.bank)
    auth_req_id = (await world.ask(TRANSFER, login_hint="bob")).json()["auth_req_id"]
    [pending] = await world.inbox(world.bob)
    await world.client.post(f"/v1/approvals/{pending['id']}/approve", json={}, headers=world.bob)
    by_bob = (await world.poll(auth_req_id)).json()["access_token"]
    # bob approved, but the call is the agent's own (no delegated token): its owners decide.
    assert (await _evaluate(world, agent_token, _transfer(100, by_bob)))["decision"] is False
    by_alice = await _approved_token(world, TRANSFER)
    assert (await _evaluate(world, agent_token, _transfer(100, by_alice)))["decision"] is True


async def test_ciba_an_enforcement_point_starts_the_approval_and_the_agent_polls_for_it(
    world: World,
) -> None:
    applied = await world.client.post("/v1/policies", json={"text": BANK_POLICIES})
    assert applied.status_code == 201, applied.text
    agent_token = await svid(world.client, world.bank)
    asking = _transfer(100)
    asking["context"] = {"approval_request": {"login_hint": "alice", "binding_message": "TX-9"}}
    answered = await _evaluate(world, agent_token, asking)
    assert answered["decision"] is False
    pending = answered["context"]["approval_pending"]
    [request] = await world.inbox(world.alice, state="pending")
    [asked] = request["authorization_details"]
    assert asked["call"] == TRANSFER_CALL  # what the person sees is the call that was decided
    assert asked["call_digest"] == answered["context"]["call_digest"]
    await world.client.post(f"/v1/approvals/{request['id']}/approve", json={}, headers=world.alice)
    redeemed = await world.poll(pending["auth_req_id"])
    assert redeemed.status_code == 200, redeemed.text
    token = redeemed.json()["access_token"]
    assert (await _evaluate(world, agent_token, _transfer(100, token)))["decision"] is True


async def test_ciba_an_enforcement_point_asks_no_stranger_for_an_agent(world: World) -> None:
    applied = await world.client.post("/v1/policies", json={"text": BANK_POLICIES})
    assert applied.status_code == 201, applied.text
    asking = _transfer(100)
    asking["context"] = {"approval_request": {"login_hint": "bob"}}
    answered = await world.client.post(
        "/access/v1/evaluation", json=asking,
        headers={"Authorization": f"Bearer {await svid(world.client, world.bank)}"},
    )  # fmt: skip
    assert answered.status_code == 400
    assert answered.json()["error"]["code"] == "unknown_user_id"
    assert await world.inbox(world.bob) == []

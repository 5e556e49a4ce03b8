"""The Python SDK against a real ``tether serve`` on loopback: an agent authenticates with its
own key, ``@guard`` checks before a tool's body runs (plain and async functions), a deny or
no answer in time keeps the body from running, leases are context managers revoked on exit
and renewed in the background while work runs, and an agent acting for a person presents
the delegated token it exchanged for."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import tether
from tests.integration.live.conftest import ServerProcess, free_port
from tests.support.records import decision_record
from tether.cli._drive import drive
from tether.crypto.assertion import generate_agent_key
from tether.delegation.flows import (
    code_flow,
    code_from_redirect,
    password_login_flow,
    start_login,
)
from tether.errors import ApprovalRequired, CheckUnavailable, Denied

POLICY = """
@id("kb-bot-searches")
permit (principal == Tether::Agent::"kb-bot", action == Tether::Action::"call_tool",
        resource == Tether::Tool::"kb/search");

@id("kb-bot-reads-orders-for-its-user")
permit (principal == Tether::Agent::"kb-bot", action == Tether::Action::"read",
        resource == Tether::Api::"orders")
when { context has user && context.scopes.contains("orders:read") };

@id("transfers-need-approval")
@obligation("approval")
permit (principal == Tether::Agent::"kb-bot", action == Tether::Action::"call_tool",
        resource == Tether::Tool::"kb/transfer");

@id("kb-bot-uses-the-crm-key")
permit (principal == Tether::Agent::"kb-bot", action == Tether::Action::"use_credential",
        resource == Tether::Secret::"crm");
"""
SEARCH = {
    "type": "Tool",
    "id": "kb/search",
    "properties": {"name": "search", "data_class": "internal", "state_changing": False},
}
WIPE = {
    "type": "Tool",
    "id": "kb/wipe",
    "properties": {"name": "wipe", "data_class": "internal", "state_changing": True},
}
TRANSFER = {
    "type": "Tool",
    "id": "kb/transfer",
    "properties": {"name": "transfer", "data_class": "restricted", "state_changing": True},
}
ORDERS = {"type": "Api", "id": "orders", "properties": {"name": "orders", "data_class": "internal"}}
VAULT: dict[str, Any] = {
    "kind": "vault",
    "roles": [{"name": "crm", "resource": "crm", "default_ttl": 3, "max_ttl": 60,
               "options": {"secret": "crm-api-key", "handout": "lease"}}],
    "secret": json.dumps({"crm-api-key": "crm-key-0123456789"}),
}  # fmt: skip
PASSWORD = "correct horse battery staple"


class Setup:
    def __init__(self, server: ServerProcess, spiffe_id: str, pem: bytes) -> None:
        self.server, self.spiffe_id, self.pem = server, spiffe_id, pem

    def client(self, **kwargs: Any) -> tether.Client:
        return tether.Client(self.server.addr, agent=self.spiffe_id, key=self.pem, **kwargs)

    def async_client(self, **kwargs: Any) -> tether.AsyncClient:
        return tether.AsyncClient(self.server.addr, agent=self.spiffe_id, key=self.pem, **kwargs)

    def decision(self, decision_id: str) -> dict[str, Any]:
        with self.server.ops() as ops:
            return decision_record(ops, decision_id)

    def lease(self, lease_id: str) -> dict[str, Any]:
        with self.server.ops() as ops:
            shown = ops.get(f"/v1/leases/{lease_id}")
        assert shown.status_code == 200, shown.text
        found: dict[str, Any] = shown.json()
        return found


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """One server for the module: kb-bot with a key, alice, a vault engine, the policy. Its
    JWT-SVIDs live 10 s (the shortest allowed), so a renewal is seen within a test."""
    tmp = tmp_path_factory.mktemp("sdk")
    server = ServerProcess(tmp / "data", log=tmp / "server.log",
                           env={"TETHER_JWT_SVID_TTL": "10"})  # fmt: skip
    server.start()
    key = generate_agent_key()
    try:
        with server.ops() as ops:
            body = {"name": "kb-bot", "owners": ["alice"],
                    "declarations": {"tools": ["kb/search", "kb/wipe", "kb/transfer"]}}  # fmt: skip
            created = ops.post("/v1/agents", json=body)
            assert created.status_code == 201, created.text
            added = ops.post("/v1/agents/kb-bot/keys", json={"jwk": key.public_jwk})
            assert added.status_code == 201, added.text
            assert ops.post("/v1/policies", json={"text": POLICY}).status_code == 201
            user = ops.post("/v1/users", json={"name": "alice", "password": PASSWORD})
            assert user.status_code == 201, user.text
            engine = ops.put("/v1/engines/vault-main", json=VAULT)
            assert engine.status_code == 200, engine.text
        yield Setup(server, created.json()["spiffe_id"], key.private_pem)
    finally:
        server.stop()


def test_a_guarded_tool_runs_after_an_allow_and_the_decision_is_recorded(setup: Setup) -> None:
    ran: list[str] = []

    @tether.guard(action="call_tool", resource=SEARCH)
    def search(query: str, limit: int = 3) -> str:
        ran.append(query)
        return f"results for {query}"

    with setup.client() as client:
        assert search("opening hours") == "results for opening hours"
        decision = client.check("call_tool", SEARCH, arguments={"query": "x", "limit": 3})
    assert ran == ["opening hours"]
    record = setup.decision(decision.decision_id)
    assert record["effect"] == "allow"
    assert record["action"] == "call_tool"


def test_a_denied_call_raises_denied_with_the_decision_and_the_body_never_runs(
    setup: Setup,
) -> None:
    ran: list[str] = []

    @tether.guard(action="call_tool", resource=WIPE)
    def wipe(everything: bool) -> None:
        ran.append("wiped")

    with setup.client(), pytest.raises(Denied) as denied:
        wipe(everything=True)
    assert ran == []
    assert denied.value.code == "denied"
    record = setup.decision(str(denied.value.details["decision_id"]))
    assert record["effect"] == "deny"


async def test_an_async_tool_is_guarded_by_the_async_client(setup: Setup) -> None:
    ran: list[str] = []

    @tether.guard(action="call_tool", resource=lambda a: {**SEARCH, "id": f"kb/{a['tool']}"})
    async def call(tool: str) -> str:
        ran.append(tool)
        return tool

    async with setup.async_client():
        assert await call("search") == "search"
        with pytest.raises(Denied):
            await call("wipe")
    assert ran == ["search"]


async def test_an_async_lease_block_is_revoked_on_exit_and_an_unreachable_server_denies(
    setup: Setup,
) -> None:
    async with setup.async_client() as client:
        async with client.lease("vault-main", "crm") as lease:
            assert lease.credential["secret"] == "crm-key-0123456789"
        assert setup.lease(lease.id)["state"] == "revoked"
    gone = tether.AsyncClient(f"http://127.0.0.1:{free_port()}", agent=setup.spiffe_id,
                              key=setup.pem)  # fmt: skip
    async with gone:
        with pytest.raises(CheckUnavailable):
            await gone.check("call_tool", SEARCH)


async def test_leaving_an_async_client_right_after_a_token_fetch_returns(setup: Setup) -> None:
    # The fetch wakes the background keeper just as leaving cancels it; on Python 3.11,
    # asyncio.wait_for could swallow that cancel, and leaving the block never returned.
    for _ in range(20):
        client = await setup.async_client().__aenter__()  # `async with`, its end awaited apart
        await client.token()
        async with asyncio.timeout(30):  # a bound for the test, not a figure
            await client.__aexit__(None, None, None)


def test_a_guarded_call_with_no_client_in_context_is_denied() -> None:
    @tether.guard(action="call_tool", resource=SEARCH)
    def search(query: str) -> str:
        raise AssertionError("the body ran without a decision")

    with pytest.raises(CheckUnavailable):
        search("anything")


def test_a_checkpoint_that_never_answers_is_a_deny_after_the_timeout(setup: Setup) -> None:
    """A listener that accepts connections and never answers (a hung server): the SDK gives
    up after its timeout and denies; the body does not run."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        addr = f"http://127.0.0.1:{hung.getsockname()[1]}"
        client = tether.Client(addr, agent=setup.spiffe_id, key=setup.pem, timeout=0.3)

        @tether.guard(action="call_tool", resource=SEARCH, client=client)
        def search(query: str) -> str:
            raise AssertionError("the body ran without a decision")

        with pytest.raises(CheckUnavailable) as unavailable:
            search("anything")
    assert "did not answer" in unavailable.value.message


def test_a_checkpoint_that_cannot_be_reached_is_a_deny(setup: Setup) -> None:
    client = tether.Client(f"http://127.0.0.1:{free_port()}", agent=setup.spiffe_id, key=setup.pem)
    with pytest.raises(CheckUnavailable), client:
        client.check("call_tool", SEARCH)


def test_a_lease_block_hands_out_the_secret_and_revokes_the_lease_on_exit(setup: Setup) -> None:
    with setup.client() as client:
        with client.lease("vault-main", "crm") as lease:
            assert lease.credential["secret"] == "crm-key-0123456789"
            assert setup.lease(lease.id)["state"] == "active"
            assert "crm-key" not in repr(lease)
        assert setup.lease(lease.id)["state"] == "revoked"


def test_a_lease_block_that_raises_still_revokes_the_lease(setup: Setup) -> None:
    with setup.client() as client:
        with pytest.raises(RuntimeError), client.lease("vault-main", "crm") as lease:
            raise RuntimeError("the task failed")
        assert setup.lease(lease.id)["state"] == "revoked"


def test_the_token_and_an_open_lease_are_renewed_in_the_background_while_work_runs(
    setup: Setup,
) -> None:
    """The lease lives 3 s and the token 10 s: while the block runs both are renewed before
    they end, without a call from the agent; the lease is revoked when the block ends."""
    with setup.client() as client:
        first = client.token()
        with client.lease("vault-main", "crm") as lease:
            deadline = time.monotonic() + 30
            while (setup.lease(lease.id)["renewals"] < 2 or client.token() == first) and (
                time.monotonic() < deadline
            ):
                time.sleep(0.5)
            shown = setup.lease(lease.id)
            assert shown["state"] == "active"
            assert shown["renewals"] >= 2
            assert client.token() != first
    assert setup.lease(lease.id)["state"] == "revoked"


def _handle(page: httpx.Response) -> str:
    found = re.search(r'name="handle" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def _alice_token(setup: Setup) -> str:
    """alice signs in at the browser for kb-bot and consents (the grant): her token."""
    addr = setup.server.addr
    start, _ = start_login(
        issuer=addr, redirect_uri="http://127.0.0.1:9/callback", scope="openid orders:read",
        extra={"agent": "kb-bot", "purpose": "answer my orders", "purpose_code": "support"},
    )  # fmt: skip
    with httpx.Client() as browser:
        login = browser.get(start.url)
        form = {"handle": _handle(login), "username": "alice", "password": PASSWORD}
        page = browser.post(f"{addr}/oauth2/authorize/login", data=form)
        if page.status_code == 200:  # the consent page
            decision = {"handle": _handle(page), "decision": "approve"}
            page = browser.post(f"{addr}/oauth2/authorize/consent", data=decision)
        assert page.status_code == 303, page.text
        signed_in = code_from_redirect(start, page.headers["location"], issuer=addr)
        return drive(code_flow(issuer=addr, signed_in=signed_in), browser).access_token


def test_an_agent_acting_for_a_person_checks_with_the_delegated_token(setup: Setup) -> None:
    alice = _alice_token(setup)

    @tether.guard(action="read", resource=ORDERS)
    def orders() -> str:
        return "alice's orders"

    with setup.client() as client:
        with pytest.raises(Denied):
            orders()  # the agent on its own may not read them
        delegated = client.exchange(alice, scope="orders:read")
        with client.acting_for(delegated.access_token):
            assert orders() == "alice's orders"
            decision = client.check("read", ORDERS, arguments={})
    record = setup.decision(decision.decision_id)
    assert record["user"] == "alice"
    assert record["grant_id"]


def test_a_key_file_authenticates_the_agent_and_the_key_never_shows_in_a_repr(
    setup: Setup, tmp_path: Path
) -> None:
    key_file = tmp_path / "kb-bot.pem"
    key_file.write_bytes(setup.pem)
    with tether.Client(setup.server.addr, agent=setup.spiffe_id, key=key_file) as client:
        assert client.check("call_tool", SEARCH).allowed
        shown = repr(client.key)
    assert "PRIVATE KEY" not in shown
    assert setup.spiffe_id in shown


def _approver(setup: Setup, stop: threading.Event, answered: list[dict[str, Any]]) -> None:
    """alice at her approvals inbox: approves the first request that comes in."""
    flow = password_login_flow(issuer=setup.server.addr, username="alice", password=PASSWORD,
                               scope="openid profile tether:account")  # fmt: skip
    with httpx.Client(base_url=setup.server.addr) as http:
        token = drive(flow, http).access_token
        mine = {"Authorization": f"Bearer {token}"}
        while not stop.is_set():
            inbox = http.get("/v1/approvals", params={"state": "pending"}, headers=mine)
            for pending in inbox.json()["approvals"]:
                done = http.post(f"/v1/approvals/{pending['id']}/approve", json={}, headers=mine)
                answered.append(done.json())
                return
            stop.wait(0.2)


def test_a_call_needing_approval_waits_for_the_person_and_runs_once_approved(
    setup: Setup,
) -> None:
    ran: list[int] = []

    @tether.guard(action="call_tool", resource=TRANSFER, approval_wait=30, approver="alice")
    def transfer(amount: int) -> None:
        ran.append(amount)

    stop, answered = threading.Event(), list[dict[str, Any]]()
    person = threading.Thread(target=_approver, args=(setup, stop, answered))
    person.start()
    try:
        with setup.client():
            transfer(amount=250)
    finally:
        stop.set()
        person.join(timeout=30)
    assert ran == [250]
    assert answered[0]["authorization_details"][0]["call"]["arguments"] == {"amount": 250}
    with setup.server.ops() as ops:
        spent = ops.get(f"/v1/approvals/{answered[0]['id']}").json()
    assert spent["redeemed_at"] is not None  # the approval token was used, once


def test_a_call_needing_approval_without_waiting_raises_approval_required(setup: Setup) -> None:
    @tether.guard(action="call_tool", resource=TRANSFER)
    def transfer(amount: int) -> None:
        raise AssertionError("ran without approval")

    with setup.client(), pytest.raises(ApprovalRequired) as needed:
        transfer(amount=1_000_000)
    assert needed.value.details["call_digest"]

"""A tool call that needs a person's approval (CIBA), through the gateway: it waits for the
answer a bounded time, or says "approval pending" with the request's id, and runs only the
exact call that was approved."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from mcp_types import RequestParamsMeta

from tests.integration.live.conftest import free_port
from tether.delegation.grants import ACCOUNT_SCOPE

from .conftest import POLICIES, Gateway, HttpUpstream, gateway_settings, serving

APPROVAL = "tether.dev/auth_req_id"


def _redeeming(auth_req_id: str) -> RequestParamsMeta:
    return cast("RequestParamsMeta", {APPROVAL: auth_req_id})


def _text(result: Any) -> str:
    return "".join(getattr(part, "text", "") for part in result.content)


async def _people(gateway: Gateway) -> dict[str, str]:
    """alice (who owns shop-bot) and her own sign-in's header."""
    added = await gateway.ops.post("/v1/users", json={"name": "alice", "password": "p" * 16})
    assert added.status_code == 201, added.text
    user = await gateway.services.store.get_user("alice")
    assert user is not None
    issued = await gateway.services.delegation.tokens.issue_user_token(
        user=user, client_id="tether-cli", scopes={ACCOUNT_SCOPE}, session="sid_1"
    )
    return {"Authorization": f"Bearer {issued.token}"}


async def _answer(gateway: Gateway, alice: dict[str, str], verb: str) -> dict[str, Any]:
    """What alice's phone does: wait for the request, look at it, answer it."""
    for _ in range(200):
        listed = await gateway.ops.get("/v1/approvals", params={"state": "pending"}, headers=alice)
        assert listed.status_code == 200, listed.text
        if listed.json()["approvals"]:
            break
        await asyncio.sleep(0.05)
    [pending] = listed.json()["approvals"]
    answered = await gateway.ops.post(f"/v1/approvals/{pending['id']}/{verb}", json={},
                                      headers=alice)  # fmt: skip
    assert answered.status_code == 200, answered.text
    found: dict[str, Any] = pending
    return found


async def _setup(gateway: Gateway, upstream: HttpUpstream) -> tuple[str, dict[str, str]]:
    await gateway.add_server("tools", url=upstream.url)
    agent = await gateway.agent("shop-bot")
    alice = await _people(gateway)
    return await gateway.token(agent, gateway.resource("tools")), alice


async def test_a_call_needing_approval_waits_for_the_scripted_approver_then_runs(
    gateway: Gateway, http_upstream: HttpUpstream
) -> None:
    token, alice = await _setup(gateway, http_upstream)
    async with gateway.client("tools", token, mode="legacy") as client:
        call = asyncio.create_task(client.call_tool("transfer", {"amount": 100, "to": "bob"}))
        pending = await _answer(gateway, alice, "approve")
        result = await call
    assert not result.is_error, _text(result)
    assert _text(result) == "moved 100 to bob"
    [item] = pending["authorization_details"]
    assert item["call"]["arguments"] == {"amount": 100, "to": "bob"}
    assert item["call"]["resource"] == {"type": "Tool", "id": "tools/transfer"}
    decisions = [r["details"] for r in await gateway.records("decision")]
    allowed = [d for d in decisions if d["action"] == "call_tool" and d["effect"] == "allow"]
    assert [d["approver"] for d in allowed] == ["alice"]
    assert allowed[0]["approval_id"] == pending["id"]


async def test_a_refused_approval_refuses_the_call(
    gateway: Gateway, http_upstream: HttpUpstream
) -> None:
    token, alice = await _setup(gateway, http_upstream)
    async with gateway.client("tools", token) as client:
        call = asyncio.create_task(client.call_tool("transfer", {"amount": 5, "to": "eve"}))
        await _answer(gateway, alice, "deny")
        result = await call
    assert result.is_error
    assert "approval refused" in _text(result)
    assert http_upstream.received() == []


@pytest.fixture
async def impatient(tmp_path: Path) -> AsyncIterator[Gateway]:
    """A gateway that does not wait for answers: it says "approval pending" at once."""
    settings = gateway_settings(tmp_path, free_port(), mcp_approval_wait_seconds=0.0)
    async with serving(settings, tmp_path) as gw:
        applied = await gw.ops.post("/v1/policies", json={"text": POLICIES})
        assert applied.status_code == 201, applied.text
        yield gw


async def test_approval_pending_then_the_same_call_redeems_it_and_a_substituted_one_does_not(
    impatient: Gateway, http_upstream: HttpUpstream
) -> None:
    token, alice = await _setup(impatient, http_upstream)
    call = {"amount": 100, "to": "bob"}
    async with impatient.client("tools", token, mode="legacy") as client:
        first = await client.call_tool("transfer", call)
        assert first.is_error
        assert "approval pending" in _text(first)
        auth_req_id = first.structured_content["tether"]["auth_req_id"]
        await _answer(impatient, alice, "approve")
        swapped = await client.call_tool("transfer", {"amount": 1000, "to": "mallory"},
                                         meta=_redeeming(auth_req_id))  # fmt: skip
        assert swapped.is_error, "a substituted amount ran under another call's approval"
        done = await client.call_tool("transfer", call, meta=_redeeming(auth_req_id))
        assert _text(done) == "moved 100 to bob", _text(done)
        again = await client.call_tool("transfer", call, meta=_redeeming(auth_req_id))
        assert again.is_error, "an approval was used twice"
    assert [c["arguments"] for c in http_upstream.received()] == [call]


async def test_an_approval_left_unanswered_until_it_expires_refuses_the_call(
    tmp_path: Path, http_upstream: HttpUpstream
) -> None:
    settings = gateway_settings(tmp_path, free_port(), mcp_approval_wait_seconds=0.0,
                                approval_max_expiry_seconds=10)  # fmt: skip
    async with serving(settings, tmp_path) as gw:
        applied = await gw.ops.post("/v1/policies", json={"text": POLICIES})
        assert applied.status_code == 201, applied.text
        token, _ = await _setup(gw, http_upstream)
        call = {"amount": 1, "to": "bob"}
        async with gw.client("tools", token, mode="legacy") as client:
            first = await client.call_tool("transfer", call)
            auth_req_id = first.structured_content["tether"]["auth_req_id"]
            await asyncio.sleep(10.5)
            late = await client.call_tool("transfer", call, meta=_redeeming(auth_req_id))
    assert late.is_error
    assert "expired" in _text(late)
    assert http_upstream.received() == []

"""An agent acting for a person through the gateway: its delegated token (RFC 8693, minted
for this MCP server) is taken, the call is recorded as the agent's for that person under their
grant, an approval is asked of that person, and a token for another server is refused."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tether.delegation.grants import ACCOUNT_SCOPE
from tether.delegation.token_exchange import ACCESS_TOKEN_TYPE, GRANT_TYPE, JWT_TOKEN_TYPE

from .conftest import Gateway, HttpUpstream


async def _alice(gateway: Gateway) -> str:
    """alice, her own sign-in, and her grant to shop-bot: her access token."""
    added = await gateway.ops.post("/v1/users", json={"name": "alice", "password": "p" * 16})
    assert added.status_code == 201, added.text
    user = await gateway.services.store.get_user("alice")
    assert user is not None
    issued = await gateway.services.delegation.tokens.issue_user_token(
        user=user, client_id="console", scopes={"shop", ACCOUNT_SCOPE}, session="sid_1"
    )
    consent = {"agent": "shop-bot", "scopes": ["shop"], "purpose": "shop for me",
               "purpose_code": "shopping", "session": "sid_1"}  # fmt: skip
    mine = {"Authorization": f"Bearer {issued.token}"}
    granted = await gateway.ops.post("/v1/grants", json=consent, headers=mine)
    assert granted.status_code == 201, granted.text
    return issued.token


async def _delegated(gateway: Gateway, subject: str, audience: str) -> str:
    actor = await gateway.token(gateway.agents["shop-bot"], gateway.addr)
    form = {"grant_type": GRANT_TYPE, "subject_token": subject,
            "subject_token_type": ACCESS_TOKEN_TYPE, "actor_token": actor,
            "actor_token_type": JWT_TOKEN_TYPE, "scope": "shop", "audience": audience}  # fmt: skip
    exchanged = await gateway.ops.post("/oauth2/token", data=form, headers={"Authorization": ""})
    assert exchanged.status_code == 200, exchanged.text
    token: str = exchanged.json()["access_token"]
    return token


def _text(result: Any) -> str:
    return "".join(getattr(part, "text", "") for part in result.content)


@pytest.fixture
async def alice(gateway: Gateway, http_upstream: HttpUpstream) -> str:
    """The test upstream as ``tools``, shop-bot, and alice's grant to it: her access token."""
    await gateway.add_server("tools", url=http_upstream.url)
    await gateway.agent("shop-bot")
    return await _alice(gateway)


async def test_a_delegated_token_for_this_server_calls_for_the_person_under_their_grant(
    gateway: Gateway, http_upstream: HttpUpstream, alice: str
) -> None:
    token = await _delegated(gateway, alice, gateway.resource("tools"))
    async with gateway.client("tools", token, mode="legacy") as client:
        added = await client.call_tool("add", {"a": 1, "b": 2})
        seen = json.loads(_text(await client.call_tool("whoami", {})))
    assert _text(added) == "3"
    assert seen["authorization"] is None  # the person's delegation stays in Tether
    decisions = [r["details"] for r in await gateway.records("decision")
                 if r["details"]["action"] == "call_tool"]  # fmt: skip
    assert {d["user"] for d in decisions} == {"alice"}
    assert all(d["grant_id"] and d["effect"] == "allow" for d in decisions)


async def test_a_delegated_token_for_another_server_is_refused(
    gateway: Gateway, http_upstream: HttpUpstream, alice: str
) -> None:
    token = await _delegated(gateway, alice, gateway.resource("crm"))
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                  "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                             "clientInfo": {"name": "raw", "version": "1"}}}  # fmt: skip
    headers = {"Authorization": f"Bearer {token}",
               "Accept": "application/json, text/event-stream"}  # fmt: skip
    answer = await gateway.ops.post("/mcp/tools", json=initialize, headers=headers)
    assert answer.status_code == 401
    assert 'error="invalid_token"' in answer.headers["www-authenticate"]


async def test_an_approval_for_a_delegated_call_is_asked_of_the_person_it_acts_for(
    gateway: Gateway, http_upstream: HttpUpstream, alice: str
) -> None:
    token = await _delegated(gateway, alice, gateway.resource("tools"))
    mine = {"Authorization": f"Bearer {alice}"}
    async with gateway.client("tools", token, mode="legacy") as client:
        call = asyncio.create_task(client.call_tool("transfer", {"amount": 3, "to": "bob"}))
        for _ in range(200):
            listed = await gateway.ops.get("/v1/approvals", params={"state": "pending"},
                                           headers=mine)  # fmt: skip
            if listed.json()["approvals"]:
                break
            await asyncio.sleep(0.05)
        [pending] = listed.json()["approvals"]
        assert pending["user"] == "alice"
        approved = await gateway.ops.post(f"/v1/approvals/{pending['id']}/approve", json={},
                                          headers=mine)  # fmt: skip
        assert approved.status_code == 200, approved.text
        result = await call
    assert _text(result) == "moved 3 to bob", _text(result)

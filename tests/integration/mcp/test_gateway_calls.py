"""Tool calls through the gateway with the official MCP client, in both protocol eras: what
is listed, what is refused, what reaches the upstream — and that every call is recorded."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .conftest import Gateway, HttpUpstream, stdio_command

ERAS = ["auto", "legacy"]  # 2026-07-28 (stateless) and the 2025-11-25 handshake


@pytest.fixture
async def token(gateway: Gateway, http_upstream: HttpUpstream) -> str:
    await gateway.add_server("tools", url=http_upstream.url)
    agent = await gateway.agent("shop-bot")
    return await gateway.token(agent, gateway.resource("tools"))


def _text(result: Any) -> str:
    return "".join(getattr(part, "text", "") for part in result.content)


@pytest.mark.parametrize("mode", ERAS)
async def test_forbidden_tool_is_absent_from_the_listing_and_refused_by_name(
    gateway: Gateway, token: str, http_upstream: HttpUpstream, mode: str
) -> None:
    async with gateway.client("tools", token, mode=mode) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert names == {"add", "whoami", "transfer"}
        refused = await client.call_tool("delete_all", {})
    assert refused.is_error
    assert "nobody-deletes-everything" in _text(refused)
    assert refused.structured_content["tether"]["effect"] == "deny"
    assert [c["tool"] for c in http_upstream.received()] == []


@pytest.mark.parametrize("mode", ERAS)
async def test_allowed_call_passes_and_its_record_carries_the_calls_correlation_id(
    gateway: Gateway, token: str, http_upstream: HttpUpstream, mode: str
) -> None:
    async with gateway.client("tools", token, mode=mode) as client:
        result = await client.call_tool("add", {"a": 2, "b": 3})
    assert not result.is_error
    assert _text(result) == "5"
    [arrived] = http_upstream.received()
    correlation = arrived["meta"]["tether.dev/correlation_id"]
    assert arrived["traceparent_header"] == arrived["meta"]["traceparent"]
    assert arrived["meta"]["traceparent"].split("-")[1] == correlation
    decisions = [r for r in await gateway.records("decision")
                 if r["details"]["action"] == "call_tool"]  # fmt: skip
    [decision] = decisions
    assert decision["correlation_id"] == correlation
    assert decision["details"]["resource"] == 'Tool::"tools/add"'
    assert decision["details"]["enforcement_point"] == "mcp-gateway"
    assert decision["outcome"] == "success"


async def test_every_call_and_every_listing_has_its_audit_record(
    gateway: Gateway, token: str
) -> None:
    async with gateway.client("tools", token, mode="legacy") as client:
        await client.list_tools()
        await client.call_tool("add", {"a": 1, "b": 1})
        await client.call_tool("delete_all", {})
        await client.call_tool("no_such_tool", {})
    decisions = await gateway.records("decision")
    calls = [r["details"] for r in decisions if r["details"]["action"] == "call_tool"]
    assert [(c["resource"], c["effect"]) for c in calls] == [
        ('Tool::"tools/add"', "allow"),
        ('Tool::"tools/delete_all"', "deny"),
        ('Tool::"tools/no_such_tool"', "deny"),
    ]
    assert "not offered" in calls[2]["reasons"][0]
    listings = [r["details"] for r in decisions if r["details"]["action"] == "list_tools"]
    assert listings
    assert all(
        sorted(x["visible"]) == ["tools/add", "tools/transfer", "tools/whoami"] for x in listings
    )


async def test_the_agents_token_never_reaches_the_upstream(
    gateway: Gateway, token: str, http_upstream: HttpUpstream
) -> None:
    async with gateway.client("tools", token, mode="legacy") as client:
        seen = json.loads(_text(await client.call_tool("whoami", {})))
    assert seen["authorization"] is None
    assert seen["credential_headers"] == {}
    everything = http_upstream.calls.read_text()
    assert token not in everything
    assert token.split(".")[2] not in everything


async def test_a_stdio_upstream_is_served_the_same_way(gateway: Gateway) -> None:
    await gateway.add_server("local", command=stdio_command(gateway.tmp))
    agent = await gateway.agent("shop-bot")
    token = await gateway.token(agent, gateway.resource("local"))
    async with gateway.client("local", token) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        added = await client.call_tool("add", {"a": 20, "b": 22})
        refused = await client.call_tool("delete_all", {})
    assert names == {"add", "whoami", "transfer"}
    assert _text(added) == "42"
    assert refused.is_error


async def test_an_allow_list_hides_every_other_tool_whatever_the_policies_say(
    gateway: Gateway, http_upstream: HttpUpstream
) -> None:
    await gateway.add_server("narrow", url=http_upstream.url, allowed_tools=["add"])
    applied = await gateway.ops.post("/v1/policies", json={"text": """
@id("shop-bot-anything-on-narrow")
permit (principal == Tether::Agent::"shop-bot", action, resource in Tether::McpServer::"narrow");
"""})  # fmt: skip
    assert applied.status_code == 201, applied.text
    agent = await gateway.agent("shop-bot")
    token = await gateway.token(agent, gateway.resource("narrow"))
    async with gateway.client("narrow", token) as client:
        assert [t.name for t in (await client.list_tools()).tools] == ["add"]
        assert (await client.call_tool("whoami", {})).is_error

"""``examples/mcp_agent/mcp_agent.py`` runs as published: the official MCP client with a token
from ``tether.AsyncClient``, through the gateway to a real upstream — an allowed call answers,
a forbidden one is refused, and neither listing nor refusal reaches past policy."""

from __future__ import annotations

from tests.support.examples import load_example

from .conftest import Gateway, HttpUpstream


async def test_the_mcp_agent_example_calls_through_the_gateway_as_published(
    gateway: Gateway, http_upstream: HttpUpstream
) -> None:
    example = load_example("mcp_agent/mcp_agent.py")
    await gateway.add_server("tools", url=http_upstream.url)
    agent = await gateway.agent("shop-bot")
    allowed = await example.ask(gateway.addr, agent=agent.spiffe_id, key=agent.key.private_pem,
                                server="tools", tool="add", arguments={"a": 2, "b": 3})  # fmt: skip
    refused = await example.ask(gateway.addr, agent=agent.spiffe_id, key=agent.key.private_pem,
                                server="tools", tool="delete_all", arguments={})  # fmt: skip
    assert allowed.text == "5"
    assert not allowed.refused
    assert "delete_all" not in allowed.tools
    assert refused.refused
    assert "nobody-deletes-everything" in refused.text
    assert [c["tool"] for c in http_upstream.received()] == ["add"]

"""Resources, prompts and completion through the gateway: listed as policy allows, read and
got only when a policy permits, each recorded — the model reads them as it reads tool results."""

from __future__ import annotations

import pytest
from mcp.shared.exceptions import MCPError
from mcp_types import PromptReference

from .conftest import Gateway, HttpUpstream

POLICY = """
@id("shop-bot-reads-the-hours")
permit (principal == Tether::Agent::"shop-bot", action == Tether::Action::"read_resource",
        resource == Tether::McpResource::"tools/kb://hours");
@id("shop-bot-reads-the-faq")
permit (principal == Tether::Agent::"shop-bot", action == Tether::Action::"read_resource",
        resource in Tether::McpServer::"tools")
when { resource.name like "kb://faq/*" };
@id("shop-bot-greets")
permit (principal == Tether::Agent::"shop-bot", action == Tether::Action::"get_prompt",
        resource == Tether::Prompt::"tools/greet");
"""


@pytest.fixture
async def token(gateway: Gateway, http_upstream: HttpUpstream) -> str:
    await gateway.add_server("tools", url=http_upstream.url)
    await gateway.add_policies(POLICY)
    agent = await gateway.agent("shop-bot")
    return await gateway.token(agent, gateway.resource("tools"))


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_resource_no_policy_permits_is_neither_listed_nor_read(
    gateway: Gateway, token: str, mode: str
) -> None:
    async with gateway.client("tools", token, mode=mode) as client:
        listed = [str(r.uri) for r in (await client.list_resources()).resources]
        hours = await client.read_resource("kb://hours")
        with pytest.raises(MCPError, match="refused by Tether") as refused:
            await client.read_resource("kb://payroll")
    assert listed == ["kb://hours"]
    assert hours.contents[0].text == "We are open 9 to 5."  # type: ignore[union-attr]
    assert refused.value.error.code == -32001
    reads = [r["details"] for r in await gateway.records("decision")
             if r["details"]["action"] == "read_resource"]  # fmt: skip
    assert [(d["resource"], d["effect"]) for d in reads] == [
        ('McpResource::"tools/kb://hours"', "allow"),
        ('McpResource::"tools/kb://payroll"', "deny"),
    ]


async def test_a_prompt_is_got_and_completed_only_as_permitted(
    gateway: Gateway, token: str
) -> None:
    async with gateway.client("tools", token, mode="legacy") as client:
        assert [p.name for p in (await client.list_prompts()).prompts] == ["greet"]
        got = await client.get_prompt("greet", {"name": "alice"})
        prefix = {"name": "name", "value": "al"}
        completed = await client.complete(PromptReference(name="greet"), prefix)
        templates = [t.uri_template for t in (await client.list_resource_templates())
                     .resource_templates]  # fmt: skip
        faq = await client.read_resource("kb://faq/returns")
    assert got.messages[0].content.text == "Greet alice."  # type: ignore[union-attr]
    assert completed.completion.values == ["alice", "albert"]
    assert templates == ["kb://faq/{topic}"]
    assert faq.contents[0].text == "about returns"  # type: ignore[union-attr]


async def test_without_a_permit_prompts_are_hidden_and_refused(
    gateway: Gateway, http_upstream: HttpUpstream
) -> None:
    await gateway.add_server("tools", url=http_upstream.url)
    agent = await gateway.agent("shop-bot")
    token = await gateway.token(agent, gateway.resource("tools"))
    async with gateway.client("tools", token, mode="legacy") as client:
        assert (await client.list_prompts()).prompts == []
        assert (await client.list_resources()).resources == []
        with pytest.raises(MCPError, match="refused by Tether"):
            await client.get_prompt("greet", {"name": "x"})
        with pytest.raises(MCPError, match="refused by Tether"):
            await client.complete(PromptReference(name="greet"), {"name": "name", "value": "a"})

"""An agent built on the official MCP client, calling tools through Tether's MCP gateway.

The agent authenticates to Tether with its own key (``tether.AsyncClient``), takes a JWT-SVID
minted for one MCP server behind the gateway (audience ``<tether>/mcp/<server>``; a token for
anything else is refused there), and talks MCP to ``<tether>/mcp/<server>`` with the official
``mcp`` client. Tether filters the tool listing by policy, decides and records every call, and
injects the upstream's own credential; the agent's token never reaches the MCP server.

Run against a Tether where a platform admin added the server (``tether mcp add kb --url …``)
and registered the agent with its public key::

    python examples/mcp_agent/mcp_agent.py --tether http://127.0.0.1:8200 \\
        --agent spiffe://acme.org/agent/faq-bot --key faq-bot.pem --server kb \\
        --tool search --arguments '{"query": "business hours"}'
"""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

import tether


@dataclass(frozen=True)
class Answer:
    tools: list[str]  # what the gateway lists for this agent
    text: str  # the tool's answer
    refused: bool  # the call was refused (by policy, or by the tool)


async def ask(
    addr: str, *, agent: str, key: bytes | Path, server: str, tool: str, arguments: dict[str, Any]
) -> Answer:
    """List the tools of ``server`` through the gateway and call ``tool`` once."""
    resource = f"{addr.rstrip('/')}/mcp/{server}"
    async with tether.AsyncClient(addr, agent=agent, key=key) as tether_client:
        token = await tether_client.token(resource)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx2.AsyncClient(headers=headers) as http:
            transport = streamable_http_client(resource, http_client=http)
            async with Client(transport) as mcp:
                listed = [t.name for t in (await mcp.list_tools()).tools]
                result = await mcp.call_tool(tool, arguments)
    text = "".join(getattr(part, "text", "") for part in result.content)
    return Answer(tools=listed, text=text, refused=bool(result.is_error))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tether", required=True, help="Tether's address")
    parser.add_argument("--agent", required=True, help="the agent's SPIFFE ID")
    parser.add_argument("--key", required=True, type=Path, help="the agent's private key (PEM)")
    parser.add_argument("--server", required=True, help="the MCP server's name at the gateway")
    parser.add_argument("--tool", required=True)
    parser.add_argument("--arguments", default="{}", help="the call's arguments (JSON)")
    args = parser.parse_args()
    answer = asyncio.run(
        ask(args.tether, agent=args.agent, key=args.key, server=args.server, tool=args.tool,
            arguments=json.loads(args.arguments))
    )  # fmt: skip
    print("tools:", ", ".join(answer.tools))
    print("refused:" if answer.refused else "answer:", answer.text)


if __name__ == "__main__":
    main()

"""Shared by the decision tests: an agent with a JWT-SVID, policies for it, an evaluation."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.support.tokens import client_credentials

from .conftest import ISSUER, RegisteredAgent

POLICIES = """
@id("faq-bot-searches")
permit (
  principal == Tether::Agent::"faq-bot",
  action == Tether::Action::"call_tool",
  resource == Tether::Tool::"search_faq"
);

@id("faq-bot-transfers-with-approval")
@obligation("approval")
permit (
  principal == Tether::Agent::"faq-bot",
  action == Tether::Action::"call_tool",
  resource == Tether::Tool::"transfer"
);
"""


def tool(name: str) -> dict[str, Any]:
    return {
        "type": "Tool",
        "id": name,
        "properties": {
            "name": name,
            "data_class": "public",
            "state_changing": name != "search_faq",
        },
    }


async def svid(client: httpx.AsyncClient, agent: RegisteredAgent) -> str:
    form = client_credentials(
        agent.key.private_pem,
        client_id=agent.spiffe_id,
        audience=f"{ISSUER}/oauth2/token",
        now=int(time.time()),
    )
    issued = await client.post("/oauth2/token", data=form)
    assert issued.status_code == 200, issued.text
    token: str = issued.json()["access_token"]
    return token


def evaluation(name: str = "search_faq", **extra: Any) -> dict[str, Any]:
    return {"action": {"name": "call_tool"}, "resource": tool(name), **extra}

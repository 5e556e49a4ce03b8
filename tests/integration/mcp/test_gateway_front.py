"""The gateway's HTTP front: who may reach ``/mcp/<server>``, with which token, on which
session — the rules an MCP client meets before any tool is listed or called."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .conftest import Gateway, HttpUpstream

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"},
    },
}
LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
ACCEPT = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-11-25"}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **ACCEPT}


async def _post(gw: Gateway, server: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gw.addr, timeout=30) as raw:
        return await raw.post(f"/mcp/{server}", json=body, headers=headers)


@pytest.fixture
async def tools(gateway: Gateway, http_upstream: HttpUpstream) -> Gateway:
    await gateway.add_server("tools", url=http_upstream.url)
    await gateway.add_server("crm", url=http_upstream.url, allowed_tools=["whoami"])
    await gateway.agent("shop-bot")
    return gateway


async def test_gateway_without_a_token_answers_401_pointing_at_rfc9728_metadata(
    tools: Gateway,
) -> None:
    answer = await _post(tools, "tools", INITIALIZE, ACCEPT)
    assert answer.status_code == 401
    challenge = answer.headers["www-authenticate"]
    metadata_url = f"{tools.addr}/.well-known/oauth-protected-resource/mcp/tools"
    assert challenge == f'Bearer resource_metadata="{metadata_url}"'
    metadata = (await tools.ops.get(metadata_url)).json()
    assert metadata["resource"] == tools.resource("tools")
    assert metadata["authorization_servers"] == [tools.addr]
    server = (await tools.ops.get("/.well-known/oauth-authorization-server")).json()
    assert server["issuer"] == tools.addr
    assert server["token_endpoint"]


@pytest.mark.parametrize(
    "audience", ["tether", "other-server"],
    ids=["token-for-tethers-api", "token-for-another-mcp-server"],
)  # fmt: skip
async def test_gateway_refuses_a_token_not_minted_for_this_server(
    tools: Gateway, audience: str
) -> None:
    aud = {"tether": tools.addr, "other-server": tools.resource("crm")}[audience]
    token = await tools.token(tools.agents["shop-bot"], aud)
    answer = await _post(tools, "tools", INITIALIZE, _bearer(token))
    assert answer.status_code == 401
    assert 'error="invalid_token"' in answer.headers["www-authenticate"]


async def test_no_token_is_minted_for_a_resource_outside_the_gateway(tools: Gateway) -> None:
    for audience in (tools.resource("tools") + "/x", tools.addr + "/mcp/Bad_Name"):
        refused = await tools.ask_token(tools.agents["shop-bot"], audience)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"] == "invalid_target"


async def test_gateway_refuses_an_operator_token(tools: Gateway) -> None:
    from .conftest import ROOT  # noqa: PLC0415

    answer = await _post(tools, "tools", INITIALIZE, _bearer(ROOT))
    assert answer.status_code == 401


async def test_unknown_mcp_server_is_404(tools: Gateway) -> None:
    token = await tools.token(tools.agents["shop-bot"], tools.resource("nope"))
    answer = await _post(tools, "nope", INITIALIZE, _bearer(token))
    assert answer.status_code == 404
    assert answer.json()["error"] == "mcp_server_not_found"


async def test_foreign_host_header_is_refused_dns_rebinding(tools: Gateway) -> None:
    token = await tools.token(tools.agents["shop-bot"], tools.resource("tools"))
    headers = _bearer(token) | {"Host": "attacker.example:80"}
    answer = await _post(tools, "tools", INITIALIZE, headers)
    assert answer.status_code == 421
    origin = _bearer(token) | {"Origin": "http://attacker.example"}
    assert (await _post(tools, "tools", INITIALIZE, origin)).status_code == 403


async def _session(gw: Gateway, server: str, token: str) -> str:
    opened = await _post(gw, server, INITIALIZE, _bearer(token))
    assert opened.status_code == 200, opened.text
    session: str = opened.headers["mcp-session-id"]
    return session


async def test_session_ids_carry_at_least_128_random_bits(tools: Gateway) -> None:
    token = await tools.token(tools.agents["shop-bot"], tools.resource("tools"))
    ids = {await _session(tools, "tools", token) for _ in range(3)}
    assert len(ids) == 3
    for session in ids:  # token_urlsafe(32): 43 characters of base64url, 256 bits
        assert len(session) >= 43
        assert set(session) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )


async def test_a_session_is_bound_to_the_caller_that_opened_it(tools: Gateway) -> None:
    mine = await tools.token(tools.agents["shop-bot"], tools.resource("tools"))
    session = await _session(tools, "tools", mine)
    thief = await tools.agent("thief-bot")
    theirs = await tools.token(thief, tools.resource("tools"))
    other_instance = await tools.token(tools.agents["shop-bot"], tools.resource("tools"), "pod-2")
    crm = await tools.token(tools.agents["shop-bot"], tools.resource("crm"))
    with_session = {"mcp-session-id": session}
    assert (await _post(tools, "tools", LIST, _bearer(theirs) | with_session)).status_code == 404
    refused = await _post(tools, "tools", LIST, _bearer(other_instance) | with_session)
    assert refused.status_code == 404
    assert (await _post(tools, "crm", LIST, _bearer(crm) | with_session)).status_code == 404
    made_up = {"mcp-session-id": "x" * 43}
    assert (await _post(tools, "tools", LIST, _bearer(mine) | made_up)).status_code == 404
    own = await _post(tools, "tools", LIST, _bearer(mine) | with_session)
    assert own.status_code == 200, own.text


async def test_the_sdks_own_session_id_is_never_shown(tools: Gateway) -> None:
    token = await tools.token(tools.agents["shop-bot"], tools.resource("tools"))
    session = await _session(tools, "tools", token)
    outer_of = tools.services.mcp.app._outer
    inner = [s for s in outer_of if outer_of[s] == session]
    assert inner
    assert inner[0] != session
    refused = await _post(tools, "tools", LIST, _bearer(token) | {"mcp-session-id": inner[0]})
    assert refused.status_code == 404


async def test_a_foreign_host_is_refused_before_any_token_is_asked_for(tools: Gateway) -> None:
    answer = await _post(tools, "tools", INITIALIZE, ACCEPT | {"Host": "attacker.example"})
    assert answer.status_code == 421


async def test_whether_a_server_exists_is_told_to_authenticated_callers_only(
    tools: Gateway,
) -> None:
    assert (await _post(tools, "nope", INITIALIZE, ACCEPT)).status_code == 401
    assert (await _post(tools, "tools", INITIALIZE, ACCEPT)).status_code == 401

"""The credential an upstream gets: only the one Tether injects, under a lease of the calling
agent — never the agent's own token, never a lease that ended."""

from __future__ import annotations

import json
from typing import Any

from .conftest import Gateway, HttpUpstream, stdio_command

CRM_KEY = "crm-key-5b4a39281706f5e4"
VAULT: dict[str, Any] = {
    "kind": "vault",
    "roles": [{"name": "crm", "resource": "crm", "default_ttl": 300,
               "options": {"secret": "crm-api-key"}}],  # handout: inject (the default)
    "secret": json.dumps({"crm-api-key": CRM_KEY}),
}  # fmt: skip
INJECT = {"engine": "vault-main", "role": "crm"}


def _text(result: Any) -> str:
    return "".join(getattr(part, "text", "") for part in result.content)


async def _vault(gateway: Gateway) -> None:
    configured = await gateway.ops.put("/v1/engines/vault-main", json=VAULT)
    assert configured.status_code == 200, configured.text


async def test_http_upstream_gets_only_the_injected_vault_secret(
    gateway: Gateway, http_upstream: HttpUpstream
) -> None:
    await _vault(gateway)
    added = await gateway.add_server("crm", url=http_upstream.url, credential=INJECT)
    assert added["tools"] == []  # listed first by an agent, with its lease
    agent = await gateway.agent("shop-bot")
    token = await gateway.token(agent, gateway.resource("crm"))
    async with gateway.client("crm", token) as client:
        assert (await client.list_tools()).tools == []  # every tool waits for approval
    for tool in ("add", "whoami"):
        approved = await gateway.ops.post(f"/v1/mcp/servers/crm/tools/{tool}/approve", json={})
        assert approved.status_code == 200, approved.text
    applied = await gateway.ops.post("/v1/policies", json={"text": """
@id("shop-bot-crm") permit (principal == Tether::Agent::"shop-bot",
  action == Tether::Action::"call_tool", resource in Tether::McpServer::"crm");
@id("shop-bot-crm-key") permit (principal == Tether::Agent::"shop-bot",
  action == Tether::Action::"use_credential", resource == Tether::Secret::"crm");
"""})  # fmt: skip
    assert applied.status_code == 201, applied.text
    async with gateway.client("crm", token) as client:
        assert {t.name for t in (await client.list_tools()).tools} == {"add", "whoami"}
        seen = json.loads(_text(await client.call_tool("whoami", {})))
    assert seen["authorization"] == f"Bearer {CRM_KEY}"
    assert seen["credential_headers"] == {"authorization": f"Bearer {CRM_KEY}"}
    everything = http_upstream.calls.read_text()
    assert token not in everything
    leases = (await gateway.ops.get("/v1/leases", params={"agent": "shop-bot"})).json()
    [lease] = leases["leases"]
    assert (lease["engine"], lease["role"], lease["state"]) == ("vault-main", "crm", "active")
    records = json.dumps(await gateway.records(""))
    assert CRM_KEY not in records, "the injected secret is in an audit record"


async def test_a_revoked_lease_is_never_injected_again(
    gateway: Gateway, http_upstream: HttpUpstream
) -> None:
    await _vault(gateway)
    await gateway.add_server("crm", url=http_upstream.url, credential=INJECT)
    agent = await gateway.agent("shop-bot")
    token = await gateway.token(agent, gateway.resource("crm"))
    async with gateway.client("crm", token) as client:
        await client.list_tools()
    await gateway.ops.post("/v1/mcp/servers/crm/tools/whoami/approve", json={})
    await gateway.ops.post("/v1/policies", json={"text": """
@id("crm-calls") permit (principal == Tether::Agent::"shop-bot",
  action == Tether::Action::"call_tool", resource in Tether::McpServer::"crm");
"""})  # fmt: skip
    async with gateway.client("crm", token) as client:
        await client.call_tool("whoami", {})  # the first lease, taken (use_credential allowed)
        first = (await gateway.ops.get("/v1/leases", params={"agent": "shop-bot"})).json()
        [lease] = first["leases"]
        revoked = await gateway.ops.post(f"/v1/leases/{lease['id']}/revoke", json={})
        assert revoked.status_code == 200, revoked.text
        # The policy no longer lets it take another: the call is refused, nothing injected.
        await gateway.ops.post("/v1/policies", json={"text": """
@id("crm-calls") permit (principal == Tether::Agent::"shop-bot",
  action == Tether::Action::"call_tool", resource in Tether::McpServer::"crm");
@id("no-crm-key") forbid (principal, action == Tether::Action::"use_credential", resource);
"""})  # fmt: skip
        refused = await client.call_tool("whoami", {})
    assert refused.is_error
    assert [c["authorization"] for c in http_upstream.received()] == [f"Bearer {CRM_KEY}"]


async def test_stdio_upstream_gets_the_secret_in_its_environment_only(gateway: Gateway) -> None:
    await _vault(gateway)
    credential = INJECT | {"env": "UPSTREAM_TOKEN"}
    await gateway.add_server("local", command=stdio_command(gateway.tmp), credential=credential)
    agent = await gateway.agent("shop-bot")
    token = await gateway.token(agent, gateway.resource("local"))
    async with gateway.client("local", token) as client:
        await client.list_tools()
    await gateway.ops.post("/v1/mcp/servers/local/tools/whoami/approve", json={})
    async with gateway.client("local", token) as client:
        seen = json.loads(_text(await client.call_tool("whoami", {})))
    assert seen["env_token"] == CRM_KEY
    assert seen["authorization"] is None

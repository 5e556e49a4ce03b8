"""``/v1/policies`` over the real store and the real Cedar engine."""

from __future__ import annotations

import httpx

from tether.api.services import Services

from .test_management_api import as_, operator_token

V1 = """
@id("faq-bot-searches")
permit (principal == Tether::Agent::"faq-bot", action == Tether::Action::"call_tool", resource);
"""
V2 = (
    V1
    + """
@id("faq-bot-queries")
permit (principal == Tether::Agent::"faq-bot", action == Tether::Action::"query", resource);
"""
)


async def test_check_names_every_error_without_applying(
    client: httpx.AsyncClient, services: Services
) -> None:
    bad = await client.post(
        "/v1/policies/check", json={"text": "permit (principal, action, resource);"}
    )
    assert bad.status_code == 200
    assert bad.json()["valid"] is False
    assert any("@id" in e for e in bad.json()["errors"])
    good = await client.post("/v1/policies/check", json={"text": V1})
    assert good.json() == {"valid": True, "errors": []}
    assert services.policies.current.version is None, "checking applies nothing"


async def test_apply_list_show_diff_and_roll_back(
    client: httpx.AsyncClient, services: Services
) -> None:
    first = await client.post("/v1/policies", json={"text": V1, "comment": "search only"})
    assert first.status_code == 201, first.text
    assert (first.json()["version"], first.json()["active"]) == (1, True)
    second = await client.post("/v1/policies", json={"text": V2})
    assert second.json()["version"] == 2
    assert services.policies.current.version == 2
    listed = (await client.get("/v1/policies")).json()
    assert listed["active"] == 2
    assert [v["version"] for v in listed["versions"]] == [2, 1]
    assert "text" not in listed["versions"][0]
    shown = (await client.get("/v1/policies/1")).json()
    assert shown["text"] == V1
    assert shown["comment"] == "search only"
    diff = (await client.get("/v1/policies/diff", params={"from": 1, "to": 2})).json()["diff"]
    assert '+@id("faq-bot-queries")' in diff
    rolled = await client.post("/v1/policies/1/activate")
    assert rolled.status_code == 200
    assert services.policies.current.version == 1
    assert (await client.get("/v1/policies/active")).json()["version"] == 1
    audit = (await client.get("/v1/audit", params={"type_prefix": "policy."})).json()["records"]
    assert [r["type"] for r in audit] == ["policy.applied", "policy.applied", "policy.rolled_back"]


async def test_invalid_set_is_400_with_the_errors_and_changes_nothing(
    client: httpx.AsyncClient, services: Services
) -> None:
    await client.post("/v1/policies", json={"text": V1})
    bad = '@id("x") permit (principal, action == Tether::Action::"fly", resource);'
    refused = await client.post("/v1/policies", json={"text": bad})
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "invalid_policy_set"
    assert any("fly" in e for e in error["details"]["errors"])
    assert services.policies.current.version == 1
    assert [v["version"] for v in (await client.get("/v1/policies")).json()["versions"]] == [1]


async def test_only_security_applies_and_everyone_reads(client: httpx.AsyncClient) -> None:
    platform = await operator_token(client, "platform-admin", "pat")
    refused = await client.post("/v1/policies", json={"text": V1}, headers=as_(platform))
    assert refused.status_code == 403
    assert (await client.get("/v1/policies", headers=as_(platform))).status_code == 200
    schema = await client.get("/v1/policies/schema", headers=as_(platform))
    assert "namespace Tether" in schema.text


async def test_unknown_versions_are_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/policies/active")).status_code == 404
    missing = await client.get("/v1/policies/7")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "policy_set_not_found")
    assert (await client.post("/v1/policies/7/activate")).status_code == 404

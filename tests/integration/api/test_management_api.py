"""The management API: roles, the error model (stable codes, the rule broken), size limits,
discovery documents."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from .conftest import ISSUER, ROOT, AgentFactory


async def operator_token(client: httpx.AsyncClient, role: str, name: str) -> str:
    created = await client.post("/v1/tokens", json={"role": role, "display_name": name})
    assert created.status_code == 201, created.text
    token: str = created.json()["token"]
    return token


def as_(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_register_show_list_update(client: httpx.AsyncClient) -> None:
    body = {"name": "faq-bot", "owners": ["alice"], "declarations": {"tools": ["search_faq"]}}
    created = await client.post("/v1/agents", json=body)
    assert created.status_code == 201
    agent = created.json()
    assert agent["spiffe_id"] == "spiffe://acme.org/agent/faq-bot"
    assert agent["risk"] == {"score": 10, "tier": "low"}
    assert (await client.get("/v1/agents/faq-bot")).json()["id"] == agent["id"]
    listed = (await client.get("/v1/agents")).json()["agents"]
    assert [a["name"] for a in listed] == ["faq-bot"]
    patched = await client.patch(
        "/v1/agents/faq-bot",
        json={"declarations": {"tools": ["search_faq"], "external_connections": "internet"}},
    )
    assert patched.json()["risk"]["score"] > agent["risk"]["score"]
    history = (await client.get("/v1/agents/faq-bot/assessments")).json()["assessments"]
    assert len(history) == 2
    assert {f["code"] for f in history[1]["factors"]} >= {"external_connections"}


@pytest.mark.parametrize(
    ("body", "status", "code", "rule_fragment"),
    [
        ({"name": "Bad Name", "owners": ["a"]}, 400, "invalid_name", "lowercase"),
        ({"name": "ok-name", "owners": []}, 400, "invalid_input", "at least 1"),
        ({"name": "ok-name", "owners": ["a"], "evil": 1}, 400, "invalid_input", "Extra inputs"),
        (
            {"name": "ok-name", "owners": ["a"], "declarations": {"data_classes": ["secret"]}},
            400,
            "invalid_input",
            "public",
        ),
        (
            {"name": "ok-name", "owners": ["a"], "declarations": {"tools": ["rm -rf"]}},
            400,
            "invalid_declaration",
            "letters",
        ),
    ],
)
async def test_bad_input_gets_a_stable_code_and_the_rule(
    client: httpx.AsyncClient, body: dict[str, object], status: int, code: str, rule_fragment: str
) -> None:
    response = await client.post("/v1/agents", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert rule_fragment in (error["details"].get("rule", "") + error["message"])


async def test_duplicate_name_is_409_agent_exists(
    client: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    await make_agent()
    response = await client.post("/v1/agents", json={"name": "faq-bot", "owners": ["x"]})
    assert (response.status_code, response.json()["error"]["code"]) == (409, "agent_exists")


async def test_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/agents",
        content=b"{" + b" " * 70_000 + b"}",
        headers={"content-type": "application/json"},
    )
    assert (response.status_code, response.json()["error"]["code"]) == (413, "body_too_large")
    oauth = await client.post(
        "/oauth2/token",
        content=b"a=" + b"b" * 70_000,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert (oauth.status_code, oauth.json()["error"]) == (413, "invalid_request")


async def test_streamed_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b" " * 1024

    response = await client.post(
        "/v1/agents", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


@pytest.mark.parametrize("header", [None, "Bearer nope", "Basic abc", "Bearer "])
async def test_missing_or_bad_token_is_401(client: httpx.AsyncClient, header: str | None) -> None:
    headers = {"Authorization": header} if header else {"Authorization": ""}
    response = await client.get("/v1/agents", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    assert "Bearer" in response.headers["www-authenticate"]


async def test_roles_are_enforced(client: httpx.AsyncClient, make_agent: AgentFactory) -> None:
    await make_agent()
    auditor = await operator_token(client, "auditor", "audrey")
    developer = await operator_token(client, "developer", "dev")
    assert (await client.get("/v1/agents", headers=as_(auditor))).status_code == 200
    assert (await client.get("/v1/audit", headers=as_(auditor))).status_code == 200
    refused = await client.post("/v1/agents/faq-bot/quarantine", headers=as_(developer))
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")
    assert (await client.get("/v1/audit", headers=as_(developer))).status_code == 403
    mint = await client.post(
        "/v1/tokens", json={"role": "root", "display_name": "x"}, headers=as_(developer)
    )
    assert mint.status_code == 403
    me = (await client.get("/v1/tokens/self", headers=as_(developer))).json()
    assert (me["role"], me["display_name"]) == ("developer", "dev")


async def test_operator_token_secrets_are_never_listed(client: httpx.AsyncClient) -> None:
    secret = await operator_token(client, "auditor", "audrey")
    listing = (await client.get("/v1/tokens")).text
    assert secret not in listing
    assert ROOT not in listing
    audit = (await client.get("/v1/audit", params={"limit": 1000})).text
    assert secret not in audit
    assert ROOT not in audit


async def test_unknown_agent_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/agents/ghost")
    assert (response.status_code, response.json()["error"]["code"]) == (404, "agent_not_found")


async def test_lifecycle_errors_are_409(
    client: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    await make_agent()
    response = await client.post("/v1/agents/faq-bot/resume")
    assert (response.status_code, response.json()["error"]["code"]) == (
        409,
        "invalid_state_transition",
    )


async def test_discovery_documents_carry_what_a_generic_client_needs(
    client: httpx.AsyncClient,
) -> None:
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        meta = (await client.get(path, headers={"Authorization": ""})).json()
        assert meta["issuer"] == ISSUER
        assert meta["token_endpoint"] == f"{ISSUER}/oauth2/token"
        assert meta["jwks_uri"] == f"{ISSUER}/.well-known/jwks.json"
        assert "private_key_jwt" in meta["token_endpoint_auth_methods_supported"]
        assert "client_credentials" in meta["grant_types_supported"]
        assert "none" not in meta["token_endpoint_auth_signing_alg_values_supported"]
    jwks = (await client.get("/.well-known/jwks.json")).json()
    assert [k["alg"] for k in jwks["keys"]] == ["ES256"]
    assert all("d" not in k for k in jwks["keys"])


async def test_health_and_openapi(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json()["status"] == "ready"
    spec = (await client.get("/openapi.json")).json()
    assert "/v1/agents" in spec["paths"]
    assert "/oauth2/token" in spec["paths"]

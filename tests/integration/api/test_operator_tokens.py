"""Operator tokens: revoked at once, by whom, one root token, and the enforcement-point role."""

from __future__ import annotations

from pathlib import Path

import httpx

from tether.api.app import create_app
from tether.api.services import Services
from tether.config import Settings

from .conftest import ISSUER, ROOT
from .decisions import evaluation
from .test_management_api import as_, operator_token


async def _token_id(client: httpx.AsyncClient, token: str) -> str:
    me = await client.get("/v1/tokens/self", headers=as_(token))
    assert me.status_code == 200, me.text
    token_id: str = me.json()["id"]
    return token_id


async def test_revoked_operator_token_is_refused_at_once(client: httpx.AsyncClient) -> None:
    developer = await operator_token(client, "developer", "dev")
    assert (await client.get("/v1/agents", headers=as_(developer))).status_code == 200
    revoked = await client.delete(f"/v1/tokens/{await _token_id(client, developer)}")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None
    assert (await client.get("/v1/agents", headers=as_(developer))).status_code == 401
    audit = (await client.get("/v1/audit", params={"type_prefix": "operator."})).text
    assert "operator.token_revoked" in audit


async def test_anyone_may_give_up_their_own_token(client: httpx.AsyncClient) -> None:
    auditor = await operator_token(client, "auditor", "audrey")
    own = await client.delete(
        f"/v1/tokens/{await _token_id(client, auditor)}", headers=as_(auditor)
    )
    assert own.status_code == 200
    assert (await client.get("/v1/tokens/self", headers=as_(auditor))).status_code == 401


async def test_only_security_revokes_others_and_only_root_revokes_root(
    client: httpx.AsyncClient,
) -> None:
    developer = await operator_token(client, "developer", "dev")
    security = await operator_token(client, "security-admin", "sam")
    auditor = await operator_token(client, "auditor", "audrey")
    auditor_id = await _token_id(client, auditor)
    refused = await client.delete(f"/v1/tokens/{auditor_id}", headers=as_(developer))
    assert refused.status_code == 403
    root_id = await _token_id(client, ROOT)
    assert (await client.delete(f"/v1/tokens/{root_id}", headers=as_(security))).status_code == 403
    allowed = await client.delete(f"/v1/tokens/{auditor_id}", headers=as_(security))
    assert allowed.status_code == 200
    missing = await client.delete("/v1/tokens/opt_nosuchtoken", headers=as_(security))
    assert (missing.status_code, missing.json()["error"]["code"]) == (
        404,
        "operator_token_not_found",
    )


async def test_root_tokens_are_not_minted(client: httpx.AsyncClient) -> None:
    mint = await client.post("/v1/tokens", json={"role": "root", "display_name": "x"})
    assert mint.status_code == 400


async def test_changing_the_root_token_revokes_the_old_one(tmp_path: Path) -> None:
    first, second = ROOT, "tto_another-root-token-0123456789"
    settings = Settings(data_dir=tmp_path / "data", issuer=ISSUER, root_token=first)
    for root in (first, second):
        services = await Services.open(settings.with_(root_token=root))
        await services.close()
    services = await Services.open(settings.with_(root_token=second))
    try:
        app = create_app(services.settings, services=services)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=ISSUER
        ) as client:
            assert (await client.get("/v1/tokens/self", headers=as_(first))).status_code == 401
            assert (await client.get("/v1/tokens/self", headers=as_(second))).status_code == 200
    finally:
        await services.close()


async def test_enforcement_point_token_evaluates_for_agents_and_does_nothing_else(
    client: httpx.AsyncClient, agent_token: str
) -> None:
    minted = await client.post(
        "/v1/tokens", json={"role": "enforcement-point", "display_name": "envoy-gateway"}
    )
    assert minted.status_code == 201, minted.text
    assert minted.json()["role"] == "enforcement-point"
    gateway = minted.json()["token"]
    on_behalf = evaluation(
        subject={"type": "agent", "id": "faq-bot", "properties": {"token": agent_token}}
    )
    answer = await client.post("/access/v1/evaluation", json=on_behalf, headers=as_(gateway))
    assert answer.status_code == 200, answer.text
    assert answer.json()["decision"] is True
    register = {"name": "rogue-bot", "owners": ["envoy-gateway"]}
    assert (await client.post("/v1/agents", json=register, headers=as_(gateway))).status_code == 403
    assert (await client.get("/v1/audit", headers=as_(gateway))).status_code == 403
    revoke = await client.post(
        "/v1/svid/revocations", json={"agent": "faq-bot"}, headers=as_(gateway)
    )
    assert revoke.status_code == 403
    mint = {"role": "developer", "display_name": "x"}
    assert (await client.post("/v1/tokens", json=mint, headers=as_(gateway))).status_code == 403

"""The secrets vault engine and the downstream token engine over the API.

Every test here is also a leak test (the ``client`` fixture); on top of that, the vault's
values are looked for in every response, in every audit entry and in the database file.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

import httpx
import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from tether.api.services import Services
from tether.config import Settings
from tether.errors import Unauthenticated

from .conftest import ISSUER, AgentFactory, RegisteredAgent
from .decisions import svid
from .test_management_api import as_, operator_token

CRM_KEY = "crm-key-8d1f0c2b9a7e6d5c"
REFRESH = "gh-refresh-4e3d2c1b0a99"
ROTATED = "crm-key-rotated-77aa66bb"
ORDERS = "https://orders.internal.acme.org"

VAULT: dict[str, Any] = {
    "kind": "vault",
    "roles": [
        {"name": "crm", "resource": "crm", "options": {"secret": "crm-api-key"}},
        {
            "name": "github",
            "resource": "github",
            "options": {"secret": "gh-refresh", "handout": "lease"},
        },
    ],
    "secret": json.dumps({"crm-api-key": CRM_KEY, "gh-refresh": REFRESH}),
}
TOKENS: dict[str, Any] = {
    "kind": "token",
    "roles": [
        {
            "name": "orders",
            "resource": "orders",
            "default_ttl": 60,
            "max_ttl": 300,
            "options": {"audience": ORDERS, "scope": "orders:read"},
        }
    ],
}


def _permit(kind: str, resource: str) -> str:
    return f"""
@id("faq-bot-uses-{kind.lower()}-{resource}")
permit (
  principal == Tether::Agent::"faq-bot",
  action == Tether::Action::"use_credential",
  resource == Tether::{kind}::"{resource}"
);
"""


async def _setup(client: httpx.AsyncClient, policies: str = "") -> None:
    for name, body in (("vault-main", VAULT), ("orders-api", TOKENS)):
        answer = await client.put(f"/v1/engines/{name}", json=body)
        assert answer.status_code == 200, answer.text
    text = policies or _permit("Secret", "crm") + _permit("Secret", "github") + _permit(
        "Api", "orders"
    )
    applied = await client.post("/v1/policies", json={"text": text})
    assert applied.status_code == 201, applied.text


@pytest.fixture
async def agent(make_agent: AgentFactory) -> RegisteredAgent:
    return await make_agent("faq-bot")


@pytest.fixture
async def token(client: httpx.AsyncClient, agent: RegisteredAgent) -> str:
    """faq-bot's JWT-SVID, with both engines configured and policies letting it use them."""
    await _setup(client)
    return await svid(client, agent)


async def _lease(
    client: httpx.AsyncClient, token: str, engine: str, role: str, **body: Any
) -> httpx.Response:
    return await client.post(
        "/v1/leases", json={"engine": engine, "role": role, **body}, headers=as_(token)
    )


async def _audit_log(services: Services) -> bytes:
    end = await services.store.audit_log_end(services.audit.origin)
    size = 0 if end is None else end.index + 1
    entries = await services.store.audit_entries(services.audit.origin, start=0, stop=size)
    return b"\n".join(e.entry for e in entries)


async def _records(services: Services, kind: str) -> list[dict[str, Any]]:
    page = await services.store.list_audit(type_prefix=kind, limit=1000)
    return [dict(record.details) for _, record in page if record.type == kind]


async def _everything_an_operator_reads(client: httpx.AsyncClient) -> str:
    paths = ("/v1/engines", "/v1/engines/vault-main", "/v1/engines/vault-main/secrets")
    answers = [await client.get(path) for path in (*paths, "/v1/leases", "/v1/audit")]
    return "\n".join(answer.text for answer in answers)


# -- vault --------------------------------------------------------------------------------


async def test_vault_inject_lease_never_shows_the_value(
    client: httpx.AsyncClient, token: str, services: Services
) -> None:
    issued = await _lease(client, token, "vault-main", "crm")
    assert issued.status_code == 201, issued.text
    body = issued.json()
    assert body["credential"] == {
        "name": body["lease"]["id"],
        "secret": None,
        "secret_name": "crm-api-key",
        "handout": "inject",
    }
    lease = await client.get(f"/v1/leases/{body['lease']['id']}", headers=as_(token))
    seen = issued.text + lease.text + await _everything_an_operator_reads(client)
    assert CRM_KEY not in seen
    assert CRM_KEY.encode() not in await _audit_log(services)
    recorded = await _records(services, "lease.issued")
    assert [r["lease_id"] for r in recorded] == [body["lease"]["id"]]


async def test_vault_lease_handout_returns_the_value_in_the_issuing_response_only(
    client: httpx.AsyncClient, token: str, services: Services
) -> None:
    issued = await _lease(client, token, "vault-main", "github")
    assert issued.status_code == 201, issued.text
    assert issued.headers["cache-control"] == "no-store"
    credential = issued.json()["credential"]
    assert credential["secret"] == REFRESH
    assert (credential["secret_name"], credential["handout"]) == ("gh-refresh", "lease")
    lease_id = issued.json()["lease"]["id"]
    shown = await client.get(f"/v1/leases/{lease_id}", headers=as_(token))
    assert REFRESH not in shown.text + await _everything_an_operator_reads(client)
    assert REFRESH.encode() not in await _audit_log(services)


async def test_vault_lease_revocation_succeeds_and_renewal_moves_the_lease(
    client: httpx.AsyncClient, token: str
) -> None:
    lease = (await _lease(client, token, "vault-main", "crm", ttl=60)).json()["lease"]
    renewed = await client.post(f"/v1/leases/{lease['id']}/renew", json={"ttl": 120})
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["renewals"] == 1
    revoked = await client.post(f"/v1/leases/{lease['id']}/revoke", json={"reason": "done"})
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["state"] == "revoked"


async def test_vault_secrets_put_list_delete_are_audited_by_name_only(
    client: httpx.AsyncClient, token: str, services: Services
) -> None:
    put = await client.put("/v1/engines/vault-main/secrets/crm-backup", json={"value": ROTATED})
    assert put.status_code == 200, put.text
    assert put.json() == {"engine": "vault-main", "secret": "crm-backup", "version": 2}
    listed = await client.get("/v1/engines/vault-main/secrets")
    assert listed.json() == {
        "engine": "vault-main",
        "secrets": ["crm-api-key", "crm-backup", "gh-refresh"],
    }
    deleted = await client.delete("/v1/engines/vault-main/secrets/crm-backup")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"engine": "vault-main", "deleted": "crm-backup", "version": 3}
    assert (await client.get("/v1/engines/vault-main/secrets")).json()["secrets"] == [
        "crm-api-key",
        "gh-refresh",
    ]
    assert [r["secret"] for r in await _records(services, "engine.secret_set")] == ["crm-backup"]
    assert [r["secret"] for r in await _records(services, "engine.secret_deleted")] == [
        "crm-backup"
    ]
    seen = put.text + listed.text + deleted.text + await _everything_an_operator_reads(client)
    logged = await _audit_log(services)
    for value in (ROTATED, CRM_KEY, REFRESH):
        assert value not in seen
        assert value.encode() not in logged


async def test_vault_put_secret_is_used_by_the_next_lease(
    client: httpx.AsyncClient, token: str
) -> None:
    put = await client.put("/v1/engines/vault-main/secrets/gh-refresh", json={"value": ROTATED})
    assert put.status_code == 200, put.text
    issued = await _lease(client, token, "vault-main", "github")
    assert issued.json()["credential"]["secret"] == ROTATED


async def test_vault_secret_values_are_sealed_in_the_database(
    client: httpx.AsyncClient, token: str, settings: Settings, services: Services
) -> None:
    put = await client.put("/v1/engines/vault-main/secrets/crm-backup", json={"value": ROTATED})
    assert put.status_code == 200, put.text
    stored = await services.store.get_engine("vault-main")
    assert stored is not None
    assert stored.sealed_secret is not None
    assert settings.database_url.startswith("sqlite:")
    files = sorted(settings.data_dir.glob("tether.db*"))
    raw = b"".join(path.read_bytes() for path in files)
    assert b"crm-api-key" in raw  # the roles, in the clear: these are the right bytes
    for value in (ROTATED, CRM_KEY, REFRESH):
        assert value.encode() not in raw
        assert value.encode() not in stored.sealed_secret


async def test_vault_role_naming_a_missing_secret_is_refused(
    client: httpx.AsyncClient, token: str
) -> None:
    roles = [*VAULT["roles"], {"name": "jira", "options": {"secret": "jira-token"}}]
    refused = await client.put("/v1/engines/vault-main", json={"kind": "vault", "roles": roles})
    assert refused.status_code == 400, refused.text
    assert "'jira-token', which engine 'vault-main' does not hold" in refused.text
    in_use = await client.delete("/v1/engines/vault-main/secrets/crm-api-key")
    assert in_use.status_code == 400, in_use.text
    missing = await client.delete("/v1/engines/vault-main/secrets/never-set")
    assert missing.status_code == 404, missing.text
    engine = (await client.get("/v1/engines/vault-main")).json()
    assert engine["version"] == 1
    assert [r["name"] for r in engine["roles"]] == ["crm", "github"]


async def test_vault_developer_cannot_put_or_list_secrets(
    client: httpx.AsyncClient, token: str, services: Services
) -> None:
    developer = await operator_token(client, "developer", "dan")
    put = await client.put(
        "/v1/engines/vault-main/secrets/crm-api-key",
        json={"value": ROTATED},
        headers=as_(developer),
    )
    assert put.status_code == 403, put.text
    listed = await client.get("/v1/engines/vault-main/secrets", headers=as_(developer))
    assert listed.status_code == 403, listed.text
    deleted = await client.delete(
        "/v1/engines/vault-main/secrets/gh-refresh", headers=as_(developer)
    )
    assert deleted.status_code == 403, deleted.text
    assert await _records(services, "engine.secret_set") == []
    admin = await operator_token(client, "platform-admin", "pat")
    allowed = await client.get("/v1/engines/vault-main/secrets", headers=as_(admin))
    assert allowed.status_code == 200, allowed.text


async def test_vault_secrets_of_a_token_engine_are_refused(
    client: httpx.AsyncClient, token: str
) -> None:
    refused = await client.put("/v1/engines/orders-api/secrets/x-key", json={"value": "v"})
    assert refused.status_code == 400, refused.text
    assert "only vault engines hold secrets" in refused.text


# -- policy -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("engine", "role", "wrong"),
    [
        ("vault-main", "crm", _permit("Api", "crm")),
        ("orders-api", "orders", _permit("Secret", "orders") + _permit("Database", "orders")),
    ],
)
async def test_use_credential_is_denied_without_a_policy_on_the_kind_entity(
    client: httpx.AsyncClient,
    agent: RegisteredAgent,
    services: Services,
    engine: str,
    role: str,
    wrong: str,
) -> None:
    await _setup(client, policies=wrong)
    refused = await _lease(client, await svid(client, agent), engine, role)
    assert refused.status_code == 403, refused.text
    assert (await client.get("/v1/leases")).json()["leases"] == []
    decisions = await _records(services, "decision")
    kind = "Secret" if engine == "vault-main" else "Api"
    assert decisions[-1]["resource"] == f'{kind}::"{role}"'
    assert decisions[-1]["effect"] == "deny"


# -- downstream tokens --------------------------------------------------------------------


async def _jwks(client: httpx.AsyncClient) -> KeySet:
    answer = await client.get("/.well-known/jwks.json", headers={"Authorization": ""})
    assert answer.status_code == 200, answer.text
    return KeySet.import_key_set(answer.json())


async def _downstream(client: httpx.AsyncClient, token: str) -> dict[str, Any]:
    issued = await _lease(client, token, "orders-api", "orders")
    assert issued.status_code == 201, issued.text
    body: dict[str, Any] = issued.json()
    return body


async def test_downstream_token_verifies_with_the_published_jwks(
    client: httpx.AsyncClient, token: str, agent: RegisteredAgent
) -> None:
    issued = await _downstream(client, token)
    lease, credential = issued["lease"], issued["credential"]
    decoded = jose_jwt.decode(credential["secret"], await _jwks(client), algorithms=["ES256"])
    assert decoded.header["typ"] == "at+jwt"
    claims = decoded.claims
    expires = datetime.fromisoformat(lease["expires_at"])
    assert claims["iss"] == ISSUER
    assert claims["aud"] == ORDERS
    assert claims["sub"] == f"{agent.spiffe_id}/i/{lease['instance']}"
    assert claims["client_id"] == agent.spiffe_id
    assert claims["jti"] == lease["id"]
    assert claims["exp"] == math.floor(expires.timestamp())
    assert claims["scope"] == "orders:read"
    assert claims["iat"] == claims["nbf"] <= claims["exp"]
    assert credential["audience"] == ORDERS
    assert credential["name"] == lease["id"]


async def test_downstream_token_is_refused_as_an_agent_token(
    client: httpx.AsyncClient, token: str, services: Services
) -> None:
    downstream = (await _downstream(client, token))["credential"]["secret"]
    refused = await _lease(client, downstream, "vault-main", "crm")
    assert refused.status_code == 401, refused.text
    listed = await client.get("/v1/leases", headers=as_(downstream))
    assert listed.status_code == 401, listed.text
    evaluation = {"action": {"name": "use_credential"}, "resource": {"type": "Api", "id": "x"}}
    answer = await client.post("/access/v1/evaluation", json=evaluation, headers=as_(downstream))
    assert answer.json()["decision"] is False
    with pytest.raises(Unauthenticated):
        await services.svids.verify_agent_token(downstream, certificate_thumbprint=None)
    # The agent's own token still works: the refusal is about the token, not the agent.
    assert (await client.get("/v1/leases", headers=as_(token))).status_code == 200


async def test_downstream_token_lease_is_not_renewable_and_revokes_as_a_record(
    client: httpx.AsyncClient, token: str
) -> None:
    lease = (await _downstream(client, token))["lease"]
    renewed = await client.post(f"/v1/leases/{lease['id']}/renew", headers=as_(token))
    assert renewed.status_code == 400, renewed.text
    assert "take a new lease" in renewed.text
    shown = (await client.get(f"/v1/leases/{lease['id']}", headers=as_(token))).json()
    assert shown["expires_at"] == lease["expires_at"]
    revoked = await client.post(f"/v1/leases/{lease['id']}/revoke", headers=as_(token))
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["state"] == "revoked"


@pytest.mark.parametrize(
    "audience", [ISSUER, f"{ISSUER}/oauth2/token", f"{ISSUER}/v1", "https://api.acme.org"]
)
async def test_downstream_token_role_for_an_audience_of_tether_tokens_is_refused(
    client: httpx.AsyncClient, audience: str
) -> None:
    body = json.loads(json.dumps(TOKENS))
    body["roles"][0]["options"]["audience"] = audience
    refused = await client.put("/v1/engines/orders-api", json=body)
    assert refused.status_code == 400, refused.text
    assert "may not be Tether" in refused.text


async def test_downstream_token_role_outliving_a_retired_signing_key_is_refused(
    client: httpx.AsyncClient,
) -> None:
    body = json.loads(json.dumps(TOKENS))
    body["roles"][0]["max_ttl"] = 301  # jwt_svid_ttl_seconds is 300
    refused = await client.put("/v1/engines/orders-api", json=body)
    assert refused.status_code == 400, refused.text
    assert "max_ttl is at most 300" in refused.text


async def test_vault_holds_a_16_kib_secret_and_refuses_a_larger_one(
    client: httpx.AsyncClient, token: str
) -> None:
    pem = "k" * 16 * 1024
    put = await client.put("/v1/engines/vault-main/secrets/tls-key", json={"value": pem})
    assert put.status_code == 200, put.text
    wide = "é" * (8 * 1024 + 1)  # 16 KiB + 2 bytes in UTF-8, fewer characters
    refused = await client.put("/v1/engines/vault-main/secrets/tls-key", json={"value": wide})
    assert refused.status_code == 400, refused.text
    assert "é" not in refused.text

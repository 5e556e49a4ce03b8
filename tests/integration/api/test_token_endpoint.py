"""``POST /oauth2/token`` with ``private_key_jwt``: the happy path, and every attack refused
with ``invalid_client`` (RFC 6749 body) and an audit record naming the reason."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tether.api.services import Services
from tether.crypto.assertion import generate_agent_key, sign_client_assertion
from tether.identity.client_auth import ASSERTION_TYPE

from .conftest import ISSUER, TRUST_DOMAIN, AgentFactory, RegisteredAgent
from .forge import DELETE, b64url, claims_for, es256_sign, forge

TOKEN_ENDPOINT = f"{ISSUER}/oauth2/token"


def form(agent: RegisteredAgent, assertion: str, **extra: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
        "instance_id": "pod-1",
        **extra,
    }


def good_assertion(agent: RegisteredAgent) -> str:
    return sign_client_assertion(
        agent.key.private_pem,
        client_id=agent.spiffe_id,
        audience=TOKEN_ENDPOINT,
        now=int(time.time()),
    )


def payload(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    data: dict[str, Any] = json.loads(b64url_decode(part))
    return data


def b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


async def test_agent_instance_gets_a_jwt_svid_naming_the_instance(
    client: httpx.AsyncClient, make_agent: AgentFactory, services: Services
) -> None:
    agent = await make_agent()
    response = await client.post("/oauth2/token", data=form(agent, good_assertion(agent)))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    claims = payload(body["access_token"])
    assert claims["sub"] == f"spiffe://{TRUST_DOMAIN}/agent/faq-bot/i/pod-1"
    assert claims["aud"] == ISSUER
    assert claims["exp"] - claims["iat"] == 300
    assert claims["client_id"] == agent.spiffe_id
    verified = services.keyring.verify_issued(
        body["access_token"], audience=ISSUER, issuer=ISSUER, now=int(time.time())
    )
    assert verified.sub == claims["sub"]
    instances = (await client.get("/v1/agents/faq-bot/instances")).json()["instances"]
    assert [(i["instance_id"], i["last_kid"]) for i in instances] == [("pod-1", agent.kid)]


async def test_audience_comes_from_the_allow_list(
    client: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent = await make_agent()
    ok = await client.post(
        "/oauth2/token",
        data=form(agent, good_assertion(agent), resource="https://api.acme.org"),
    )
    assert payload(ok.json()["access_token"])["aud"] == "https://api.acme.org"
    refused = await client.post(
        "/oauth2/token",
        data=form(agent, good_assertion(agent), audience="https://evil.example"),
    )
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_target")


def _other_key_assertion(agent: RegisteredAgent) -> str:
    return forge(generate_agent_key().private_pem, claims_for(agent.spiffe_id, TOKEN_ENDPOINT))


def _hs256_with_public_key(agent: RegisteredAgent) -> str:
    secret = json.dumps(agent.key.public_jwk).encode()
    return forge(b"", claims_for(agent.spiffe_id, TOKEN_ENDPOINT), alg="HS256", hmac_secret=secret)


def _claims(**overrides: object) -> Callable[[RegisteredAgent], str]:
    def make(agent: RegisteredAgent) -> str:
        return forge(
            agent.key.private_pem, claims_for(agent.spiffe_id, TOKEN_ENDPOINT, **overrides)
        )

    return make


def _header(header: dict[str, object]) -> Callable[[RegisteredAgent], str]:
    def make(agent: RegisteredAgent) -> str:
        return forge(
            agent.key.private_pem, claims_for(agent.spiffe_id, TOKEN_ENDPOINT), header=header
        )

    return make


def _alg_none(agent: RegisteredAgent) -> str:
    return forge(b"", claims_for(agent.spiffe_id, TOKEN_ENDPOINT), alg="none")


def _tampered(agent: RegisteredAgent) -> str:
    head, _, sig = good_assertion(agent).split(".")
    body = b64url(json.dumps(claims_for(agent.spiffe_id, TOKEN_ENDPOINT)).encode())
    return f"{head}.{body}.{sig}"


def _duplicate_sub(agent: RegisteredAgent) -> str:
    # Two "sub" members: parsers disagree on which wins, so the token is refused outright.
    claims = json.dumps(claims_for(agent.spiffe_id, TOKEN_ENDPOINT))
    doubled = claims[:-1] + ', "sub": "spiffe://acme.org/agent/admin"}'
    head = b64url(json.dumps({"alg": "ES256", "typ": "JWT"}).encode())
    signing_input = f"{head}.{b64url(doubled.encode())}"
    return f"{signing_input}.{b64url(es256_sign(agent.key.private_pem, signing_input.encode()))}"


NOW = int(time.time())
ATTACKS: dict[str, Callable[[RegisteredAgent], str]] = {
    "alg_none": _alg_none,
    "hs256_with_the_public_key_as_secret": _hs256_with_public_key,
    "alg_not_matching_the_key": _header({"alg": "ES384", "typ": "JWT"}),
    "signed_by_an_unregistered_key": _other_key_assertion,
    "tampered_payload": _tampered,
    "wrong_audience": _claims(aud="https://other.example/token"),
    "expired": _claims(exp=NOW - 120, iat=NOW - 180),
    "far_future_exp": _claims(exp=NOW + 24 * 3600),
    "issued_in_the_future": _claims(iat=NOW + 3600, exp=NOW + 3660),
    "iss_differs_from_sub": _claims(sub="spiffe://acme.org/agent/other"),
    "missing_jti": _claims(jti=DELETE),
    "missing_exp": _claims(exp=DELETE),
    "unknown_client": _claims(
        iss="spiffe://acme.org/agent/ghost", sub="spiffe://acme.org/agent/ghost"
    ),
    "other_trust_domain": _claims(
        iss="spiffe://evil.org/agent/faq-bot", sub="spiffe://evil.org/agent/faq-bot"
    ),
    "instance_spiffe_id_as_client": _claims(
        iss="spiffe://acme.org/agent/faq-bot/i/x", sub="spiffe://acme.org/agent/faq-bot/i/x"
    ),
    "garbage": lambda agent: "not.a.jwt",
    "crit_header": _header({"alg": "ES256", "crit": ["exp"], "exp": 1}),
    "exp_not_a_number": _claims(exp=float("nan")),
    "exp_infinite": _claims(exp=float("inf")),
    "duplicate_sub_member": _duplicate_sub,
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
async def test_bad_assertion_is_invalid_client_and_audited(
    client: httpx.AsyncClient, make_agent: AgentFactory, attack: str
) -> None:
    agent = await make_agent()
    assertion = ATTACKS[attack](agent)
    response = await client.post("/oauth2/token", data=form(agent, assertion))
    assert response.status_code == 401
    body = response.json()
    assert body["error"] == "invalid_client"
    assert set(body) == {"error", "error_description"}
    audit = (await client.get("/v1/audit", params={"type_prefix": "client."})).json()["records"]
    assert [r["type"] for r in audit] == ["client.authentication_failed"]
    assert audit[0]["details"]["reason"]
    assert audit[0]["actor"] == "unauthenticated", "a failed caller cannot name the record's actor"
    assert assertion not in json.dumps(audit), "the assertion itself is never logged"


@pytest.mark.parametrize(
    ("extra", "headers", "reason"),
    [
        (
            {"client_id": "spiffe://acme.org/agent/faq-bot", "client_secret": "s3cret"},
            {},
            "no_credentials",
        ),
        ({}, {"Authorization": "Basic ZmFxLWJvdDpzM2NyZXQ="}, "client_secret_refused"),
    ],
    ids=["shared_secret_in_the_body", "shared_secret_in_basic_auth"],
)
async def test_shared_secrets_and_missing_credentials_are_invalid_client_and_audited(
    client: httpx.AsyncClient,
    make_agent: AgentFactory,
    extra: dict[str, str],
    headers: dict[str, str],
    reason: str,
) -> None:
    await make_agent()
    data = {"grant_type": "client_credentials", "instance_id": "pod-1", **extra}
    response = await client.post("/oauth2/token", data=data, headers=headers)
    assert (response.status_code, response.json()["error"]) == (401, "invalid_client")
    audit = (await client.get("/v1/audit", params={"type_prefix": "client."})).json()["records"]
    assert [r["details"]["reason"] for r in audit] == [reason]
    assert "s3cret" not in json.dumps(audit)


@pytest.mark.parametrize("state", ["suspend", "quarantine", "retire"])
async def test_inactive_agent_cannot_authenticate(
    client: httpx.AsyncClient, make_agent: AgentFactory, state: str
) -> None:
    agent = await make_agent()
    assert (await client.post(f"/v1/agents/faq-bot/{state}")).status_code == 200
    response = await client.post("/oauth2/token", data=form(agent, good_assertion(agent)))
    assert (response.status_code, response.json()["error"]) == (401, "invalid_client")


async def test_pending_review_agent_cannot_authenticate(
    client: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent = await make_agent(
        "bank-bot",
        data_classes=["restricted"],
        external_connections="internet",
        autonomy="autonomous",
        may_call_agents=True,
    )
    response = await client.post("/oauth2/token", data=form(agent, good_assertion(agent)))
    assert response.status_code == 401
    await client.post("/v1/agents/bank-bot/approve")
    response = await client.post("/oauth2/token", data=form(agent, good_assertion(agent)))
    assert response.status_code == 200


async def test_removed_key_no_longer_authenticates(
    client: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent = await make_agent()
    assert (await client.delete(f"/v1/agents/faq-bot/keys/{agent.kid}")).status_code == 200
    response = await client.post("/oauth2/token", data=form(agent, good_assertion(agent)))
    assert response.status_code == 401


async def test_replayed_assertion_is_refused(
    client: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent = await make_agent()
    data = form(agent, good_assertion(agent))
    assert (await client.post("/oauth2/token", data=data)).status_code == 200
    replay = await client.post("/oauth2/token", data=data)
    assert (replay.status_code, replay.json()["error"]) == (401, "invalid_client")
    audit = (await client.get("/v1/audit", params={"type_prefix": "client."})).json()["records"]
    assert audit[-1]["details"]["reason"] == "assertion_replayed"


async def test_replay_race_lets_exactly_one_through(
    client: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent = await make_agent()
    data = form(agent, good_assertion(agent))
    responses = await asyncio.gather(*(client.post("/oauth2/token", data=data) for _ in range(20)))
    assert sorted(r.status_code for r in responses) == [200] + [401] * 19


@pytest.mark.parametrize(
    ("data", "status", "error"),
    [
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({}, 400, "invalid_request"),
        ({"grant_type": "client_credentials"}, 401, "invalid_client"),
        ({"grant_type": "client_credentials", "scope": "admin"}, 400, "invalid_scope"),
    ],
)
async def test_malformed_token_requests(
    client: httpx.AsyncClient, data: dict[str, str], status: int, error: str
) -> None:
    response = await client.post("/oauth2/token", data=data)
    assert (response.status_code, response.json()["error"]) == (status, error)


async def test_repeated_parameter_is_invalid_request(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/oauth2/token",
        content="grant_type=client_credentials&grant_type=client_credentials",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")


async def test_client_secret_basic_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": "Basic ZmFxLWJvdDpzZWNyZXQ="},
    )
    assert (response.status_code, response.json()["error"]) == (401, "invalid_client")


async def test_missing_instance_id_is_refused(
    client: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent = await make_agent()
    data = form(agent, good_assertion(agent))
    del data["instance_id"]
    assert (await client.post("/oauth2/token", data=data)).status_code == 401

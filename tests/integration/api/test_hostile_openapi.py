"""Hostile input from ``/openapi.json`` with every kind of caller (issue 13 §3).

Schemathesis generates valid and invalid requests for every operation; each is sent as each
operator role, an agent (its JWT-SVID), a person (their own account's token) and nobody. No
answer may be a server error, a status, content type or body the spec does not declare
(``tether.api.openapi`` declares the errors), or an error that is not Tether's. Then one
well-formed request per operation and caller: refused with 401/403 exactly when the caller may
not reach it (``hostile_routes.ROUTES``).
``TETHER_FUZZ`` (``make fuzz``) raises the number of generated requests.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis

from tests.support.hostile_api import (
    AnyCase,
    failures,
    fuzz_examples,
    generate_cases,
    send,
    thorough,
)
from tether.api.app import create_app
from tether.api.services import Services
from tether.config import Settings
from tether.crypto.assertion import generate_agent_key
from tether.delegation.grants import ACCOUNT_SCOPE
from tether.delegation.models import Approval
from tether.monitor.models import Finding, Severity

from .conftest import ISSUER, ROOT, TRUST_DOMAIN
from .decisions import POLICIES
from .hostile_routes import CALLERS, OPERATORS, ROUTES, VAULT, Guard

#: A real MCP server over stdio, for the gateway to list tools from.
_UPSTREAM = [
    sys.executable,
    str(Path(__file__).parents[2] / "support" / "mcp_upstream.py"),
    "stdio",
]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The API's settings, with cheap password hashing (the users here are throwaway)."""
    return Settings(
        data_dir=tmp_path / "data",
        issuer=ISSUER,
        trust_domain=TRUST_DOMAIN,
        root_token=ROOT,
        allowed_audiences=("https://api.acme.org",),
        password_memory_kib=32,
        password_time_cost=1,
    )


@dataclass
class World:
    """What one caller is let loose on: the resources the probes name, and its headers."""

    caller: str
    names: dict[str, str]
    values: dict[str, object]
    headers: dict[str, str]


async def _token(client: httpx.AsyncClient, role: str) -> str:
    created = await client.post("/v1/tokens", json={"role": role, "display_name": f"a-{role}"})
    assert created.status_code == 201, created.text
    token: str = created.json()["token"]
    return token


async def _user_token(client: httpx.AsyncClient, services: Services) -> str:
    added = await client.post("/v1/users", json={"name": "carol", "password": "p" * 16})
    assert added.status_code == 201, added.text
    user = await services.store.get_user("carol")
    assert user is not None
    issued = await services.delegation.tokens.issue_user_token(
        user=user, client_id="tether-cli", scopes={ACCOUNT_SCOPE}, session="sid_1"
    )
    return issued.token


async def _resources(client: httpx.AsyncClient) -> dict[str, str]:
    """An engine, an OAuth client, an MCP server and a spare operator token, as root."""
    made = [
        await client.put("/v1/engines/vault-1", json=VAULT),
        await client.post(
            "/v1/clients", json={"client_id": "app-1", "redirect_uris": ["https://a.example/cb"]}
        ),
        await client.post("/v1/mcp/servers", json={"name": "docs-mcp", "command": _UPSTREAM}),
        await client.post("/v1/tokens", json={"role": "auditor", "display_name": "spare"}),
    ]
    for answer in made:
        assert answer.is_success, answer.text
    return {
        "engine": "vault-1",
        "client": "app-1",
        "server": "docs-mcp",
        "token_id": made[3].json()["id"],
    }


_LEASE_POLICY = """
@id("faq-bot-reads-docs")
permit (
  principal == Tether::Agent::"faq-bot",
  action == Tether::Action::"use_credential",
  resource == Tether::Secret::"docs"
);
"""
_CONSENT = {
    "agent": "faq-bot",
    "scopes": ["faq"],
    "purpose": "answer me",
    "purpose_code": "support",
}


async def _held(client: httpx.AsyncClient, agent: str, user: str) -> dict[str, str]:
    """A lease the agent holds and a grant the person gave it."""
    applied = await client.post("/v1/policies", json={"text": POLICIES + _LEASE_POLICY})
    assert applied.status_code == 201, applied.text
    as_agent = {"Authorization": f"Bearer {agent}"}
    lease = await client.post(
        "/v1/leases", json={"engine": "vault-1", "role": "reader"}, headers=as_agent
    )
    assert lease.status_code == 201, lease.text
    as_user = {"Authorization": f"Bearer {user}"}
    grant = await client.post("/v1/grants", json=_CONSENT, headers=as_user)
    assert grant.status_code == 201, grant.text
    return {"lease_id": lease.json()["lease"]["id"], "grant_id": grant.json()["id"]}


async def _raised(services: Services, agent: str) -> dict[str, str]:
    """An alert about the agent (its owners: alice) and an approval request to carol."""
    alert = await services.monitor.report(
        Finding(kind="impersonation", severity=Severity.HIGH, key=agent, summary="x", agent=agent)
    )
    now = services.clock.now()
    approval = Approval(
        id="apr_hostile",
        auth_req_key="0" * 64,
        client=f"spiffe://acme.org/agent/{agent}",
        agent=agent,
        user="carol",
        scope=frozenset({"openid"}),
        binding_message="TX-1",
        details=({"type": "tool_call", "call_digest": "sha256:" + "a" * 64},),
        created_at=now,
        expires_at=now + timedelta(minutes=5),
        interval=5,
    )
    await services.store.create_approval(approval)
    return {"alert_id": alert.id, "approval_id": approval.id}


async def _world(
    caller: str, client: httpx.AsyncClient, services: Services, agent_token: str
) -> World:
    keys = await client.get("/v1/agents/faq-bot/keys")
    names = {
        "agent": "faq-bot",
        "kid": keys.json()["keys"][0]["kid"],
        "user": "carol",
    } | await _resources(client)
    user = await _user_token(client, services)
    names |= await _held(client, agent_token, user)
    names |= await _raised(services, names["agent"])
    tokens = {"root": ROOT, "agent": agent_token, "user": user}
    for role in OPERATORS:
        if role != "root":
            tokens[role] = await _token(client, role)
    headers = {"Authorization": f"Bearer {tokens[caller]}"} if caller in tokens else {}
    values = {
        "{jwk}": generate_agent_key().public_jwk,
        "{policy}": POLICIES,
        "{upstream}": _UPSTREAM,
    }
    return World(
        caller=caller,
        names=names,
        values=values | {f"{{{k}}}": v for k, v in names.items()},
        headers=headers,
    )


@pytest.fixture(params=CALLERS)
async def world(
    request: pytest.FixtureRequest,
    client: httpx.AsyncClient,
    services: Services,
    agent_token: str,
) -> World:
    caller: str = request.param
    return await _world(caller, client, services, agent_token)


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``/openapi.json`` as the app serves it."""
    data = tmp_path_factory.mktemp("spec") / "data"
    settings = Settings(data_dir=data, issuer=ISSUER, trust_domain=TRUST_DOMAIN, root_token=ROOT)
    return create_app(settings).openapi()


@pytest.fixture(scope="module")
def generated(spec: dict[str, Any]) -> list[AnyCase]:
    """Generated once per module: the same requests for every caller."""
    schema = schemathesis.openapi.from_dict(spec)
    return generate_cases(schema, examples=fuzz_examples(), thorough=thorough())


@pytest.fixture
async def raw(
    settings: Settings, services: Services, client: httpx.AsyncClient
) -> AsyncIterator[httpx.AsyncClient]:
    """The same app, without the leak watch of ``client`` (it reads request bodies as JSON,
    which the bodies sent here are not)."""
    app = create_app(settings, services=services)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER) as c:
        yield c


def _disarmed(case: AnyCase) -> AnyCase:
    """Adding an MCP server starts its command or connects to its URL: generated ones would
    run programs on, or reach hosts from, the machine under test. Its command becomes the real
    test upstream and its URL is dropped (tests/integration/mcp covers the gateway's URLs)."""
    if case.operation.label != "POST /v1/mcp/servers" or not isinstance(case.body, dict):
        return case
    body: dict[str, Any] = dict(case.body)
    if isinstance(body.get("command"), list):
        body["command"] = list(_UPSTREAM)
    if isinstance(body.get("url"), str):
        body["url"] = None
    case.body = body
    return case


async def test_generated_requests_never_get_a_server_error_or_an_undeclared_answer(
    world: World, raw: httpx.AsyncClient, generated: list[AnyCase]
) -> None:
    client, cases = raw, generated
    found: list[str] = []
    for case in cases:
        try:
            answer = await send(client, _disarmed(case), headers=world.headers)
        except Exception as exc:  # in process, the app's own crash (a 500 over a socket)
            found.append(
                f"{case.operation.label}: the app raised {exc!r}\n{case.as_curl_command()}"
            )
            continue
        problem = failures(case, answer)
        if problem is not None:
            found.append(problem)
    assert len(cases) > 2 * len(ROUTES)
    assert found == [], f"{len(found)} of {len(cases)} answers broke the contract:\n" + "\n".join(
        found
    )


def test_every_operation_is_declared_open_guarded_or_self_authenticating(
    spec: dict[str, Any],
) -> None:
    operations = {f"{m.upper()} {path}" for path, ops in spec["paths"].items() for m in ops}
    assert operations - set(ROUTES) == set(), "operations nobody classified"
    assert set(ROUTES) - operations == set(), "classified operations that no longer exist"


def _fill(value: object, values: dict[str, object]) -> object:
    if isinstance(value, str):
        return values.get(value, value)
    if isinstance(value, dict):
        return {k: _fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, values) for v in value]
    return value


async def _probe(client: httpx.AsyncClient, key: str, guard: Guard, world: World) -> int:
    method, template = key.split(" ", 1)
    path = (guard.path or template).format(**world.names)
    body: dict[str, Any] = {}
    if guard.json is not None:
        body["content"] = json.dumps(_fill(guard.json, world.values)).encode()
        body["headers"] = {"Content-Type": "application/json"}
    request = client.build_request(method, path, **body)
    request.headers.pop("authorization", None)
    request.headers.update(world.headers)
    answer = await client.send(request)
    assert answer.status_code < 500, f"{key}: {answer.status_code} {answer.text[:200]}"
    return answer.status_code


async def test_each_caller_reaches_exactly_the_operations_its_role_permits(
    world: World, client: httpx.AsyncClient
) -> None:
    caller = world.caller
    wrong: list[str] = []
    for key, guard in ROUTES.items():
        if guard.protocol:
            continue
        status = await _probe(client, key, guard, world)
        refused = guard.refuses(status)
        if refused == guard.lets_through(caller):
            expected = "through" if guard.lets_through(caller) else "401/403"
            wrong.append(f"{caller} {key}: {status}, expected {expected}")
    assert wrong == [], "\n".join(wrong)


_BEYOND_64_BITS = str(2**70)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"/v1/policies/{_BEYOND_64_BITS}"),
        ("POST", f"/v1/policies/{_BEYOND_64_BITS}/activate"),
        ("GET", f"/v1/policies?before={_BEYOND_64_BITS}"),
        ("GET", f"/v1/policies/diff?from={_BEYOND_64_BITS}"),
        ("GET", f"/v1/audit?after={_BEYOND_64_BITS}"),
    ],
)
async def test_integer_beyond_the_store_range_is_invalid_input_not_a_server_error(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    # Found by the generated requests: the database driver overflowed (OverflowError, a 500).
    answer = await client.request(method, path)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "invalid_input"


async def test_evaluation_with_an_integer_beyond_i_json_is_a_recorded_deny_not_audit_unavailable(
    client: httpx.AsyncClient, agent_token: str
) -> None:
    # Found by make fuzz (an agent asking for itself): a 503 that blamed the audit log for
    # the caller's input. Now the refusal is recorded, without the values JSON cannot carry.
    body = {
        "action": {"name": "call_tool"},
        "resource": {"type": "Tool", "id": "search_faq"},
        "context": {"ticket": 2**53 + 1},
    }
    answer = await client.post(
        "/access/v1/evaluation?explain=true",
        json=body,
        headers={"Authorization": f"Bearer {agent_token}"},
    )
    assert answer.status_code == 200, answer.text
    verdict = answer.json()
    assert verdict["decision"] is False
    assert verdict["context"]["reasons"][0].startswith("not canonical JSON")
    found = await client.get("/v1/audit", params={"type_prefix": "decision", "limit": 1000})
    ids = [r["details"]["decision_id"] for r in found.json()["records"]]
    assert verdict["context"]["id"] in ids, "the refusal is in the audit log"

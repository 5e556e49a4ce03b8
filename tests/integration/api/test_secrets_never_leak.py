"""No issued secret is ever written where it should not be: not in an audit record, not in a
log line, not in an error body, not anywhere in the database file.

One flow issues every kind of secret Tether hands out or is handed — the root and operator
tokens, an agent's private key and its client assertions, JWT-SVIDs, and a password and an
API key passed as a tool's arguments — and walks the error paths that see them (a replayed
assertion, a token for another audience, a revoked token, a forged one). Then every response
body (but the one that hands a secret to its owner), every log event, every audit entry and
the raw bytes of the SQLite database and its WAL are searched for each secret, whole and for
the signature part of each token. The password must be there only as its HMAC.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
from structlog.testing import capture_logs

from tether._internal.canonical import call_digest
from tether.api.services import Services
from tether.config import Settings
from tether.crypto.assertion import sign_client_assertion
from tether.identity.client_auth import ASSERTION_TYPE

from .conftest import ISSUER, ROOT, AgentFactory, SecretWatch
from .decisions import POLICIES, evaluation
from .test_management_api import as_


def _parts(token: str) -> list[str]:
    """A token and, for a JWT, its signature (what must never be kept)."""
    pieces = token.split(".")
    return [token, pieces[-1]] if len(pieces) == 3 else [token]


async def _issue(client: httpx.AsyncClient, spiffe_id: str, key_pem: bytes) -> tuple[str, str]:
    assertion = sign_client_assertion(
        key_pem, client_id=spiffe_id, audience=f"{ISSUER}/oauth2/token", now=int(time.time())
    )
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
        "instance_id": "pod-7",
    }
    issued = await client.post("/oauth2/token", data=form)
    assert issued.status_code == 200, issued.text
    replayed = await client.post("/oauth2/token", data=form)  # the same assertion again
    assert replayed.status_code == 401
    token: str = issued.json()["access_token"]
    return assertion, token


async def test_no_issued_secret_appears_in_records_logs_error_bodies_or_the_database(
    settings: Settings, services: Services, client: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    # The same watch every API test has; this test searches more places with it.
    recorder = SecretWatch()
    client.event_hooks["response"].append(recorder)
    password, api_key = f"pw-{secrets.token_hex(8)}", f"sk-{secrets.token_hex(12)}"
    with capture_logs() as logs:
        operator = await client.post("/v1/tokens", json={"role": "auditor", "display_name": "a"})
        operator_token: str = operator.json()["token"]
        agent = await make_agent(tools=["search_faq", "transfer"])
        assert (await client.post("/v1/policies", json={"text": POLICIES})).status_code == 201
        assertion, token = await _issue(client, agent.spiffe_id, agent.key.private_pem)
        arguments = {"q": "hours", "password": password, "headers": {"X-Api-Key": api_key}}
        asked = await client.post(
            "/access/v1/evaluation",
            json=evaluation(action={"name": "call_tool", "properties": {"arguments": arguments}}),
            headers=as_(token) | {"X-Request-Id": "leak-1"},
        )
        assert asked.status_code == 200, asked.text
        forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        for bad in (forged, token + "x", operator_token):
            refused = await client.post(
                "/access/v1/evaluation", json=evaluation(), headers=as_(bad)
            )
            assert refused.json().get("decision") is not True
        revoke = await client.post(
            "/v1/svid/revocations", json={"agent": agent.name, "reason": "leak test"}
        )
        assert revoke.status_code == 201, revoke.text
        after = await client.post("/access/v1/evaluation", json=evaluation(), headers=as_(token))
        assert after.json()["decision"] is False
        assert (await client.get("/v1/agents", headers=as_(operator_token))).status_code == 200
        await services.audit.sign()
        exported = (await client.get("/v1/audit/export")).content
        hashed = (await client.post("/v1/audit/hash", json={"value": password})).json()["hash"]

    secrets_issued: dict[str, list[str]] = {
        "root token": [ROOT],
        "operator token": [operator_token],
        "agent private key": [agent.key.private_pem.decode().split("-----")[2].strip()[:64]],
        "client assertion": _parts(assertion),
        "JWT-SVID": _parts(token),
        "tool password": [password],
        "tool API key": [api_key],
    }
    database = b"".join(
        path.read_bytes()
        for path in (settings.data_dir / "tether.db", settings.data_dir / "tether.db-wal")
        if path.exists()
    )
    places: dict[str, bytes] = {
        "audit entries": exported,
        "log events": json.dumps(logs, default=str).encode(),
        "response bodies": b"\n".join(recorder.bodies),
        "database file": database,
    }
    found = [
        (what, where)
        for what, values in secrets_issued.items()
        for value in values
        for where, text in places.items()
        if value.encode() in text
    ]
    assert found == [], found
    # Nor the plain digest of the call, from which the redacted values could be guessed.
    plain = call_digest("call_tool", 'Tool::"search_faq"', arguments).removeprefix("sha256:")
    assert plain.encode() not in exported
    assert plain.encode() not in database
    # The password was recorded, as its HMAC: an auditor holding it can find the record.
    assert hashed.encode() in exported
    decision: dict[str, Any] = next(
        json.loads(line)["record"]
        for line in exported.splitlines()
        if b'"correlation_id":"leak-1"' in line
    )
    # Policies read the arguments as canonical JSON text; the record keeps that text, redacted.
    carried = json.loads(decision["details"]["request"]["context"]["arguments"])
    assert carried["password"] == hashed
    assert carried["q"] == "hours"
    assert carried["headers"]["X-Api-Key"].startswith("hmac-sha256:")


def test_the_data_directory_holds_the_key_encryption_key_apart_from_the_database(
    settings: Settings, services: Services
) -> None:
    """The audit HMAC key and the checkpoint key come from the KEK file, never the database."""
    kek = Path(settings.data_dir / "kek")
    assert kek.exists()
    assert kek.stat().st_mode & 0o077 == 0
    assert kek.read_bytes().strip() not in (settings.data_dir / "tether.db").read_bytes()


async def test_the_leak_watch_of_every_api_test_finds_a_token_echoed_in_a_body(
    services: Services,
) -> None:
    watch = SecretWatch()
    token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    watch.secrets |= {token, token.rsplit(".", maxsplit=1)[-1]}
    watch.bodies.append(b'{"error": {"message": "bad token c2lnbmF0dXJl"}}')
    assert await watch.leaks(services) == ["c2lnbmF0dXJl… in a response body"]

"""Token exchange (RFC 8693) over HTTP, end to end on the SQLite store: a user's grant, an
agent's delegated token, the checkpoint deciding on it, and everything that must end it."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from tests.support.tokens import client_credentials
from tether.api.services import Services
from tether.config import Settings
from tether.crypto.jwt import UnverifiedToken
from tether.delegation.grants import ACCOUNT_SCOPE
from tether.delegation.token_exchange import ACCESS_TOKEN_TYPE, GRANT_TYPE, JWT_TOKEN_TYPE

from .conftest import ISSUER, ROOT, TRUST_DOMAIN, AgentFactory, RegisteredAgent
from .decisions import svid

POLICIES = """
@id("shop-bot-reads-orders-for-its-user")
permit (principal == Tether::Agent::"shop-bot", action == Tether::Action::"read",
        resource == Tether::Api::"orders")
when { context has user && context.scopes.contains("orders:read") };
"""
ORDERS = {"type": "Api", "id": "orders", "properties": {"name": "orders", "data_class": "internal"}}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
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
    client: httpx.AsyncClient
    services: Services
    shop: RegisteredAgent
    user_token: str
    grant: dict[str, Any]


async def _user_token(services: Services, name: str, scopes: set[str], sid: str = "sid_1") -> str:
    user = await services.store.get_user(name)
    assert user is not None
    issued = await services.delegation.tokens.issue_user_token(
        user=user, client_id="console", scopes=scopes, session=sid
    )
    return issued.token


@pytest.fixture
async def world(client: httpx.AsyncClient, services: Services, make_agent: AgentFactory) -> World:
    shop = await make_agent("shop-bot", may_call_agents=True)
    added = await client.post("/v1/users", json={"name": "alice", "password": "a" * 16})
    assert added.status_code == 201, added.text
    applied = await client.post("/v1/policies", json={"text": POLICIES})
    assert applied.status_code == 201, applied.text
    # Alice's own sign-in (tether login): her account scope lets her consent.
    token = await _user_token(
        services, "alice", {"orders:read", "orders:write", "profile", ACCOUNT_SCOPE}
    )
    consent = {
        "agent": "shop-bot",
        "scopes": ["orders:read", "orders:write"],
        "purpose": "track my orders",
        "purpose_code": "order-tracking",
        "session": "sid_1",
    }
    created = await client.post(
        "/v1/grants", json=consent, headers={"Authorization": f"Bearer {token}"}
    )
    assert created.status_code == 201, created.text
    return World(client, services, shop, token, created.json())


async def _records(services: Services, kind: str) -> list[dict[str, Any]]:
    page = await services.store.list_audit(type_prefix=kind, limit=1000)
    return [dict(record.details) for _, record in page if record.type == kind]


async def _exchange(
    client: httpx.AsyncClient, subject: str, actor: str | None, **extra: str
) -> httpx.Response:
    form = {
        "grant_type": GRANT_TYPE,
        "subject_token": subject,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        **extra,
    }
    if actor is not None:
        form |= {"actor_token": actor, "actor_token_type": JWT_TOKEN_TYPE}
    return await client.post("/oauth2/token", data=form, headers={"Authorization": ""})


async def _delegated(world: World, **extra: str) -> str:
    actor = await svid(world.client, world.shop)
    answer = await _exchange(world.client, world.user_token, actor, **extra)
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["access_token"]
    return token


async def _evaluate(client: httpx.AsyncClient, token: str, action: str = "read") -> dict[str, Any]:
    answer = await client.post(
        "/access/v1/evaluation",
        json={"action": {"name": action}, "resource": ORDERS},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_delegated_token_names_the_user_the_instance_the_grant_and_narrows(
    world: World,
) -> None:
    actor = await svid(world.client, world.shop)
    answer = await _exchange(world.client, world.user_token, actor, scope="orders:read")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "orders:read"
    assert answer.headers["cache-control"] == "no-store"
    claims = UnverifiedToken.parse(body["access_token"]).claims
    instance = UnverifiedToken.parse(actor).claims["sub"]
    assert claims["sub"] == "alice"
    assert claims["act"] == {"sub": instance}
    assert claims["grant_id"] == world.grant["id"]
    assert claims["purpose"] == "order-tracking"
    assert claims["sid"] == "sid_1"
    assert claims["aud"] == ISSUER
    user_exp = UnverifiedToken.parse(world.user_token).claims["exp"]
    assert claims["exp"] <= min(user_exp, claims["iat"] + 600)


async def test_checkpoint_allows_what_the_grant_allows_and_records_who_for_whom(
    world: World,
) -> None:
    token = await _delegated(world)
    verdict = await _evaluate(world.client, token)
    assert verdict["decision"] is True, verdict
    last = (await _records(world.services, "decision"))[-1]
    assert last["user"] == "alice"
    assert last["grant_id"] == world.grant["id"]
    assert last["act"] == [UnverifiedToken.parse(token).claims["act"]["sub"]]
    assert last["purpose"] == "order-tracking"
    assert last["app"] == "console", "the app alice signed in through (her token's client)"


async def test_scope_not_in_the_grant_is_refused_as_invalid_scope(world: World) -> None:
    actor = await svid(world.client, world.shop)
    answer = await _exchange(world.client, world.user_token, actor, scope="profile")
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_scope"


async def test_exchange_without_an_actor_is_refused_agents_never_act_as_the_user(
    world: World,
) -> None:
    answer = await _exchange(world.client, world.user_token, None)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_request"
    assert "actor" in answer.json()["error_description"]


async def test_actor_token_minted_for_another_audience_is_refused(world: World) -> None:
    form = client_credentials(
        world.shop.key.private_pem,
        client_id=world.shop.spiffe_id,
        audience=f"{ISSUER}/oauth2/token",
        now=int(time.time()),
    )
    form["resource"] = "https://api.acme.org"
    issued = await world.client.post("/oauth2/token", data=form)
    assert issued.status_code == 200, issued.text
    answer = await _exchange(world.client, world.user_token, issued.json()["access_token"])
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_request"
    assert "invalid actor_token" in answer.json()["error_description"]


async def test_audience_off_the_allow_list_is_invalid_target(world: World) -> None:
    actor = await svid(world.client, world.shop)
    answer = await _exchange(world.client, world.user_token, actor, audience="https://evil.example")
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_target"


async def test_revoking_the_grant_refuses_its_tokens_at_once_and_further_exchanges(
    world: World,
) -> None:
    token = await _delegated(world)
    assert (await _evaluate(world.client, token))["decision"] is True
    gone = await world.client.delete(
        f"/v1/grants/{world.grant['id']}",
        headers={"Authorization": f"Bearer {world.user_token}"},
    )
    assert gone.status_code == 200, gone.text
    assert gone.json()["state"] == "revoked"
    refused = await _evaluate(world.client, token)
    assert refused["decision"] is False
    actor = await svid(world.client, world.shop)
    again = await _exchange(world.client, world.user_token, actor)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


async def test_subject_token_replayed_after_user_is_disabled_is_refused(world: World) -> None:
    token = await _delegated(world)
    disabled = await world.client.post("/v1/users/alice/disable")
    assert disabled.status_code == 200, disabled.text
    assert (await _evaluate(world.client, token))["decision"] is False
    actor = await svid(world.client, world.shop)
    replay = await _exchange(world.client, world.user_token, actor)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_request"
    grant = await world.client.get(f"/v1/grants/{world.grant['id']}")
    assert grant.json()["state"] == "revoked"


async def test_user_token_presented_by_an_agent_is_impersonation(world: World) -> None:
    events = world.services.events.subscribe()
    try:
        verdict = await _evaluate(world.client, world.user_token)
        assert verdict["decision"] is False
        seen = [e.type for e in events.drain()]
    finally:
        events.close()
    assert "impersonation" in seen
    records = await _records(world.services, "decision")
    assert any("impersonation" in " ".join(r["reasons"]) for r in records)


async def test_delegated_token_at_a_resource_it_was_not_minted_for_is_refused(
    world: World,
) -> None:
    token = await _delegated(world, audience="https://api.acme.org")
    refused = await world.client.post(
        "/access/v1/evaluation?explain=true",
        json={"action": {"name": "read"}, "resource": ORDERS},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert refused.json()["decision"] is False
    assert refused.json()["context"]["reasons"] == [
        "unauthenticated: the delegated token was minted for another audience"
    ]


async def test_introspection_shows_the_delegation_and_revocation_ends_it(world: World) -> None:
    token = await _delegated(world)
    seen = await world.client.post("/oauth2/introspect", data={"token": token})
    assert seen.status_code == 200, seen.text
    body = seen.json()
    assert body["active"] is True
    assert body["sub"] == "alice"
    assert body["grant_id"] == world.grant["id"]
    assert body["purpose"] == "order-tracking"
    assert "sub" in body["act"]
    revoked = await world.client.post(
        "/oauth2/revoke", data={"token": token}, headers={"Authorization": ""}
    )
    assert revoked.status_code == 200
    after = await world.client.post("/oauth2/introspect", data={"token": token})
    assert after.json() == {"active": False}
    assert (await _evaluate(world.client, token))["decision"] is False


async def test_revocation_endpoint_answers_200_for_garbage(world: World) -> None:
    answer = await world.client.post(
        "/oauth2/revoke", data={"token": "not-a-token"}, headers={"Authorization": ""}
    )
    assert answer.status_code == 200


async def test_introspection_needs_an_authenticated_resource_server(world: World) -> None:
    answer = await world.client.post(
        "/oauth2/introspect", data={"token": world.user_token}, headers={"Authorization": ""}
    )
    assert answer.status_code == 401


async def test_agent_to_agent_chain_nests_act_and_cannot_widen_at_hop_two(
    world: World, make_agent: AgentFactory
) -> None:
    helper = await make_agent("ship-bot")
    helper_id = f"spiffe://{TRUST_DOMAIN}/agent/ship-bot"
    hop1 = await _delegated(world, audience=helper_id, scope="orders:read")
    helper_consent = {
        "agent": "ship-bot",
        "scopes": ["orders:read", "orders:write"],
        "purpose": "ship my orders",
        "purpose_code": "order-tracking",
    }
    consented = await world.client.post(
        "/v1/grants", json=helper_consent, headers={"Authorization": f"Bearer {world.user_token}"}
    )
    assert consented.status_code == 201, consented.text
    actor = await svid(world.client, helper)
    wider = await _exchange(world.client, hop1, actor, scope="orders:read orders:write")
    assert wider.status_code == 400
    assert wider.json()["error"] == "invalid_scope"
    hop2 = await _exchange(world.client, hop1, actor)
    assert hop2.status_code == 200, hop2.text
    claims = UnverifiedToken.parse(hop2.json()["access_token"]).claims
    first = UnverifiedToken.parse(hop1).claims
    assert claims["sub"] == "alice"
    assert claims["act"]["act"] == first["act"]
    assert claims["scope"] == "orders:read"
    assert claims["prior_grants"] == [world.grant["id"]]
    assert claims["exp"] <= first["exp"]
    assert claims["app"] == first["app"] == "console", "the app alice signed in through, kept"


async def test_a_user_sees_only_their_own_grants(world: World, services: Services) -> None:
    added = await world.client.post("/v1/users", json={"name": "bob", "password": "b" * 16})
    assert added.status_code == 201
    bob = await _user_token(services, "bob", {"orders:read", ACCOUNT_SCOPE})
    as_bob = {"Authorization": f"Bearer {bob}"}
    listed = await world.client.get("/v1/grants", headers=as_bob)
    assert listed.json()["grants"] == []
    other = await world.client.get(f"/v1/grants/{world.grant['id']}", headers=as_bob)
    assert other.status_code == 404
    revoke = await world.client.delete(f"/v1/grants/{world.grant['id']}", headers=as_bob)
    assert revoke.status_code == 404


async def test_users_never_show_a_password_or_its_hash(world: World) -> None:
    shown = await world.client.get("/v1/users/alice")
    assert shown.status_code == 200
    body = shown.json()
    assert body["password_set"] is True
    assert "a" * 16 not in shown.text
    assert "argon2" not in shown.text


LEASES = """
@id("shop-bot-takes-order-tokens-for-its-user")
permit (principal == Tether::Agent::"shop-bot", action == Tether::Action::"use_credential",
        resource == Tether::Api::"orders-api")
when { context has user };
"""
ORDER_TOKENS = {
    "kind": "token",
    "roles": [{"name": "orders", "resource": "orders-api", "default_ttl": 60, "max_ttl": 300,
               "options": {"audience": "https://orders.internal"}}],
}  # fmt: skip


async def test_a_lease_taken_under_a_grant_names_it_and_ends_with_it(world: World) -> None:
    configured = await world.client.put("/v1/engines/order-tokens", json=ORDER_TOKENS)
    assert configured.status_code == 200, configured.text
    policies = POLICIES + LEASES
    assert (await world.client.post("/v1/policies", json={"text": policies})).status_code == 201
    token = await _delegated(world)
    issued = await world.client.post(
        "/v1/leases",
        json={"engine": "order-tokens", "role": "orders"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert issued.status_code == 201, issued.text
    lease = issued.json()["lease"]
    assert lease["grant_id"] == world.grant["id"]
    assert lease["user"] == "alice"
    listed = await world.client.get("/v1/leases", params={"user": "alice"})
    assert [item["id"] for item in listed.json()["leases"]] == [lease["id"]]
    gone = await world.client.delete(
        f"/v1/grants/{world.grant['id']}", headers={"Authorization": f"Bearer {world.user_token}"}
    )
    assert gone.status_code == 200
    ended = await world.client.get(f"/v1/leases/{lease['id']}")
    assert ended.json()["state"] in ("revoked", "revoking")


async def test_an_agent_holding_a_persons_app_token_cannot_consent_for_itself(
    world: World, services: Services
) -> None:
    """The token an application (and so an agent) holds is not the person's account: it
    cannot create a grant, nor change the password."""
    app_token = await _user_token(services, "alice", {"orders:read"})
    as_app = {"Authorization": f"Bearer {app_token}"}
    consent = {"agent": "shop-bot", "scopes": ["orders:write"], "purpose": "mine now",
               "purpose_code": "takeover"}  # fmt: skip
    made = await world.client.post("/v1/grants", json=consent, headers=as_app)
    assert made.status_code == 401
    assert "own sign-in" in made.json()["error"]["message"]
    changed = await world.client.put(
        "/v1/users/alice/password", json={"password": "mallory's passphrase"}, headers=as_app
    )
    assert changed.status_code == 401


async def test_no_grant_may_give_an_agent_the_account_or_identity_scopes(world: World) -> None:
    for scope in (ACCOUNT_SCOPE, "openid"):
        consent = {"agent": "shop-bot", "scopes": [scope], "purpose": "x", "purpose_code": "x"}
        made = await world.client.post(
            "/v1/grants", json=consent, headers={"Authorization": f"Bearer {world.user_token}"}
        )
        assert made.status_code == 400, made.text
        assert made.json()["error"]["code"] == "invalid_scope"


async def test_a_password_change_ends_the_persons_earlier_tokens(world: World) -> None:
    token = await _delegated(world)
    await asyncio.sleep(1.05)  # the change is in a later second than the tokens' iat
    changed = await world.client.put("/v1/users/alice/password", json={"password": "b" * 16})
    assert changed.status_code == 200, changed.text
    assert (await _evaluate(world.client, token))["decision"] is False
    mine = await world.client.get(
        "/v1/grants", headers={"Authorization": f"Bearer {world.user_token}"}
    )
    assert mine.status_code == 401


async def test_a_lease_under_a_grant_never_outlives_the_grant(world: World) -> None:
    configured = await world.client.put("/v1/engines/order-tokens", json=ORDER_TOKENS)
    assert configured.status_code == 200, configured.text
    policies = POLICIES + LEASES
    assert (await world.client.post("/v1/policies", json={"text": policies})).status_code == 201
    short = {"agent": "shop-bot", "scopes": ["orders:read"], "purpose": "a quick look",
             "purpose_code": "quick-look", "session": "sid_1", "ttl_seconds": 90}  # fmt: skip
    as_alice = {"Authorization": f"Bearer {world.user_token}"}
    grant = await world.client.post("/v1/grants", json=short, headers=as_alice)
    assert grant.status_code == 201, grant.text
    token = await _delegated(world, grant_id=grant.json()["id"])
    issued = await world.client.post(
        "/v1/leases",
        json={"engine": "order-tokens", "role": "orders", "ttl": 300},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert issued.status_code == 201, issued.text
    lease = issued.json()["lease"]
    ends = datetime.fromisoformat(grant.json()["expires_at"])
    assert datetime.fromisoformat(lease["expires_at"]) <= ends
    assert datetime.fromisoformat(lease["max_expires_at"]) <= ends


async def test_revoking_a_token_ends_every_token_exchanged_from_it(world: World) -> None:
    delegated = await _delegated(world)
    assert (await _evaluate(world.client, delegated))["decision"] is True
    revoked = await world.client.post(
        "/oauth2/revoke", data={"token": world.user_token}, headers={"Authorization": ""}
    )
    assert revoked.status_code == 200
    refused = await world.client.post(
        "/access/v1/evaluation?explain=true",
        json={"action": {"name": "read"}, "resource": ORDERS},
        headers={"Authorization": f"Bearer {delegated}"},
    )
    assert refused.json()["decision"] is False
    assert any("exchanged from is revoked" in r for r in refused.json()["context"]["reasons"])


async def test_a_suspended_agent_cannot_exchange_and_its_delegated_tokens_stop(
    world: World,
) -> None:
    actor = await svid(world.client, world.shop)  # obtained while the agent was active
    delegated = await _delegated(world)
    assert (await _evaluate(world.client, delegated))["decision"] is True
    suspended = await world.client.post("/v1/agents/shop-bot/suspend", json={"reason": "test"})
    assert suspended.status_code == 200, suspended.text
    again = await _exchange(world.client, world.user_token, actor)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_request"
    assert "invalid actor_token" in again.json()["error_description"]
    assert (await _evaluate(world.client, delegated))["decision"] is False


async def test_a_delegated_token_has_exactly_one_audience(world: World) -> None:
    actor = await svid(world.client, world.shop)
    form = {
        "grant_type": GRANT_TYPE, "subject_token": world.user_token,
        "subject_token_type": ACCESS_TOKEN_TYPE, "actor_token": actor,
        "actor_token_type": JWT_TOKEN_TYPE,
    }  # fmt: skip
    both = [*form.items(), ("audience", ISSUER), ("audience", "https://api.acme.org")]
    answer = await world.client.post(
        "/oauth2/token",
        content=urlencode(both),
        headers={"Authorization": "", "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_target"
    assert "exactly one audience" in answer.json()["error_description"]


SHIP_READS = """
@id("ship-bot-reads-orders-for-its-user")
permit (principal == Tether::Agent::"ship-bot", action == Tether::Action::"read",
        resource == Tether::Api::"orders")
when { context has user && context.scopes.contains("orders:read") };
"""


async def _second_hop(world: World, make_agent: AgentFactory) -> tuple[str, dict[str, Any]]:
    """shop-bot's token for ship-bot, exchanged by ship-bot under its own grant: the hop-2
    token and ship-bot's grant."""
    helper = await make_agent("ship-bot")
    hop1 = await _delegated(
        world, audience=f"spiffe://{TRUST_DOMAIN}/agent/ship-bot", scope="orders:read"
    )
    consent = {"agent": "ship-bot", "scopes": ["orders:read"], "purpose": "ship my orders",
               "purpose_code": "order-tracking"}  # fmt: skip
    as_alice = {"Authorization": f"Bearer {world.user_token}"}
    grant = await world.client.post("/v1/grants", json=consent, headers=as_alice)
    assert grant.status_code == 201, grant.text
    hop2 = await _exchange(world.client, hop1, await svid(world.client, helper))
    assert hop2.status_code == 200, hop2.text
    return hop2.json()["access_token"], grant.json()


async def test_a_two_hop_token_is_decided_for_the_outermost_actor(
    world: World, make_agent: AgentFactory
) -> None:
    """shop-bot may read orders, ship-bot may not: ship-bot holding a token that shop-bot
    passed on is denied; once ship-bot itself may, it is allowed, and the record names both
    actors, the outermost first."""
    hop2, _ = await _second_hop(world, make_agent)
    assert (await _evaluate(world.client, hop2))["decision"] is False
    applied = await world.client.post("/v1/policies", json={"text": POLICIES + SHIP_READS})
    assert applied.status_code == 201, applied.text
    assert (await _evaluate(world.client, hop2))["decision"] is True
    record = (await _records(world.services, "decision"))[-1]
    act = UnverifiedToken.parse(hop2).claims["act"]
    assert record["act"] == [act["sub"], act["act"]["sub"]]
    assert "/agent/ship-bot/" in act["sub"]
    assert "/agent/shop-bot/" in act["act"]["sub"]


async def test_revoking_an_earlier_hops_grant_ends_the_tokens_after_it(
    world: World, make_agent: AgentFactory
) -> None:
    hop2, ship_grant = await _second_hop(world, make_agent)
    applied = await world.client.post("/v1/policies", json={"text": POLICIES + SHIP_READS})
    assert applied.status_code == 201, applied.text
    assert (await _evaluate(world.client, hop2))["decision"] is True
    gone = await world.client.delete(
        f"/v1/grants/{world.grant['id']}", headers={"Authorization": f"Bearer {world.user_token}"}
    )
    assert gone.status_code == 200, gone.text
    shown = await world.client.get(f"/v1/grants/{ship_grant['id']}")
    assert shown.json()["state"] == "active", "ship-bot's own grant still stands"
    assert (await _evaluate(world.client, hop2))["decision"] is False

"""``/v1/posture`` over a real SQLite-backed app and a real PostgreSQL engine: problems are
planted the way they arise — a login created straight in the managed database, a refused
token, a person's own token presented as an agent's, a declared tool never used — and the
report names exactly them.

Two cannot be made through the API, by design: a grant always has an expiry no longer than
the grant maximum, and a lease is never issued past its role's max TTL. They are written to
the store as an older release (or a lowered maximum) would have left them. Every test is a
leak test too (the ``client`` fixture), and the report is checked for the secrets it must
never carry.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from psycopg import sql

from tests.conftest import PgCluster
from tether._internal.ids import new_id
from tether.api.services import Services
from tether.credentials.models import Lease, LeaseState
from tether.crypto.assertion import generate_agent_key
from tether.delegation.models import Grant
from tether.monitor.events import Subscription
from tether.monitor.sprawl import digest
from tether.store.interfaces import AlertMatch

from .conftest import AgentFactory, RegisteredAgent
from .decisions import svid
from .forge import forge
from .leases import ManagedDb, managed_db
from .test_management_api import as_, operator_token

pytestmark = pytest.mark.postgres

CRM_KEY = "crm-key-posture-5c4b3a29181706f5"
POLICIES = """
@id("crm-bot-searches")
permit (
  principal == Tether::Agent::"crm-bot",
  action == Tether::Action::"call_tool",
  resource == Tether::Tool::"crm/search"
);

@id("crm-bot-deletes")
permit (
  principal == Tether::Agent::"crm-bot",
  action == Tether::Action::"call_tool",
  resource == Tether::Tool::"crm/delete"
);
"""
GHOST = "spiffe://acme.org/agent/ghost-bot/i/pod-1"


def _tool(name: str) -> dict[str, Any]:
    props = {"name": name, "data_class": "internal", "state_changing": name != "crm/search"}
    return {"type": "Tool", "id": name, "properties": props}


def _call(name: str) -> dict[str, Any]:
    return {"action": {"name": "call_tool"}, "resource": _tool(name)}


@pytest.fixture
def db(pg_cluster: PgCluster) -> ManagedDb:
    return managed_db(pg_cluster)


@pytest.fixture
def legacy_login(db: ManagedDb) -> Iterator[str]:
    """A LOGIN role created straight in the managed database (not by Tether), dropped after
    the test: roles are cluster-wide, and other tests scan the same cluster."""
    name = f"legacy_{db.database}"
    with db.cluster.admin() as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'legacy-pw'").format(sql.Identifier(name))
        )
    yield name
    with db.cluster.admin() as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def _logins(db: ManagedDb) -> list[str]:
    with db.admin() as conn:
        rows = conn.execute("SELECT rolname FROM pg_roles WHERE rolcanlogin").fetchall()
    return sorted(str(r[0]) for r in rows if str(r[0]) != db.cluster.user)


async def _engines(client: httpx.AsyncClient, db: ManagedDb, known: list[str]) -> None:
    """pg-main on the managed database, every login that exists now known (so only what the
    test plants is unmanaged), and a vault holding one secret."""
    body = db.engine_body()
    body["settings"]["known_logins"] = known
    answer = await client.put("/v1/engines/pg-main", json=body)
    assert answer.status_code == 200, answer.text
    vault = {
        "kind": "vault",
        "roles": [{"name": "crm", "resource": "crm", "options": {"secret": "crm-api-key"}}],
        "secret": json.dumps({"crm-api-key": CRM_KEY}),
    }
    answer = await client.put("/v1/engines/vault-main", json=vault)
    assert answer.status_code == 200, answer.text


async def _monitored(services: Services, feed: Subscription) -> None:
    """What the server's monitor does with the events so far: alerts and observed use."""
    for event in feed.drain():
        await services.monitor.handle(event)
    await services.monitor.flush_usage()


@dataclass
class Planted:
    crm: RegisteredAgent
    lease_id: str
    grant_id: str
    login: str
    impersonated: str


async def _plant_in_store(services: Services, prefix: str) -> tuple[str, str]:
    """A lease past its role's max TTL (300 s) and a grant of two years."""
    now = services.clock.now()
    lease = Lease(
        id=new_id("lse"),
        engine="pg-main",
        role="readonly",
        credential=f"{prefix}planted",
        agent="crm-bot",
        instance="pod-1",
        grant_id=None,
        user=None,
        created_at=now,
        expires_at=now + timedelta(seconds=60),
        max_expires_at=now + timedelta(hours=2),
        renewals=0,
        state=LeaseState.ACTIVE,
        updated_at=now,
    )
    await services.store.create_lease(lease)
    grant = Grant(
        id=new_id("grt"),
        user="alice",
        agent="crm-bot",
        scopes=frozenset({"crm"}),
        purpose="planted",
        purpose_code="planted",
        session=None,
        created_at=now,
        expires_at=now + timedelta(days=730),
        created_by="test",
    )
    await services.store.create_grant(grant)
    return lease.id, grant.id


async def _plant(
    client: httpx.AsyncClient,
    services: Services,
    make_agent: AgentFactory,
    db: ManagedDb,
    login: str,
) -> Planted:
    await _engines(client, db, [n for n in _logins(db) if n != login])
    for user in ("alice", "bob"):
        added = await client.post("/v1/users", json={"name": user})
        assert added.status_code == 201, added.text
    assert (await client.post("/v1/users/bob/disable")).status_code == 200
    crm = await make_agent("crm-bot", tools=["crm/search", "crm/delete"])
    orphan = {"name": "orphan-bot", "owners": ["bob"], "declarations": {}}
    assert (await client.post("/v1/agents", json=orphan)).status_code == 201
    assert (await client.post("/v1/policies", json={"text": POLICIES})).status_code == 201
    feed = services.events.subscribe()
    try:
        token = await svid(client, crm)
        used = await client.post(
            "/access/v1/evaluation", json=_call("crm/search"), headers=as_(token)
        )
        assert used.json()["decision"] is True
        ghost = forge(
            generate_agent_key().private_pem,
            {"iss": GHOST, "sub": GHOST, "exp": int(time.time()) + 60},
        )
        await client.post("/access/v1/evaluation", json=_call("crm/search"), headers=as_(ghost))
        alice = await services.store.get_user("alice")
        assert alice is not None
        own = await services.delegation.tokens.issue_user_token(
            user=alice, client_id="console", scopes={"crm"}, session="sid_1"
        )
        await client.post("/access/v1/evaluation", json=_call("crm/search"), headers=as_(own.token))
        await _monitored(services, feed)
    finally:
        feed.close()
    [impersonation] = await services.store.list_alerts(AlertMatch(kind="impersonation"))
    lease_id, grant_id = await _plant_in_store(services, db.prefix)
    return Planted(
        crm=crm, lease_id=lease_id, grant_id=grant_id, login=login, impersonated=impersonation.key
    )


async def test_posture_names_exactly_the_planted_problems(
    client: httpx.AsyncClient,
    services: Services,
    make_agent: AgentFactory,
    db: ManagedDb,
    legacy_login: str,
) -> None:
    planted = await _plant(client, services, make_agent, db, legacy_login)
    answer = await client.get("/v1/posture")
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    report = answer.json()
    assert {(p["kind"], p["subject"]) for p in report["problems"]} == {
        ("agent_without_owner", "orphan-bot"),
        ("unregistered_caller", GHOST),
        ("user_credential_used", planted.impersonated),
        ("lease_beyond_max_ttl", planted.lease_id),
        ("grant_beyond_max_ttl", planted.grant_id),
        ("unmanaged_login", f"pg-main/{planted.login}"),
        ("unused_declaration", "crm-bot: tools crm/delete"),
        ("unused_permission", 'crm-bot: call_tool Tool::"crm/delete"'),
    }
    assert len(report["problems"]) == 8
    text = answer.text
    for secret in (db.cluster.password, CRM_KEY, "legacy-pw"):
        assert secret not in text


async def test_posture_sections_say_what_each_problem_is(
    client: httpx.AsyncClient,
    services: Services,
    make_agent: AgentFactory,
    db: ManagedDb,
    legacy_login: str,
) -> None:
    planted = await _plant(client, services, make_agent, db, legacy_login)
    report = (await client.get("/v1/posture", params={"days": 7})).json()
    assert report["days"] == 7
    assert report["agents"]["total"] == 2
    assert report["agents"]["by_state"]["active"] == 2
    [orphan] = report["ownerless_agents"]
    assert (orphan["agent"], orphan["owners"], orphan["reason"]) == (
        "orphan-bot",
        ["bob"],
        "owners_disabled",
    )
    standing = report["standing_privileges"]
    [lease] = standing["leases"]
    assert (lease["lease_id"], lease["reason"], lease["role_max_ttl"]) == (
        planted.lease_id,
        "longer_than_role_max_ttl",
        300,
    )
    [grant] = standing["grants"]
    assert grant["lifetime_seconds"] == 730 * 24 * 3600
    [login] = standing["logins"]
    assert (login["engine"], login["login"], login["source"]) == ("pg-main", planted.login, "scan")
    sources = {s["engine"]: s for s in report["secret_sources"]}
    assert sources["pg-main"]["location"]["database"] == db.database
    assert sources["pg-main"]["location"]["admin_user"] == db.cluster.user
    assert (sources["vault-main"]["kind"], sources["vault-main"]["secrets"]) == ("vault", 1)
    advice = {a["agent"]: a for a in report["unused_permissions"]}
    assert sorted(advice) == ["crm-bot", "orphan-bot"]  # every active agent
    assert advice["orphan-bot"]["used"] == advice["orphan-bot"]["unused_permissions"] == []
    crm = advice["crm-bot"]
    assert [(u["action"], u["resource"], u["count"]) for u in crm["used"]] == [
        ("call_tool", 'Tool::"crm/search"', 1)
    ]


async def test_suggested_policy_applies_and_allows_exactly_what_was_used(
    client: httpx.AsyncClient,
    services: Services,
    make_agent: AgentFactory,
    db: ManagedDb,
    legacy_login: str,
) -> None:
    planted = await _plant(client, services, make_agent, db, legacy_login)
    report = (await client.get("/v1/posture")).json()
    [crm] = [a for a in report["unused_permissions"] if a["agent"] == "crm-bot"]
    applied = await client.post("/v1/policies", json={"text": crm["suggested_policy"]})
    assert applied.status_code == 201, applied.text
    token = await svid(client, planted.crm)
    for tool, allowed in (("crm/search", True), ("crm/delete", False)):
        answer = await client.post("/access/v1/evaluation", json=_call(tool), headers=as_(token))
        assert answer.json()["decision"] is allowed, tool
    after = (await client.get("/v1/posture")).json()
    [crm] = [a for a in after["unused_permissions"] if a["agent"] == "crm-bot"]
    assert crm["unused_permissions"] == []


async def test_a_use_counted_but_not_yet_written_is_not_reported_unused(
    client: httpx.AsyncClient,
    services: Services,
    make_agent: AgentFactory,
    db: ManagedDb,
    legacy_login: str,
) -> None:
    """The monitor writes the use it counts every few seconds; a report asked for in between
    still sees a call made just before it."""
    planted = await _plant(client, services, make_agent, db, legacy_login)
    feed = services.events.subscribe()
    try:
        token = await svid(client, planted.crm)
        used = await client.post(
            "/access/v1/evaluation", json=_call("crm/delete"), headers=as_(token)
        )
        assert used.json()["decision"] is True
        for event in feed.drain():  # counted, as the running monitor would, and not written
            await services.monitor.handle(event)
    finally:
        feed.close()
    report = (await client.get("/v1/posture")).json()
    kinds = {(p["kind"], p["subject"]) for p in report["problems"]}
    assert ("unused_declaration", "crm-bot: tools crm/delete") not in kinds
    assert ("unused_permission", 'crm-bot: call_tool Tool::"crm/delete"') not in kinds
    [crm] = [a for a in report["unused_permissions"] if a["agent"] == "crm-bot"]
    assert {(u["resource"], u["count"]) for u in crm["used"]} == {
        ('Tool::"crm/search"', 1),
        ('Tool::"crm/delete"', 1),
    }


@pytest.mark.parametrize(
    ("role", "status"),
    [("auditor", 200), ("security-admin", 200), ("platform-admin", 403), ("developer", 403)],
)
async def test_posture_is_read_by_security_admins_and_auditors_only(
    client: httpx.AsyncClient, role: str, status: int
) -> None:
    token = await operator_token(client, role, f"someone-{role}")
    answer = await client.get("/v1/posture", headers=as_(token))
    assert answer.status_code == status, answer.text


async def test_posture_days_is_bounded(client: httpx.AsyncClient) -> None:
    for days in (0, 366):
        answer = await client.get("/v1/posture", params={"days": days})
        assert answer.status_code == 400, answer.text


async def test_secret_digest_match_names_the_engine_never_the_secret(
    client: httpx.AsyncClient, db: ManagedDb
) -> None:
    await _engines(client, db, _logins(db))
    found = [digest(db.cluster.password), digest(CRM_KEY), digest("not-managed-anywhere")]
    answer = await client.post("/v1/posture/secrets", json={"digests": found})
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["checked"] == 3
    assert sorted((m["engine"], m["kind"], m["name"], m["digest"]) for m in body["matches"]) == [
        ("pg-main", "postgres", db.cluster.user, digest(db.cluster.password)),
        ("vault-main", "vault", "crm-api-key", digest(CRM_KEY)),
    ]
    for secret in (db.cluster.password, CRM_KEY):
        assert secret not in answer.text


@pytest.mark.parametrize("role", ["auditor", "platform-admin"])
async def test_secret_digest_match_is_for_security_admins_only(
    client: httpx.AsyncClient, role: str
) -> None:
    token = await operator_token(client, role, f"someone-{role}")
    body = {"digests": [digest("guess")]}
    answer = await client.post("/v1/posture/secrets", json=body, headers=as_(token))
    assert answer.status_code == 403, answer.text
    allowed = await operator_token(client, "security-admin", "sec")
    answer = await client.post("/v1/posture/secrets", json=body, headers=as_(allowed))
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("bad", ["secret-in-clear", "A" * 64, digest("x")[:63]])
async def test_secret_digest_match_takes_only_lowercase_sha256_hex(
    client: httpx.AsyncClient, bad: str
) -> None:
    answer = await client.post("/v1/posture/secrets", json={"digests": [bad]})
    assert answer.status_code == 400, answer.text
    assert bad not in answer.text


async def test_engine_that_cannot_be_scanned_keeps_its_last_known_unmanaged_logins(
    client: httpx.AsyncClient, services: Services, db: ManagedDb, legacy_login: str
) -> None:
    await _engines(client, db, [n for n in _logins(db) if n != legacy_login])
    feed = services.events.subscribe()
    try:
        await services.scan_credentials()  # the server's own scan raises the alert
        await _monitored(services, feed)
    finally:
        feed.close()
    db.cluster.drop_database(db.database)  # now the engine cannot be scanned
    report = (await client.get("/v1/posture")).json()
    assert {(p["kind"], p["subject"]) for p in report["problems"]} == {
        ("engine_scan_failed", "pg-main"),
        ("unmanaged_login", f"pg-main/{legacy_login}"),
    }
    [login] = report["standing_privileges"]["logins"]
    assert login["source"] == "alert"
    [failed] = report["standing_privileges"]["scan_failures"]
    assert failed["error"] == "engine_unavailable"

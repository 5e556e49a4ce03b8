"""Just-in-time database credentials over the API, against a real PostgreSQL.

Every test here is also a leak test (the ``client`` fixture): no issued password and no engine
admin password may show in another response or in an audit record.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from dataclasses import replace
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import PgCluster
from tests.support.tokens import client_credentials
from tether._internal.ids import new_id
from tether.api.services import Services
from tether.credentials.models import LeaseState
from tether.errors import AuditUnavailable
from tether.identity.access import Actor
from tether.identity.models import AgentState
from tether.store import _sqlite_audit
from tether.store._sqlite_audit import CarriedWrite
from tether.store.sql import SqlStore, _audit_writer

from .conftest import ISSUER, AgentFactory, RegisteredAgent
from .decisions import svid
from .leases import ManagedDb, configure, issue, managed_db
from .test_management_api import as_, operator_token


@pytest.fixture
def db(pg_cluster: PgCluster) -> ManagedDb:
    return managed_db(pg_cluster)


@pytest.fixture
async def faq_bot(client: httpx.AsyncClient, make_agent: AgentFactory) -> RegisteredAgent:
    return await make_agent("faq-bot", resources=["pg-main"])


@pytest.fixture
async def token(client: httpx.AsyncClient, faq_bot: RegisteredAgent, db: ManagedDb) -> str:
    """faq-bot's JWT-SVID (instance pod-1), with pg-main configured and a policy letting it
    use it."""
    await configure(client, db)
    return await svid(client, faq_bot)


async def _issued(client: httpx.AsyncClient, token: str, **body: Any) -> dict[str, Any]:
    answer = await issue(client, token, **body)
    assert answer.status_code == 201, answer.text
    assert answer.headers["cache-control"] == "no-store"
    issued: dict[str, Any] = answer.json()
    return issued


async def _records(services: Services, kind: str) -> list[dict[str, Any]]:
    page = await services.store.list_audit(type_prefix=kind, limit=1000)
    return [dict(record.details) for _, record in page if record.type == kind]


async def test_lease_login_works_during_the_lease_and_reads_through_the_group(
    client: httpx.AsyncClient, token: str, db: ManagedDb, services: Services
) -> None:
    issued = await _issued(client, token, ttl=120)
    credential, lease = issued["credential"], issued["lease"]
    assert lease["state"] == "active"
    assert lease["agent"] == "faq-bot"
    assert credential["username"] == lease["credential"]
    with db.connect(credential["username"], credential["secret"]) as conn:
        rows = conn.execute("SELECT a FROM faq").fetchall()
        assert rows == [("9 to 5",)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO faq VALUES ('x', 'y')")
    recorded = await _records(services, "lease.issued")
    assert [r["lease_id"] for r in recorded] == [lease["id"]]
    assert recorded[0]["decision_id"] == issued["decision_id"]


async def test_lease_refused_by_policy_creates_no_role(
    client: httpx.AsyncClient, make_agent: AgentFactory, db: ManagedDb, token: str
) -> None:
    other = await make_agent("other-bot")
    refused = await issue(client, await svid(client, other))
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["details"]["decision_id"].startswith("dec_")
    assert db.roles() == set()
    listed = await client.get("/v1/leases")
    assert listed.json()["leases"] == []


async def test_lease_is_not_issued_to_an_operator_token(
    client: httpx.AsyncClient, token: str
) -> None:
    refused = await client.post("/v1/leases", json={"engine": "pg-main", "role": "readonly"})
    assert refused.status_code == 403
    assert "JWT-SVID" in refused.json()["error"]["message"]


async def test_lease_ttl_beyond_the_role_max_is_refused(
    client: httpx.AsyncClient, token: str, db: ManagedDb
) -> None:
    refused = await issue(client, token, ttl=301)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "invalid_input"
    assert db.roles() == set()


async def test_lease_renew_moves_valid_until_and_stops_at_max_ttl(
    client: httpx.AsyncClient, token: str, db: ManagedDb
) -> None:
    lease = (await _issued(client, token, ttl=60))["lease"]
    agent = {"Authorization": f"Bearer {token}"}
    renewed = await client.post(f"/v1/leases/{lease['id']}/renew", json={"ttl": 200}, headers=agent)
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["renewals"] == 1
    with db.admin() as conn:
        until = conn.execute(
            "SELECT rolvaliduntil FROM pg_roles WHERE rolname = %s", (lease["credential"],)
        ).fetchone()
    assert until is not None
    assert until[0].isoformat() == renewed.json()["expires_at"]
    capped = await client.post(f"/v1/leases/{lease['id']}/renew", json={"ttl": 300}, headers=agent)
    assert capped.json()["expires_at"] == capped.json()["max_expires_at"]
    again = await client.post(f"/v1/leases/{lease['id']}/renew", json={"ttl": 300}, headers=agent)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "lease_max_ttl_reached"


async def test_lease_revoke_ends_login_and_open_sessions_within_a_second(
    client: httpx.AsyncClient, token: str, db: ManagedDb
) -> None:
    issued = await _issued(client, token)
    user, password = issued["credential"]["username"], issued["credential"]["secret"]
    plain = db.connect(user, password, autocommit=True)
    elevated = db.connect(user, password, autocommit=True)
    elevated.execute(psycopg.sql.SQL("SET ROLE {}").format(psycopg.sql.Identifier(db.group)))
    revoked = await client.post(
        f"/v1/leases/{issued['lease']['id']}/revoke",
        json={"reason": "task done"},
        headers={"Authorization": f"Bearer {token}"},
    )
    done = time.monotonic()
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["state"] == "revoked"
    for session in (plain, elevated):
        with pytest.raises(psycopg.OperationalError):
            _query_until_closed(session, deadline=done + 1.0)
    with pytest.raises(psycopg.OperationalError):
        db.connect(user, password)
    assert db.roles() == set()


def _query_until_closed(conn: psycopg.Connection[Any], *, deadline: float) -> None:
    """Query until the server ends the session; if it is still open at ``deadline``, fail."""
    try:
        while time.monotonic() < deadline:
            conn.execute("SELECT 1")
            time.sleep(0.02)
    finally:
        conn.close()
    pytest.fail("the session was still open a second after the revocation")


async def test_revoke_by_agent_ends_every_lease_in_one_call(
    client: httpx.AsyncClient, token: str, db: ManagedDb, services: Services
) -> None:
    ids = {(await _issued(client, token))["lease"]["id"] for _ in range(3)}
    assert len(db.roles()) == 3
    answer = await client.post("/v1/leases/revoke", json={"agent": "faq-bot", "reason": "r"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["revoked"] == 3
    assert {lease["id"] for lease in answer.json()["leases"]} == ids
    assert db.roles() == set()
    assert {r["lease_id"] for r in await _records(services, "lease.revoked")} == ids


async def test_revoke_by_instance_spares_the_other_instances(
    client: httpx.AsyncClient, token: str, db: ManagedDb
) -> None:
    lease = (await _issued(client, token))["lease"]
    answer = await client.post("/v1/leases/revoke", json={"instance": "not-this-one"})
    assert answer.json()["revoked"] == 0
    answer = await client.post("/v1/leases/revoke", json={"instance": lease["instance"]})
    assert answer.json()["revoked"] == 1
    assert db.roles() == set()


async def test_bulk_revoke_needs_an_owner_of_the_leases(client: httpx.AsyncClient) -> None:
    answer = await client.post("/v1/leases/revoke", json={"reason": "everything"})
    assert answer.status_code == 400


async def test_quarantine_revokes_every_lease_the_agent_holds(
    client: httpx.AsyncClient, token: str, db: ManagedDb
) -> None:
    await _issued(client, token)
    await _issued(client, token)
    quarantined = await client.post("/v1/agents/faq-bot/quarantine", json={"reason": "leak"})
    assert quarantined.status_code == 200, quarantined.text
    assert db.roles() == set()
    listed = (await client.get("/v1/leases", params={"agent": "faq-bot"})).json()["leases"]
    assert {lease["state"] for lease in listed} == {"revoked"}
    assert all("leak" in lease["reason"] for lease in listed)


async def test_agent_cannot_revoke_another_agents_lease(
    client: httpx.AsyncClient, token: str, make_agent: AgentFactory
) -> None:
    lease = (await _issued(client, token))["lease"]
    other = await svid(client, await make_agent("other-bot"))
    refused = await client.post(
        f"/v1/leases/{lease['id']}/revoke", headers={"Authorization": f"Bearer {other}"}
    )
    assert refused.status_code == 403
    mine = await client.get("/v1/leases", headers={"Authorization": f"Bearer {other}"})
    assert mine.json()["leases"] == []


async def test_developer_owner_sees_and_revokes_but_auditor_cannot_revoke(
    client: httpx.AsyncClient, token: str
) -> None:
    lease = (await _issued(client, token))["lease"]
    auditor = await operator_token(client, "auditor", "ann")
    seen = await client.get(f"/v1/leases/{lease['id']}", headers=as_(auditor))
    assert seen.status_code == 200
    refused = await client.post(f"/v1/leases/{lease['id']}/revoke", headers=as_(auditor))
    assert refused.status_code == 403
    alice = await operator_token(client, "developer", "alice")  # owns faq-bot
    done = await client.post(f"/v1/leases/{lease['id']}/revoke", headers=as_(alice))
    assert done.json()["state"] == "revoked"


async def test_expired_lease_is_reaped_never_early(
    client: httpx.AsyncClient, token: str, db: ManagedDb, services: Services
) -> None:
    lease = (await _issued(client, token, ttl=2))["lease"]
    assert await services.revoker.reap() == 0  # not yet: the lease is valid for 2 s
    assert db.roles() == {lease["credential"]}
    await asyncio.sleep(2.1)
    assert await services.revoker.reap() == 1
    assert db.roles() == set()
    shown = (await client.get(f"/v1/leases/{lease['id']}")).json()
    assert shown["state"] == "expired"
    assert shown["ended_at"] >= shown["expires_at"]


async def test_managed_roles_equal_the_live_leases(
    client: httpx.AsyncClient, token: str, db: ManagedDb, services: Services
) -> None:
    issued = [(await _issued(client, token))["lease"] for _ in range(4)]
    await client.post(f"/v1/leases/{issued[0]['id']}/revoke")
    live = await services.store.live_credentials("pg-main")
    assert db.roles() == live == {lease["credential"] for lease in issued[1:]}


async def test_orphan_role_with_the_managed_prefix_is_dropped_on_sweep(
    client: httpx.AsyncClient, token: str, db: ManagedDb, services: Services
) -> None:
    kept = (await _issued(client, token))["lease"]["credential"]
    orphan, not_ours = db.prefix + new_id("lea"), db.prefix + "admin"
    with db.admin() as conn:
        for name in (orphan, not_ours):
            conn.execute(
                psycopg.sql.SQL("CREATE ROLE {} LOGIN").format(psycopg.sql.Identifier(name))
            )
    assert await services.revoker.sweep_orphans(grace=0) == 1
    assert db.roles() == {kept, not_ours}  # a role under the prefix but not a lease's: kept
    orphans = await _records(services, "lease.orphan_removed")
    assert [r["credential"] for r in orphans] == [orphan]
    with db.admin() as conn:
        conn.execute(psycopg.sql.SQL("DROP ROLE {}").format(psycopg.sql.Identifier(not_ours)))


async def test_role_that_cannot_be_dropped_is_retried_then_irrevocable_with_an_alert(
    client: httpx.AsyncClient, token: str, db: ManagedDb, services: Services, pg_cluster: PgCluster
) -> None:
    issued = await _issued(client, token)
    role = issued["lease"]["credential"]
    # The role owns an object in a database the engine does not manage: DROP ROLE fails.
    elsewhere = pg_cluster.create_database()
    with psycopg.connect(
        host=pg_cluster.host,
        port=pg_cluster.port,
        user=pg_cluster.user,
        password=pg_cluster.password,
        dbname=elsewhere,
        autocommit=True,
    ) as conn:
        conn.execute(psycopg.sql.SQL("CREATE TABLE kept (x int)"))
        conn.execute(
            psycopg.sql.SQL("ALTER TABLE kept OWNER TO {}").format(psycopg.sql.Identifier(role))
        )
    alerts = services.events.subscribe()
    revoked = await client.post(f"/v1/leases/{issued['lease']['id']}/revoke")
    assert revoked.json()["state"] == "revoking"
    assert revoked.json()["attempts"] == 1
    # Blocked meanwhile: the password no longer logs in.
    with pytest.raises(psycopg.OperationalError):
        db.connect(role, issued["credential"]["secret"])
    lease_id = issued["lease"]["id"]
    for _ in range(services.settings.lease_revoke_max_attempts):
        await _force_due(services, lease_id)
        await services.revoker.reap()
    shown = (await client.get(f"/v1/leases/{lease_id}")).json()
    assert shown["state"] == str(LeaseState.IRREVOCABLE)
    kinds = [event.type for event in alerts.drain()]
    assert "lease.irrevocable" in kinds
    # Fixed by hand: the next attempt removes it.
    with psycopg.connect(
        host=pg_cluster.host,
        port=pg_cluster.port,
        user=pg_cluster.user,
        password=pg_cluster.password,
        dbname=elsewhere,
        autocommit=True,
    ) as conn:
        conn.execute("DROP TABLE kept")
    await _force_due(services, lease_id)
    await services.revoker.reap()
    assert (await client.get(f"/v1/leases/{lease_id}")).json()["state"] == "revoked"
    assert db.roles() == set()


async def _force_due(services: Services, lease_id: str) -> None:
    """Make the lease's next attempt due now (instead of waiting out the backoff)."""
    lease = await services.store.get_lease(lease_id)
    assert lease is not None
    due = replace(lease, next_attempt_at=services.clock.now(), version=lease.version + 1)
    await services.store.save_lease(due, expected_version=lease.version)


async def test_engine_secret_is_sealed_and_never_shown(
    client: httpx.AsyncClient, token: str, services: Services, pg_cluster: PgCluster
) -> None:
    shown = (await client.get("/v1/engines/pg-main")).json()
    assert shown["secret_set"] is True
    assert "secret" not in shown
    stored = await services.store.get_engine("pg-main")
    assert stored is not None
    assert stored.sealed_secret is not None
    assert pg_cluster.password.encode() not in stored.sealed_secret


async def test_engine_with_a_wrong_admin_password_is_refused(
    client: httpx.AsyncClient, db: ManagedDb
) -> None:
    body = db.engine_body() | {"secret": "wrong-password"}
    refused = await client.put("/v1/engines/pg-other", json=body)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "engine_unavailable"
    assert "wrong-password" not in refused.text
    assert (await client.get("/v1/engines/pg-other")).status_code == 404


async def test_engine_in_use_cannot_be_removed(client: httpx.AsyncClient, token: str) -> None:
    lease = (await _issued(client, token))["lease"]
    assert (await client.delete("/v1/engines/pg-main")).status_code == 409
    await client.post(f"/v1/leases/{lease['id']}/revoke")
    assert (await client.delete("/v1/engines/pg-main")).status_code == 200


async def test_developer_cannot_configure_an_engine(
    client: httpx.AsyncClient, db: ManagedDb
) -> None:
    dev = await operator_token(client, "developer", "dan")
    refused = await client.put("/v1/engines/pg-main", json=db.engine_body(), headers=as_(dev))
    assert refused.status_code == 403


async def test_unmanaged_login_role_is_reported(
    client: httpx.AsyncClient, token: str, db: ManagedDb
) -> None:
    with db.admin() as conn:
        conn.execute("CREATE ROLE standing_app LOGIN")
    answer = await client.get("/v1/engines/pg-main/unmanaged-logins")
    assert answer.status_code == 200, answer.text
    assert "standing_app" in {login["name"] for login in answer.json()["logins"]}
    with db.admin() as conn:
        conn.execute("DROP ROLE standing_app")


async def test_posture_scan_publishes_each_login_tether_did_not_create(
    client: httpx.AsyncClient, token: str, db: ManagedDb, services: Services
) -> None:
    with db.admin() as conn:
        conn.execute("CREATE ROLE bypassing_agent LOGIN")
    try:
        feed = services.events.subscribe()
        await _issued(client, token)  # a managed role: never reported
        await services.scan_credentials()
        found = [e.data for e in feed.drain() if e.type == "credential.unmanaged_login"]
    finally:
        with db.admin() as conn:
            conn.execute("DROP ROLE bypassing_agent")
    logins = {str(event["login"]) for event in found}
    assert "bypassing_agent" in logins
    assert not {login for login in logins if login.startswith(db.prefix)}
    assert {event["engine"] for event in found} == {"pg-main"}


async def test_engine_with_live_leases_keeps_its_connection_and_roles(
    client: httpx.AsyncClient, token: str, db: ManagedDb
) -> None:
    await _issued(client, token)
    moved = db.engine_body()
    moved["settings"] |= {"database": "postgres"}
    refused = await client.put("/v1/engines/pg-main", json=moved)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["details"]["settings"] == ["database", "databases"]
    renamed = db.engine_body(name="reader")
    refused = await client.put("/v1/engines/pg-main", json=renamed)
    assert refused.json()["error"]["details"]["roles"] == ["readonly"]
    tuned = db.engine_body()
    tuned["settings"] |= {"pool_size": 2}
    assert (await client.put("/v1/engines/pg-main", json=tuned)).status_code == 200


async def test_leases_of_an_agent_stopped_without_its_leases_ending_are_ended_by_the_backstop(
    client: httpx.AsyncClient, token: str, db: ManagedDb, services: Services
) -> None:
    """As when the quarantine's own revocation failed (the store was down then)."""
    await _issued(client, token)
    agent = await services.store.get_agent("faq-bot")
    assert agent is not None
    stopped = replace(agent, state=AgentState.QUARANTINED, version=agent.version + 1)
    await services.store.update_agent(stopped, expected_version=agent.version)
    assert len(db.roles()) == 1
    assert await services.leases.end_stopped_agents() == 1
    assert db.roles() == set()
    assert await services.leases.end_stopped_agents() == 0


async def test_unknown_engine_is_not_told_to_a_caller_without_a_valid_token_or_policy(
    client: httpx.AsyncClient, token: str, db: ManagedDb
) -> None:
    forged = await issue(client, "not-a-token", engine="no-such-engine")
    assert forged.status_code == 401
    unpermitted = await issue(client, token, engine="no-such-engine")
    assert unpermitted.status_code == 403
    assert "no-such-engine" not in unpermitted.json()["error"]["message"]
    unknown_role = await issue(client, token, role="superuser")
    assert unknown_role.status_code == 404  # permitted on pg-main: told its roles
    assert db.roles() == set()


async def test_an_instance_cannot_renew_or_revoke_another_instances_lease(
    client: httpx.AsyncClient, token: str, faq_bot: RegisteredAgent
) -> None:
    lease = (await _issued(client, token))["lease"]
    form = client_credentials(
        faq_bot.key.private_pem,
        client_id=faq_bot.spiffe_id,
        audience=f"{ISSUER}/oauth2/token",
        now=int(time.time()),
        instance_id="pod-2",
    )
    other = (await client.post("/oauth2/token", data=form)).json()["access_token"]
    headers = {"Authorization": f"Bearer {other}"}
    for action in ("renew", "revoke"):
        refused = await client.post(f"/v1/leases/{lease['id']}/{action}", headers=headers)
        assert refused.status_code == 403
    assert (await client.get("/v1/leases", headers=headers)).json()["leases"] == []


async def test_agent_stopped_while_its_credential_is_created_gets_none(
    client: httpx.AsyncClient,
    token: str,
    db: ManagedDb,
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stop ended the agent's leases before this one was stored: issuance itself must
    see the stop and withdraw the credential."""
    _, engine = await services.engines.open("pg-main")
    create = engine.create

    async def create_while_stopped(**kwargs: Any) -> Any:
        issued = await create(**kwargs)
        agent = await services.store.get_agent("faq-bot")
        assert agent is not None
        stopped = replace(agent, state=AgentState.QUARANTINED, version=agent.version + 1)
        await services.store.update_agent(stopped, expected_version=agent.version)
        return issued

    monkeypatch.setattr(engine, "create", create_while_stopped)
    refused = await issue(client, token)
    assert refused.status_code == 403, refused.text
    assert db.roles() == set()
    listed = (await client.get("/v1/leases")).json()["leases"]
    assert [lease["state"] for lease in listed] == ["revoked"]


async def test_renewal_is_decided_again_so_a_withdrawn_permission_stops_it(
    client: httpx.AsyncClient, token: str
) -> None:
    lease = (await _issued(client, token, ttl=60))["lease"]
    agent = {"Authorization": f"Bearer {token}"}
    nothing_for_faq_bot = """
@id("someone-else")
permit (principal == Tether::Agent::"other-bot", action, resource);
"""
    applied = await client.post("/v1/policies", json={"text": nothing_for_faq_bot})
    assert applied.status_code == 201, applied.text
    refused = await client.post(f"/v1/leases/{lease['id']}/renew", json={"ttl": 120}, headers=agent)
    assert refused.status_code == 403, refused.text
    shown = (await client.get(f"/v1/leases/{lease['id']}")).json()
    assert shown["expires_at"] == lease["expires_at"]
    assert shown["renewals"] == 0
    # An admin may still renew (an operator's decision, audited as theirs).
    by_admin = await client.post(f"/v1/leases/{lease['id']}/renew", json={"ttl": 120})
    assert by_admin.json()["renewals"] == 1


def _writer(services: Services) -> _audit_writer.AuditWriter:
    store = services.store
    assert isinstance(store, SqlStore)
    writer = store._audit_writer
    assert writer is not None, "the embedded store writes audit records through its writer"
    return writer


async def _lone_commits_now(services: Services) -> None:
    """The audit writer commits a batch that waits alone on this thread now: not paused by
    slow commits on a busy test machine, not the process's turn to checkpoint; and the
    audit log has nothing on its way."""
    writer = _writer(services)
    writer._direct_after = writer._direct_pace = 0.0
    writer._process_next = False
    writer._direct_turn = 0  # the process's turn to checkpoint is many commits away
    log = services.audit
    for _ in range(500):
        if not log._pending and log._idle():
            return
        await asyncio.sleep(0.01)
    pytest.fail("the audit log did not become idle")


def _traced_direct_commits(services: Services, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The statements the audit writer's connection on this thread runs from now on."""
    statements: list[str] = []
    _writer(services)._close_direct()
    opened = _audit_writer._connect

    def traced(path: str) -> sqlite3.Connection:
        raw = opened(path)
        raw.set_trace_callback(statements.append)
        return raw

    monkeypatch.setattr(_audit_writer, "_connect", traced)
    return statements


async def _revocation_records(services: Services, lease_id: str) -> list[str]:
    page = await services.store.list_audit(type_prefix="lease.", limit=1000)
    mine = [r.type for _, r in page if r.details.get("lease_id") == lease_id]
    return [t for t in mine if t in ("lease.revoked", "lease.ended")]


async def test_a_revoked_lease_and_its_two_records_are_committed_in_one_transaction(
    client: httpx.AsyncClient, token: str, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    lease_id = (await _issued(client, token))["lease"]["id"]
    statements = _traced_direct_commits(services, monkeypatch)
    await _lone_commits_now(services)
    ended = await services.leases.revoke(lease_id, actor=Actor.system("test"))
    assert ended.state is LeaseState.REVOKED
    assert await services.store.get_lease(lease_id) == ended, "stored exactly as returned"
    update = next(i for i, s in enumerate(statements) if s.startswith("UPDATE leases"))
    begin = max(i for i, s in enumerate(statements[:update]) if s == "BEGIN IMMEDIATE")
    commit = update + statements[update:].index("COMMIT")
    transaction = statements[begin:commit]
    assert sum(s.startswith("INSERT INTO audit_records") for s in transaction) == 1
    assert [s for s in statements if s == "COMMIT"] == ["COMMIT"], "one commit for the lot"
    assert await _revocation_records(services, lease_id) == ["lease.revoked", "lease.ended"]
    # Byte for byte the row the store's own save writes (SQLite's DATETIME text and all).
    carried = _raw_lease(services, lease_id)
    await services.store.save_lease(ended, expected_version=ended.version)
    assert _raw_lease(services, lease_id) == carried


def _raw_lease(services: Services, lease_id: str) -> tuple[Any, ...]:
    store = services.store
    assert isinstance(store, SqlStore)
    with contextlib.closing(sqlite3.connect(str(store.url.database))) as raw:
        found = raw.execute("SELECT * FROM leases WHERE id = ?", (lease_id,))
        row: tuple[Any, ...] = found.fetchone()
    return row


async def test_a_lease_renewed_while_its_credential_is_removed_is_closed_as_stored(
    client: httpx.AsyncClient, token: str, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lease moved between its read and its close: the records go in with the commit
    meant for both, and the lease is closed over what is stored then."""
    lease_id = (await _issued(client, token))["lease"]["id"]
    _, engine = await services.engines.open("pg-main")
    removing = engine.revoke

    async def renewed_meanwhile(**kwargs: Any) -> None:
        stored = await services.store.get_lease(lease_id)
        assert stored is not None
        await services.store.save_lease(
            replace(stored, renewals=stored.renewals + 1, version=stored.version + 1),
            expected_version=stored.version,
        )
        await removing(**kwargs)

    monkeypatch.setattr(engine, "revoke", renewed_meanwhile)
    await _lone_commits_now(services)
    ended = await services.leases.revoke(lease_id, actor=Actor.system("test"))
    assert ended.state is LeaseState.REVOKED
    stored = await services.store.get_lease(lease_id)
    assert stored == ended
    assert stored.renewals == 1, "closed over the renewed lease, not the one read before"
    assert await _revocation_records(services, lease_id) == ["lease.revoked", "lease.ended"]


async def test_when_the_one_commit_fails_the_lease_is_closed_and_recorded_the_usual_way(
    client: httpx.AsyncClient, token: str, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    lease_id = (await _issued(client, token))["lease"]["id"]
    rows = _sqlite_audit.append_rows
    failures: list[int] = []

    def fails_once(raw: sqlite3.Connection, *args: Any) -> int:
        if not failures:
            failures.append(1)
            raise sqlite3.OperationalError("disk I/O error")
        return rows(raw, *args)

    monkeypatch.setattr(_sqlite_audit, "append_rows", fails_once)
    await _lone_commits_now(services)
    ended = await services.leases.revoke(lease_id, actor=Actor.system("test"))
    assert failures == [1], "the one-commit write was tried, and failed"
    assert ended.state is LeaseState.REVOKED
    assert await services.store.get_lease(lease_id) == ended
    assert await _revocation_records(services, lease_id) == ["lease.revoked", "lease.ended"]


def _apart(services: Services, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the leases the store writes apart from their records from now on."""
    store = services.store
    assert isinstance(store, SqlStore)
    create, apart = store.create_lease, []

    async def create_apart(lease: Any) -> None:
        apart.append(lease.id)
        await create(lease)

    monkeypatch.setattr(store, "create_lease", create_apart)
    return apart


async def test_an_issued_lease_is_committed_in_the_transaction_of_its_issuance_record(
    client: httpx.AsyncClient, token: str, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    statements = _traced_direct_commits(services, monkeypatch)
    apart = _apart(services, monkeypatch)
    await _lone_commits_now(services)
    lease = (await _issued(client, token))["lease"]
    insert = next(i for i, s in enumerate(statements) if s.startswith("INSERT INTO leases"))
    begin = max(i for i, s in enumerate(statements[:insert]) if s == "BEGIN IMMEDIATE")
    transaction = statements[begin : insert + statements[insert:].index("COMMIT")]
    assert sum(s.startswith("INSERT INTO audit_records") for s in transaction) == 1
    assert apart == [], "not written apart"
    recorded = await _records(services, "lease.issued")
    assert [r["lease_id"] for r in recorded] == [lease["id"]]
    # Byte for byte the row the store's own insert writes (SQLite's DATETIME text and all).
    carried = _raw_lease(services, lease["id"])
    stored = await services.store.get_lease(lease["id"])
    assert stored is not None
    assert stored.state is LeaseState.ACTIVE
    _delete_lease(services, lease["id"])
    await services.store.create_lease(stored)
    assert _raw_lease(services, lease["id"]) == carried


def _delete_lease(services: Services, lease_id: str) -> None:
    store = services.store
    assert isinstance(store, SqlStore)
    with contextlib.closing(sqlite3.connect(str(store.url.database))) as raw:
        raw.execute("DELETE FROM leases WHERE id = ?", (lease_id,))
        raw.commit()


async def test_issuances_in_flight_store_their_leases_in_the_commits_of_their_records(
    client: httpx.AsyncClient, token: str, db: ManagedDb, services: Services,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Through the audit writer's process too: eight at once, every lease in the batch that
    records its issuance, none written apart."""
    writer = _writer(services)
    asked: list[tuple[Any, ...]] = []
    ask = writer._ask

    async def ask_traced(request: tuple[Any, ...]) -> tuple[str, Any]:
        asked.append(request)
        return await ask(request)

    monkeypatch.setattr(writer, "_ask", ask_traced)
    monkeypatch.setattr(writer, "_direct_after", time.monotonic() + 3600)  # the process alone
    apart = _apart(services, monkeypatch)
    issued = await asyncio.gather(*(_issued(client, token) for _ in range(8)))
    ids = {answer["lease"]["id"] for answer in issued}
    assert apart == []
    carried = [r for r in asked if r[0] == "append" and len(r) > 5]
    assert sum(len(r[5]) for r in carried) == 8, "each lease carried by its record's batch"
    assert {r["lease_id"] for r in await _records(services, "lease.issued")} == ids
    for lease_id in ids:
        stored = await services.store.get_lease(lease_id)
        assert stored is not None
        assert stored.state is LeaseState.ACTIVE
    assert db.roles() == {answer["credential"]["username"] for answer in issued}


async def test_a_lease_its_record_did_not_carry_is_stored_apart(
    client: httpx.AsyncClient, token: str, db: ManagedDb, services: Services,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The carried insert changed nothing (as when it fails and is rolled back alone): the
    lease is stored the usual way, and the issuance goes on."""
    store = services.store
    assert isinstance(store, SqlStore)
    monkeypatch.setattr(
        store, "lease_create_carried", lambda lease: CarriedWrite("DELETE FROM leases WHERE 0", ())
    )
    apart = _apart(services, monkeypatch)
    issued = await _issued(client, token)
    assert apart == [issued["lease"]["id"]]
    stored = await services.store.get_lease(issued["lease"]["id"])
    assert stored is not None
    assert stored.state is LeaseState.ACTIVE
    assert db.roles() == {issued["credential"]["username"]}


async def test_a_lease_that_went_in_with_a_record_whose_answer_was_lost_is_ended(
    client: httpx.AsyncClient, token: str, db: ManagedDb, services: Services,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The record and its lease were committed, but the caller heard an error: the issuance
    fails closed, and the lease that is stored is ended with its credential — not left
    active with no role behind it."""
    log = services.audit
    append_with = log.append_with

    async def answer_lost(record: Any, write: CarriedWrite) -> Any:
        await append_with(record, write)
        write.written = False  # what the answer would have said, lost with it
        raise AuditUnavailable("the writer's answer was lost")

    monkeypatch.setattr(log, "append_with", answer_lost)
    refused = await issue(client, token)
    assert refused.status_code == 503, refused.text
    assert db.roles() == set()
    listed = (await client.get("/v1/leases")).json()["leases"]
    assert len(listed) == 1
    assert listed[0]["state"] not in ("active", "issuing"), listed[0]

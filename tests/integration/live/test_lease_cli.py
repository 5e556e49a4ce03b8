"""``tether engine`` and ``tether lease`` against a real server and a real PostgreSQL.

One server per module (each CLI call is a subprocess): an operator configures ``pg-main``
with the admin password on standard input and applies a policy; ``faq-bot`` gets a key and a
JWT-SVID; the lease commands then run as the agent (``TETHER_TOKEN`` = its JWT-SVID) or as
the operator. Neither the issued passwords nor the admin password may show anywhere but in
the one answer that issues them: not in another command's output, not in the server's log.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.conftest import PgCluster
from tests.integration.api.leases import POLICIES, ManagedDb, managed_db
from tether.cli import exit_codes

from .conftest import ROOT, ServerProcess, run_cli

pytestmark = pytest.mark.postgres


@dataclass
class World:
    """pg-main configured on a managed database, the policy applied, faq-bot's JWT-SVID."""

    server: ServerProcess
    db: ManagedDb
    agent_token: str
    tmp: Path
    #: Every secret handed out, to look for everywhere else.
    secrets: list[str] = field(default_factory=list)


def tether(
    server: ServerProcess, *args: str, token: str | None = ROOT, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return run_cli(server.addr, *args, token=token, stdin=stdin)


def ok(done: subprocess.CompletedProcess[str]) -> Any:
    """The JSON a command printed, once it succeeded."""
    assert done.returncode == exit_codes.OK, done.stdout + done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("lease-cli")
    running = ServerProcess(home / "data", log=home / "server.log")
    try:
        running.start()
        yield running
    finally:
        running.stop()


def _engine_file(db: ManagedDb, path: Path, **settings: Any) -> Path:
    body = db.engine_body()
    del body["secret"]  # it goes on standard input
    body["settings"] |= settings
    path.write_text(json.dumps(body))
    return path


@pytest.fixture(scope="module")
def world(
    server: ServerProcess, pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory
) -> World:
    tmp = tmp_path_factory.mktemp("lease-cli-files")
    db = managed_db(pg_cluster)
    config = _engine_file(db, tmp / "pg-main.json")
    add = ("engine", "add", "pg-main", "--config", str(config), "--secret-stdin", "-o", "json")
    added = ok(tether(server, *add, stdin=pg_cluster.password + "\n"))
    assert (added["name"], added["secret_set"]) == ("pg-main", True)
    policy = tmp / "leases.cedar"
    policy.write_text(POLICIES)
    ok(tether(server, "policy", "apply", str(policy), "-o", "json"))
    register = ("agent", "register", "faq-bot", "--owner", "alice", "--resource", "pg-main")
    ok(tether(server, *register, "-o", "json"))
    key, jwk = tmp / "faq-bot.pem", tmp / "faq-bot.jwk.json"
    jwk.write_text(json.dumps(ok(tether(server, "agent", "keygen", str(key)))))
    ok(tether(server, "agent", "key", "add", "faq-bot", "--jwk", str(jwk), "-o", "json"))
    svid = ("agent", "token", "faq-bot", "--key", str(key), "--instance", "pod-1", "-o", "json")
    token = ok(tether(server, *svid, token=None))["access_token"]
    return World(server=server, db=db, agent_token=token, tmp=tmp, secrets=[pg_cluster.password])


def _nowhere_else(world: World, *outputs: str) -> None:
    """No secret handed out so far is in ``outputs`` or in the server's log."""
    log = world.server.output()
    assert "Tether listening on" in log  # the log is captured: the check below can fail
    for secret in world.secrets:
        assert all(secret not in text for text in (log, *outputs))


def _login(db: ManagedDb, credential: dict[str, Any]) -> list[tuple[Any, ...]]:
    assert (credential["host"], credential["port"]) == (db.cluster.host, db.cluster.port)
    with db.connect(credential["username"], credential["secret"]) as conn:
        return conn.execute("SELECT a FROM faq").fetchall()


def test_engine_admin_password_goes_in_on_stdin_and_never_comes_out(world: World) -> None:
    listed = tether(world.server, "engine", "list", "-o", "json")
    assert [(e["name"], e["secret_set"]) for e in ok(listed)] == [("pg-main", True)]
    shown = tether(world.server, "engine", "show", "pg-main", "-o", "json")
    assert "secret" not in ok(shown)
    assert ok(shown)["settings"]["role_prefix"] == world.db.prefix
    inline = world.db.engine_body()  # the secret in the file: refused before any request
    (world.tmp / "inline.json").write_text(json.dumps(inline))
    refused = tether(
        world.server, "engine", "add", "pg-x", "--config", str(world.tmp / "inline.json")
    )
    assert refused.returncode == exit_codes.INVALID_INPUT
    assert "--secret-stdin" in refused.stderr
    config = str(_engine_file(world.db, world.tmp / "pg-x.json"))
    empty = tether(world.server, "engine", "add", "pg-x", "--config", config, "--secret-stdin")
    assert empty.returncode == exit_codes.INVALID_INPUT  # not an empty password sent
    assert "no secret" in empty.stderr
    _nowhere_else(world, listed.stdout, shown.stdout, refused.stderr, empty.stderr)


def test_lease_issued_to_the_agent_logs_in_renews_and_ends_on_revoke(world: World) -> None:
    issue = ("lease", "issue", "--engine", "pg-main", "--role", "readonly", "--ttl", "60")
    issued = ok(tether(world.server, *issue, "-o", "json", token=world.agent_token))
    lease, credential = issued["lease"], issued["credential"]
    world.secrets.append(credential["secret"])
    assert (lease["agent"], lease["state"]) == ("faq-bot", "active")
    assert _login(world.db, credential) == [("9 to 5",)]
    listed = tether(world.server, "lease", "list", "--engine", "pg-main", "-o", "json")
    assert lease["id"] in {row["id"] for row in ok(listed)}
    renew = ("lease", "renew", lease["id"], "--ttl", "200", "-o", "json")
    renewed = ok(tether(world.server, *renew, token=world.agent_token))
    assert renewed["renewals"] == 1
    assert renewed["expires_at"] > lease["expires_at"]
    revoked = tether(world.server, "lease", "revoke", lease["id"], "--reason", "done", "-o", "json")
    assert ok(revoked)["state"] == "revoked"
    assert ok(revoked)["reason"] == "revoked by operator:root: done"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        _login(world.db, credential)
    _nowhere_else(world, listed.stdout, revoked.stdout)


def test_lease_revoke_by_agent_ends_every_lease_the_agent_holds(world: World) -> None:
    """A table-output issue prints the secret once too; the engine cannot be removed while
    the lease is live; ``revoke --agent`` ends it."""
    issue = ("lease", "issue", "--engine", "pg-main", "--role", "readonly")
    table = tether(world.server, *issue, token=world.agent_token)
    assert table.returncode == exit_codes.OK, table.stderr
    cells = (line.split(maxsplit=1) for line in table.stdout.splitlines() if line.strip())
    rows = {key: value.strip() for key, value in cells}
    credential: dict[str, Any] = {k: rows[k] for k in ("username", "secret", "host", "port")}
    credential["port"] = int(credential["port"])
    world.secrets.append(credential["secret"])
    assert _login(world.db, credential) == [("9 to 5",)]
    busy = tether(world.server, "engine", "remove", "pg-main")
    assert busy.returncode == exit_codes.CONFLICT, busy.stdout + busy.stderr
    ended = ok(tether(world.server, "lease", "revoke", "--agent", "faq-bot", "-o", "json"))
    assert rows["id"] in {lease["id"] for lease in ended["leases"]}
    assert ended["revoked"] == len(ended["leases"]) >= 1
    assert {lease["state"] for lease in ended["leases"]} == {"revoked"}
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        _login(world.db, credential)
    _nowhere_else(world, busy.stdout + busy.stderr, json.dumps(ended))


def test_lease_command_errors_have_the_documented_exit_codes(world: World) -> None:
    both = tether(world.server, "lease", "revoke", "lea_" + "0" * 26, "--agent", "faq-bot")
    assert both.returncode == exit_codes.INVALID_INPUT
    assert "not both" in both.stderr
    assert tether(world.server, "lease", "revoke").returncode == exit_codes.INVALID_INPUT
    unknown = tether(world.server, "lease", "revoke", "lea_" + "0" * 26)
    assert unknown.returncode == exit_codes.NOT_FOUND, unknown.stderr
    operator = tether(world.server, "lease", "issue", "--engine", "pg-main", "--role", "readonly")
    assert operator.returncode == exit_codes.AUTH
    assert "JWT-SVID" in operator.stderr


def test_engine_unmanaged_reports_a_hand_made_login(world: World) -> None:
    hand = f"{world.db.prefix[:-1]}x_hand"
    with world.db.admin() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER").format(sql.Identifier(hand)))
    try:
        logins = ok(tether(world.server, "engine", "unmanaged", "pg-main", "-o", "json"))
    finally:
        with world.db.admin() as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(hand)))
    assert {"name": hand, "superuser": True, "createrole": False, "valid_until": None} in logins
    assert not {row["name"] for row in logins} & {world.db.cluster.user}


def test_engine_remove_forgets_an_engine_no_lease_uses(world: World) -> None:
    config = _engine_file(world.db, world.tmp / "pg-spare.json", role_prefix="spare_")
    add = ("engine", "add", "pg-spare", "--config", str(config), "--secret-stdin", "-o", "json")
    ok(tether(world.server, *add, stdin=world.db.cluster.password))  # no final newline
    assert ok(tether(world.server, "engine", "remove", "pg-spare", "-o", "json")) == {
        "removed": "pg-spare"
    }
    gone = tether(world.server, "engine", "show", "pg-spare")
    assert gone.returncode == exit_codes.NOT_FOUND

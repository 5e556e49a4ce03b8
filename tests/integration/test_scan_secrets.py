"""``tether posture scan-secrets`` and ``tether posture`` against a real server and a real
PostgreSQL engine: secrets in files are found with detect-secrets on the command's side, and
only their digests reach the server, which names the engine a managed one belongs to.

The managed database's admin password written into a config file is the standing credential
the scan must call out; a vault secret pasted into code is one too; a password Tether does not
hold is unmanaged. No found secret is ever printed, nor written to the server's log.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import PgCluster
from tests.integration.api.leases import ManagedDb, managed_db
from tests.integration.live.conftest import ROOT, ServerProcess, run_cli
from tether.cli import exit_codes
from tether.cli.main import app

pytestmark = pytest.mark.postgres

CRM_KEY = "crm-key-posture-5c4b3a29181706f5"
UNMANAGED = "unmanaged-pw-a1b2c3d4e5"


@dataclass
class World:
    server: ServerProcess
    db: ManagedDb
    tree: Path


def _known_logins(db: ManagedDb) -> list[str]:
    with db.admin() as conn:
        rows = conn.execute("SELECT rolname FROM pg_roles WHERE rolcanlogin").fetchall()
    return sorted(str(r[0]) for r in rows if str(r[0]) != db.cluster.user)


def _tree(root: Path, admin_password: str) -> Path:
    """A deployment folder with secrets in it, and copies where no scan should look."""
    files = {
        "app.yaml": f"database:\n  host: 127.0.0.1\n  password: {admin_password}\n",
        "settings.py": f'crm_api_key = "{CRM_KEY}"\n',
        "jobs/other.py": f'import os\n\npassword = "{UNMANAGED}"\n',
        "README.md": "Nothing to see here.\n",
        ".git/config": f"[remote]\npassword = {admin_password}\n",
        "node_modules/x.py": f'password = "{admin_password}"\n',
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, pg_cluster: PgCluster) -> Iterator[World]:
    home = tmp_path_factory.mktemp("scan-secrets")
    server = ServerProcess(home / "data", log=home / "server.log")
    server.start()
    try:
        db = managed_db(pg_cluster)
        body = db.engine_body()
        body["settings"]["known_logins"] = _known_logins(db)
        vault = {"kind": "vault", "roles": [{"name": "crm", "resource": "crm",
                 "options": {"secret": "crm-api-key"}}],
                 "secret": json.dumps({"crm-api-key": CRM_KEY})}  # fmt: skip
        with server.ops() as ops:
            for name, config in (("pg-main", body), ("vault-main", vault)):
                answer = ops.put(f"/v1/engines/{name}", json=config)
                assert answer.status_code == 200, answer.text
        yield World(server=server, db=db, tree=_tree(home / "deploy", db.cluster.password))
    finally:
        server.stop()


def _ok(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == exit_codes.OK, done.stdout + done.stderr
    return json.loads(done.stdout)


def _secrets(world: World) -> tuple[str, ...]:
    return (world.db.cluster.password, CRM_KEY, UNMANAGED)


def test_scan_secrets_calls_a_managed_admin_password_in_a_file_a_standing_credential(
    world: World,
) -> None:
    done = run_cli(world.server.addr, "posture", "scan-secrets", str(world.tree), "-o", "json")
    report = _ok(done)
    assert report["checked"] is True
    seen = {(f["file"], f["line"], f["kind"], tuple(m["engine"] for m in f["managed"]))
            for f in report["findings"]}  # fmt: skip
    assert seen == {
        ("app.yaml", 3, "managed_secret_in_file", ("pg-main",)),
        ("settings.py", 1, "managed_secret_in_file", ("vault-main",)),
        ("jobs/other.py", 3, "secret_in_file", ()),
    }
    by_file = {f["file"]: f for f in report["findings"]}
    assert by_file["app.yaml"]["status"] == "managed: engine pg-main (standing credential)"
    assert by_file["app.yaml"]["managed"] == [
        {"engine": "pg-main", "kind": "postgres", "name": world.db.cluster.user}
    ]
    assert by_file["jobs/other.py"]["status"] == "unmanaged"
    assert by_file["app.yaml"]["redacted"] == "su****** (17 characters)"
    for secret in _secrets(world):
        assert secret not in done.stdout + done.stderr
        assert secret not in world.server.output()


def test_scan_secrets_table_names_file_line_and_whether_managed(world: World) -> None:
    done = run_cli(world.server.addr, "posture", "scan-secrets", str(world.tree))
    assert done.returncode == exit_codes.OK, done.stderr
    assert "app.yaml:3" in done.stdout
    assert "managed: engine pg-main (standing credential)" in done.stdout
    assert "unmanaged" in done.stdout
    for secret in _secrets(world):
        assert secret not in done.stdout + done.stderr


def test_scan_secrets_without_matching_asks_no_server(world: World) -> None:
    nowhere = "http://127.0.0.1:9"
    done = run_cli(nowhere, "posture", "scan-secrets", str(world.tree / "app.yaml"),
                   "--no-match", "-o", "json", token=None)  # fmt: skip
    report = _ok(done)
    assert report["checked"] is False
    assert [(f["file"], f["status"]) for f in report["findings"]] == [("app.yaml", "unchecked")]


def test_scan_secrets_refuses_an_operator_who_may_not_match(world: World) -> None:
    with world.server.ops() as ops:
        created = ops.post("/v1/tokens", json={"role": "auditor", "display_name": "aud"})
    token = created.json()["token"]
    done = run_cli(world.server.addr, "posture", "scan-secrets", str(world.tree), token=token)
    assert done.returncode == exit_codes.AUTH, done.stdout + done.stderr


def test_posture_prints_the_report_as_json_and_as_tables(world: World) -> None:
    report = _ok(run_cli(world.server.addr, "posture", "--output", "json", "--days", "7"))
    assert report["days"] == 7
    assert {s["engine"] for s in report["secret_sources"]} == {"pg-main", "vault-main"}
    assert all("kind" in p and "subject" in p for p in report["problems"])
    again = _ok(run_cli(world.server.addr, "posture", "--output", "json", "--days", "7"))
    assert again["problems"] == report["problems"]
    table = run_cli(world.server.addr, "posture")
    assert table.returncode == exit_codes.OK, table.stderr
    assert "pg-main" in table.stdout
    for secret in _secrets(world):
        assert secret not in table.stdout + json.dumps(report)


def test_scan_secrets_without_the_scan_extra_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An interpreter without detect-secrets: importing it fails.
    monkeypatch.setitem(sys.modules, "detect_secrets", None)
    monkeypatch.setitem(sys.modules, "detect_secrets.core.secrets_collection", None)
    (tmp_path / "a.py").write_text('password = "x"\n')
    result = CliRunner().invoke(app, ["posture", "scan-secrets", str(tmp_path), "--no-match"])
    assert result.exit_code == exit_codes.INVALID_INPUT
    assert "config_invalid" in result.output
    assert "pip install 'tether[scan]'" in result.output


def test_posture_help_lists_scan_secrets() -> None:
    result = CliRunner().invoke(app, ["posture", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "scan-secrets" in result.output
    assert ROOT not in result.output

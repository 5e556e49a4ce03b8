"""The ``tether`` command against a real server: the README's flow, JSON output, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tether.cli import exit_codes

from .conftest import ROOT, Live, free_port, run_cli, wait_ready


def tether(
    live: Live, *args: str, token: str | None = ROOT, addr: str | None = None
) -> subprocess.CompletedProcess[str]:
    return run_cli(addr or live.addr, *args, token=token)


def test_readme_flow_register_key_token(live: Live, tmp_path: Path) -> None:
    out = tether(
        live,
        "agent",
        "register",
        "faq-bot",
        "--owner",
        "alice",
        "--tool",
        "search_faq",
        "--resource",
        "postgres:faq",
        "--data-class",
        "public",
        "-o",
        "json",
    )
    assert out.returncode == 0, out.stderr
    agent = json.loads(out.stdout)
    assert agent["spiffe_id"] == "spiffe://acme.org/agent/faq-bot"
    key_file = tmp_path / "faq-bot.pem"
    keygen = tether(live, "agent", "keygen", str(key_file))
    assert keygen.returncode == 0, keygen.stderr
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    jwk_file = tmp_path / "faq-bot.jwk.json"
    jwk_file.write_text(keygen.stdout)
    added = tether(live, "agent", "key", "add", "faq-bot", "--jwk", str(jwk_file), "-o", "json")
    assert added.returncode == 0, added.stderr
    token = tether(
        live,
        "agent",
        "token",
        "faq-bot",
        "--key",
        str(key_file),
        "--instance",
        "pod-1",
        "-o",
        "json",
        token=None,
    )
    assert token.returncode == 0, token.stderr
    assert json.loads(token.stdout)["token_type"] == "Bearer"
    shown = json.loads(tether(live, "agent", "show", "faq-bot", "-o", "json").stdout)
    assert [i["instance_id"] for i in shown["instances"]] == ["pod-1"]
    assert shown["assessments"][0]["tier"] == "low"
    listed = json.loads(tether(live, "agent", "list", "-o", "json").stdout)
    assert [a["name"] for a in listed] == ["faq-bot"]
    status = json.loads(tether(live, "status", "-o", "json").stdout)
    assert (status["ready"], status["token_role"]) == (True, "root")


def test_exit_codes_are_the_documented_ones(live: Live) -> None:
    assert tether(live, "agent", "show", "ghost").returncode == exit_codes.NOT_FOUND
    assert tether(live, "agent", "register", "x1", "--owner", "a").returncode == exit_codes.OK
    dup = tether(live, "agent", "register", "x1", "--owner", "a")
    assert dup.returncode == exit_codes.CONFLICT
    assert "agent_exists" in dup.stderr
    bad = tether(live, "agent", "register", "Bad_Name", "--owner", "a")
    assert bad.returncode == exit_codes.INVALID_INPUT
    assert "lowercase" in bad.stderr
    assert tether(live, "agent", "list", token="tto_wrong").returncode == exit_codes.AUTH
    down = tether(live, "agent", "list", addr="http://127.0.0.1:9")
    assert down.returncode == exit_codes.UNAVAILABLE
    assert tether(live, "agent", "frobnicate").returncode == exit_codes.USAGE


def test_operator_token_for_a_person(live: Live) -> None:
    created = tether(live, "token", "create", "--role", "auditor", "--name", "audrey", "-o", "json")
    assert created.returncode == 0, created.stderr
    secret = json.loads(created.stdout)["token"]
    assert tether(live, "agent", "list", token=secret).returncode == 0
    refused = tether(live, "agent", "register", "y1", "--owner", "a", token=secret)
    assert refused.returncode == exit_codes.AUTH


def test_dev_server_removes_its_throwaway_data_on_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path), "TETHER_ROOT_TOKEN": ROOT}
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tether", "serve", "--dev", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not list(tmp_path.glob("tether-dev-*/*")):
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the dev server did not start"
            time.sleep(0.1)
        wait_ready(f"http://127.0.0.1:{port}", deadline)
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert list(tmp_path.glob("tether-dev-*")) == [], "dev mode leaves no keys or database behind"


@pytest.mark.parametrize(
    ("setting", "value", "code", "said"),
    [
        ("TETHER_MAX_IN_FLIGHT", "0", exit_codes.INVALID_INPUT, "max_in_flight must be"),
        ("TETHER_DATABASE_URL", "postgresql://tether@127.0.0.1:9/tether",
         exit_codes.UNAVAILABLE, "is unavailable"),
    ],
)  # fmt: skip
def test_server_that_cannot_start_says_why_with_a_remedy_not_a_traceback(
    tmp_path: Path, setting: str, value: str, code: int, said: str
) -> None:
    env = {**os.environ, setting: value, "TETHER_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "tether", "serve", "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == code, done.stderr
    assert "error: the server cannot start:" in done.stderr
    assert said in done.stderr
    assert "hint:" in done.stderr
    assert "Traceback" not in done.stderr


def test_policy_commands_check_apply_and_roll_back(live: Live, tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "10-faq.cedar").write_text(
        '@id("faq-bot-searches")\n'
        'permit (principal == Tether::Agent::"faq-bot", action == Tether::Action::"call_tool", '
        "resource);\n"
    )
    bad = tmp_path / "bad.cedar"
    bad.write_text('@id("x") permit (principal, action == Tether::Action::"fly", resource);\n')
    refused = tether(live, "policy", "validate", str(bad))
    assert refused.returncode == exit_codes.INVALID_INPUT
    assert "fly" in refused.stdout
    assert tether(live, "policy", "validate", str(policies)).returncode == 0
    applied = tether(live, "policy", "apply", str(policies), "--comment", "first", "-o", "json")
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout)["version"] == 1
    (policies / "20-more.cedar").write_text(
        '@id("faq-bot-queries")\n'
        'permit (principal == Tether::Agent::"faq-bot", action == Tether::Action::"query", '
        "resource);\n"
    )
    assert tether(live, "policy", "apply", str(policies)).returncode == 0
    diff = tether(live, "policy", "diff", "1", "2")
    assert '+@id("faq-bot-queries")' in diff.stdout
    assert tether(live, "policy", "rollback", "1").returncode == 0
    shown = tether(live, "policy", "show", "-o", "json")
    assert json.loads(shown.stdout)["version"] == 1
    listed = json.loads(tether(live, "policy", "list", "-o", "json").stdout)
    assert [(v["version"], v["active"]) for v in listed] == [(2, False), (1, True)]
    invalid_apply = tether(live, "policy", "apply", str(bad))
    assert invalid_apply.returncode == exit_codes.INVALID_INPUT


def test_policy_test_runs_cases_offline_and_fails_on_a_wrong_expectation(tmp_path: Path) -> None:
    policies = tmp_path / "policies.cedar"
    policies.write_text(
        '@id("faq-bot-searches")\n'
        'permit (principal == Tether::Agent::"faq-bot", action == Tether::Action::"call_tool", '
        'resource == Tether::Tool::"search_faq");\n'
    )
    tests = tmp_path / "tests"
    tests.mkdir()
    case = (
        "[[case]]\n"
        'name = "faq-bot searches"\n'
        'agent = { name = "faq-bot" }\n'
        'action = "call_tool"\n'
        'expect = "{expect}"\n'
        "[case.resource]\n"
        'type = "Tool"\n'
        'id = "search_faq"\n'
        'properties = { name = "search_faq", data_class = "public", state_changing = false }\n'
    )
    (tests / "faq.toml").write_text(case.replace("{expect}", "allow"))

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tether", "policy", "test", str(policies), str(tests)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "TETHER_ADDR": "http://127.0.0.1:9"},  # no server is needed
        )

    passed = run()
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "1 passed, 0 failed" in passed.stdout
    (tests / "faq.toml").write_text(case.replace("{expect}", "deny"))
    failed = run()
    assert failed.returncode == exit_codes.INVALID_INPUT
    assert "0 passed, 1 failed" in failed.stdout


def test_agent_revoke_tokens_and_an_enforcement_point_token(live: Live) -> None:
    assert tether(live, "agent", "register", "faq-bot", "--owner", "alice").returncode == 0
    agent = tether(live, "agent", "revoke-tokens", "faq-bot", "--reason", "rotate", "-o", "json")
    assert agent.returncode == 0, agent.stderr
    entry = json.loads(agent.stdout)
    assert (entry["kind"], entry["target"], entry["reason"]) == ("agent", "faq-bot", "rotate")
    pod = tether(live, "agent", "revoke-tokens", "faq-bot", "--instance", "pod-1", "-o", "json")
    assert json.loads(pod.stdout)["target"] == "spiffe://acme.org/agent/faq-bot/i/pod-1"
    one = json.loads(
        tether(live, "agent", "revoke-tokens", "--jti", "jti_abc", "-o", "json").stdout
    )
    assert (one["kind"], one["target"]) == ("jti", "jti_abc")
    assert tether(live, "agent", "revoke-tokens").returncode == exit_codes.INVALID_INPUT
    both = tether(live, "agent", "revoke-tokens", "faq-bot", "--jti", "jti_abc")
    assert both.returncode == exit_codes.INVALID_INPUT
    assert tether(live, "agent", "revoke-tokens", "ghost").returncode == exit_codes.NOT_FOUND
    gateway = tether(
        live, "token", "create", "--role", "enforcement-point", "--name", "envoy", "-o", "json"
    )
    assert gateway.returncode == 0, gateway.stderr
    secret = json.loads(gateway.stdout)["token"]
    refused = tether(live, "agent", "revoke-tokens", "faq-bot", token=secret)
    assert refused.returncode == exit_codes.AUTH

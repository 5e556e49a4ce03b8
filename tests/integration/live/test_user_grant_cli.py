"""``tether user``, ``tether grant`` and ``tether client`` against a real server.

One server per module (each CLI call is a subprocess). An operator adds users with their
passwords on standard input; a user signs in through the built-in provider's JSON sign-in
(as a script would) to get their own access token, and with it, as ``TETHER_TOKEN``, consents
to an agent (``tether grant create``). The operator then reads and revokes grants, disables a
user (which revokes their grants) and manages OAuth clients. A password shows nowhere: not in
any command's output, not in the server's log.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tether.cli import exit_codes
from tether.cli._drive import drive
from tether.delegation.flows import FlowError, password_login_flow
from tether.delegation.grants import ACCOUNT_SCOPE

from .conftest import ROOT, ServerProcess, run_cli

AGENT = "faq-bot"


@dataclass
class World:
    server: ServerProcess
    #: Every password handed to the server, to look for everywhere else.
    passwords: dict[str, str] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)


def tether(
    world: World, *args: str, token: str | None = ROOT, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    done = run_cli(world.server.addr, *args, token=token, stdin=stdin)
    world.outputs.append(done.stdout + done.stderr)
    return done


def ok(done: subprocess.CompletedProcess[str]) -> Any:
    """The JSON a command printed, once it succeeded."""
    assert done.returncode == exit_codes.OK, done.stdout + done.stderr
    return json.loads(done.stdout)


def sign_in(addr: str, name: str, password: str) -> str:
    """A person's own access token (their account scope), through the built-in provider's
    sign-in form, driven by the same flow ``tether login --password-stdin`` uses."""
    flow = password_login_flow(
        issuer=addr, username=name, password=password, scope=f"openid {ACCOUNT_SCOPE}"
    )
    with httpx.Client(timeout=30) as http:
        return drive(flow, http).access_token


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("user-grant-cli")
    running = ServerProcess(home / "data", log=home / "server.log")
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def world(server: ServerProcess) -> World:
    world = World(server=server)
    register = ("agent", "register", AGENT, "--owner", "alice", "--tool", "search_faq")
    assert ok(tether(world, *register, "--data-class", "public", "-o", "json"))["state"] == "active"
    return world


def _add_user(world: World, name: str, **extra: str) -> dict[str, Any]:
    password = f"pw-{name}-{secrets.token_urlsafe(16)}"
    world.passwords[name] = password
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in extra.items()]
    add = ("user", "add", name, "--password-stdin", *flags, "-o", "json")
    added: dict[str, Any] = ok(tether(world, *add, stdin=password + "\n"))
    return added


def _consent(world: World, token: str, *, purpose_code: str = "faq-help") -> dict[str, Any]:
    create = ["grant", "create", "--agent", AGENT, "--scope", "faq:read", "--scope", "faq:write"]
    create += ["--purpose", "answer my questions", "--purpose-code", purpose_code]
    grant: dict[str, Any] = ok(tether(world, *create, "--ttl", "600", "-o", "json", token=token))
    return grant


def _no_password_anywhere(world: World) -> None:
    log = world.server.output()
    assert "Tether listening on" in log  # the log is captured: the check below can fail
    for password in world.passwords.values():
        assert all(password not in text for text in (log, *world.outputs))


def test_user_add_reads_the_password_from_stdin_and_never_prints_it(world: World) -> None:
    alice = _add_user(world, "alice", display_name="Alice Example", email="alice@example.com")
    assert (alice["name"], alice["state"], alice["password_set"]) == ("alice", "active", True)
    assert alice["email"] == "alice@example.com"
    table = tether(world, "user", "add", "bob", "--password-stdin", stdin="pw-bob-0123456789\n")
    world.passwords["bob"] = "pw-bob-0123456789"
    assert table.returncode == exit_codes.OK, table.stderr
    assert "password_set" in table.stdout
    listed = ok(tether(world, "user", "list", "-o", "json"))
    assert {"alice", "bob"} <= {u["name"] for u in listed}
    page = ok(tether(world, "user", "list", "--limit", "1", "--after", "alice", "-o", "json"))
    assert [u["name"] for u in page] == ["bob"]
    human = tether(world, "user", "list")
    assert human.returncode == exit_codes.OK
    assert "Alice Example" in human.stdout
    shown = ok(tether(world, "user", "show", "alice", "-o", "json"))
    assert shown["display_name"] == "Alice Example"
    assert "password" not in shown
    assert "active" in tether(world, "user", "show", "alice").stdout
    empty = tether(world, "user", "add", "carol", "--password-stdin", stdin="")
    assert empty.returncode == exit_codes.INVALID_INPUT  # not an empty password sent
    no_flag = tether(world, "user", "passwd", "bob")
    assert no_flag.returncode == exit_codes.INVALID_INPUT
    assert "--password-stdin" in no_flag.stderr
    _no_password_anywhere(world)


def test_a_security_admin_gives_a_person_a_console_role(world: World) -> None:
    added = _add_user(world, "grace", role="auditor")
    assert added["role"] == "auditor"
    given = ok(tether(world, "user", "role", "grace", "developer", "-o", "json"))
    assert (given["name"], given["role"]) == ("grace", "developer")
    table = tether(world, "user", "list")
    assert "role" in table.stdout
    assert "developer" in next(line for line in table.stdout.splitlines() if "grace" in line)
    taken = ok(tether(world, "user", "role", "grace", "--none", "-o", "json"))
    assert taken["role"] is None
    listed = ok(tether(world, "user", "list", "-o", "json"))
    assert {u["name"]: u["role"] for u in listed}["grace"] is None


def test_a_person_cannot_be_given_the_root_role(world: World) -> None:
    _add_user(world, "heidi")
    for args in (("user", "role", "heidi", "root"), ("user", "add", "ivan", "--role", "root")):
        refused = tether(world, *args)
        assert refused.returncode == exit_codes.INVALID_INPUT, refused.stdout + refused.stderr
        assert "console role" in refused.stderr
    both = tether(world, "user", "role", "heidi", "auditor", "--none")
    neither = tether(world, "user", "role", "heidi")
    assert both.returncode == neither.returncode == exit_codes.USAGE
    assert ok(tether(world, "user", "show", "heidi", "-o", "json"))["role"] is None
    assert tether(world, "user", "show", "ivan").returncode == exit_codes.NOT_FOUND


def test_passwd_sets_a_password_the_user_then_signs_in_with(world: World) -> None:
    _add_user(world, "dave")
    new = "dave-new-password-" + secrets.token_urlsafe(8)
    world.passwords["dave-new"] = new
    changed = ok(
        tether(world, "user", "passwd", "dave", "--password-stdin", "-o", "json", stdin=new + "\n")
    )
    assert changed["password_set"] is True
    assert sign_in(world.server.addr, "dave", new)
    with pytest.raises(FlowError):
        sign_in(world.server.addr, "dave", world.passwords["dave"])  # the old one no longer
    _no_password_anywhere(world)


def test_grants_are_created_by_the_user_and_read_and_revoked_by_the_operator(
    world: World,
) -> None:
    _add_user(world, "erin")
    token = sign_in(world.server.addr, "erin", world.passwords["erin"])
    grant = _consent(world, token)
    assert (grant["user"], grant["agent"], grant["state"]) == ("erin", AGENT, "active")
    assert grant["scopes"] == ["faq:read", "faq:write"]
    second = _consent(world, token, purpose_code="faq-more")
    operator = tether(
        world,
        "grant",
        "create",
        "--agent",
        AGENT,
        "--scope",
        "faq:read",
        "--purpose",
        "p",
        "--purpose-code",
        "p",
    )
    assert operator.returncode == exit_codes.AUTH  # consent is the user's, never an admin's
    mine = ok(tether(world, "grant", "list", "-o", "json", token=token))
    assert {g["id"] for g in mine} == {grant["id"], second["id"]}
    table = tether(world, "grant", "list", "--user", "erin")
    assert table.returncode == exit_codes.OK
    assert "faq:read faq:write" in table.stdout
    assert ok(tether(world, "grant", "show", grant["id"], "-o", "json"))["purpose"] == (
        "answer my questions"
    )
    revoke = ("grant", "revoke", grant["id"], "--reason", "done", "-o", "json")
    revoked = ok(tether(world, *revoke))
    assert (revoked["state"], revoked["revoke_reason"]) == ("revoked", "done")
    in_force = ok(tether(world, "grant", "list", "--user", "erin", "--in-force", "-o", "json"))
    assert [g["id"] for g in in_force] == [second["id"]]
    bulk = ok(
        tether(world, "grant", "revoke-all", "--user", "erin", "--agent", AGENT, "-o", "json")
    )
    assert (bulk["count"], [g["id"] for g in bulk["revoked"]]) == (1, [second["id"]])
    again = tether(world, "grant", "revoke-all", "--user", "erin")
    assert again.returncode == exit_codes.OK
    _no_password_anywhere(world)


def test_disabling_a_user_revokes_their_grants(world: World) -> None:
    _add_user(world, "frank")
    token = sign_in(world.server.addr, "frank", world.passwords["frank"])
    grant = _consent(world, token)
    disabled = ok(tether(world, "user", "disable", "frank", "-o", "json"))
    assert (disabled["state"], disabled["disabled_at"] is not None) == ("disabled", True)
    after = ok(tether(world, "grant", "show", grant["id"], "-o", "json"))
    assert (after["state"], after["revoke_reason"]) == ("revoked", "user disabled")
    refused = tether(world, "grant", "list", token=token)
    assert refused.returncode == exit_codes.AUTH
    enabled = ok(tether(world, "user", "enable", "frank", "-o", "json"))
    assert enabled["state"] == "active"
    still = ok(tether(world, "grant", "list", "--user", "frank", "--in-force", "-o", "json"))
    assert still == []  # enabling does not bring grants back


def test_client_add_list_remove(world: World) -> None:
    add = ["client", "add", "shop-web", "--name", "Shop", "--agent", AGENT]
    add += ["--redirect-uri", "https://shop.example/cb", "--redirect-uri", "http://127.0.0.1/cb"]
    added = ok(tether(world, *add, "-o", "json"))
    assert added["redirect_uris"] == ["https://shop.example/cb", "http://127.0.0.1/cb"]
    assert (added["agent"], added["token_endpoint_auth_method"]) == (AGENT, "none")
    listed = ok(tether(world, "client", "list", "-o", "json"))
    assert {"tether-cli", "shop-web"} <= {c["client_id"] for c in listed}
    table = tether(world, "client", "list")
    assert "https://shop.example/cb http://127.0.0.1/cb" in table.stdout
    twice = tether(world, *add)
    assert twice.returncode == exit_codes.CONFLICT, twice.stdout + twice.stderr
    plain = tether(world, "client", "add", "bad-web", "--redirect-uri", "http://shop.example/cb")
    assert plain.returncode == exit_codes.INVALID_INPUT
    assert ok(tether(world, "client", "remove", "shop-web", "-o", "json")) == {
        "removed": "shop-web"
    }
    gone = tether(world, "client", "remove", "shop-web")
    assert gone.returncode == exit_codes.NOT_FOUND


def test_errors_have_the_documented_exit_codes(world: World) -> None:
    assert tether(world, "user", "show", "nobody").returncode == exit_codes.NOT_FOUND
    assert tether(world, "user", "disable", "nobody").returncode == exit_codes.NOT_FOUND
    assert tether(world, "grant", "show", "grt_" + "a" * 26).returncode == exit_codes.NOT_FOUND
    unfiltered = tether(world, "grant", "revoke-all", "--reason", "everything")
    assert unfiltered.returncode == exit_codes.USAGE
    assert "--user" in unfiltered.stderr
    no_scope = tether(
        world, "grant", "create", "--agent", AGENT, "--purpose", "p", "--purpose-code", "p"
    )
    assert no_scope.returncode == exit_codes.USAGE  # typer: a required option is missing
    no_token = tether(world, "user", "list", token=None)
    assert no_token.returncode == exit_codes.AUTH

"""``tether mcp`` against a real ``tether serve`` on loopback and real upstream MCP servers.

One server per module (each CLI call is a subprocess); every MCP server a test added is
removed after it (a tool approved on one MCP server makes the same name wait on another:
tests would otherwise see each other's tools). The upstream is the test server
``tests/support/mcp_upstream.py``: over stdio, started by Tether as ``--command``, or over
streamable HTTP in a process of its own, whose ``add`` tool takes the description the test
writes to its ``MUTATE_FILE``.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.mcp.conftest import upstream_process
from tether.cli import exit_codes

from .conftest import ROOT, Live, _start, free_port, run_cli

UPSTREAM = Path(__file__).resolve().parents[2] / "support" / "mcp_upstream.py"
STDIO = shlex.join([sys.executable, str(UPSTREAM), "stdio"])
TOOLS = ["add", "whoami", "transfer", "delete_all"]
#: A digest no definition has.
WRONG = "sha256:" + "0" * 64


def tether(
    live: Live, *args: str, token: str | None = ROOT, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return run_cli(live.addr, *args, token=token, stdin=stdin)


def ok(done: subprocess.CompletedProcess[str]) -> Any:
    """The JSON a command printed, once it succeeded."""
    assert done.returncode == exit_codes.OK, done.stdout + done.stderr
    return json.loads(done.stdout)


def refused(done: subprocess.CompletedProcess[str], code: int, error: str) -> None:
    """The command failed with exit ``code``, saying ``error`` (its stable code or message)."""
    assert done.returncode == code, done.stdout + done.stderr
    assert error in done.stderr, done.stderr


def api(live: Live, path: str) -> Any:
    """What the API answers to ``GET path``, as root."""
    with live.ops() as ops:
        answer = ops.get(path)
    assert answer.status_code == 200, answer.text
    return answer.json()


def cells(out: str, first: str) -> list[str]:
    """The cells of the one table row whose first cell is ``first``."""
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines()]
    [found] = [row for row in rows if row and row[0] == first]
    return found


def facts(out: str) -> dict[str, str]:
    """What a key/value table printed: each key and the first line of its value."""
    pairs = [line.split(maxsplit=1) for line in out.splitlines()]
    return {pair[0]: pair[1].strip() for pair in pairs if len(pair) == 2}


def add_with_a_credential(live: Live, name: str) -> None:
    """Add ``name`` through the API: a server that takes a credential is not reached now."""
    body = {"name": name, "url": f"https://{name}.example/mcp",
            "credential": {"engine": "vault-main", "role": "api"}}  # fmt: skip
    with live.ops() as ops:
        added = ops.post("/v1/mcp/servers", json=body)
    assert added.status_code == 201, added.text


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    yield from _start(tmp_path_factory.mktemp("mcp-cli"))


@pytest.fixture(autouse=True)
def no_servers_left(live: Live) -> Iterator[None]:
    """Each test starts and leaves with no MCP server registered."""
    yield
    with live.ops() as ops:
        for server in ops.get("/v1/mcp/servers").json()["servers"]:
            removed = ops.delete(f"/v1/mcp/servers/{server['name']}")
            assert removed.status_code == 200, removed.text


@dataclass
class HttpUpstream:
    url: str
    mutate: Path


@pytest.fixture
def http_upstream(tmp_path: Path) -> Iterator[HttpUpstream]:
    """The test upstream over streamable HTTP, in a process of its own, on a free port."""
    mutate = tmp_path / "mutate.txt"
    with upstream_process({**os.environ, "MUTATE_FILE": str(mutate)}) as url:
        yield HttpUpstream(url=url, mutate=mutate)


def test_mcp_add_pins_the_tools_it_lists(live: Live) -> None:
    added = ok(tether(live, "mcp", "add", "local", "--command", STDIO, "-o", "json"))
    assert (added["name"], added["transport"]) == ("local", "stdio")
    assert added["command"] == [sys.executable, str(UPSTREAM), "stdio"]
    assert [t["tool"] for t in added["tools"]] == sorted(TOOLS)
    for pin in added["tools"]:
        assert (pin["state"], pin["usable"], pin["reason"]) == ("approved", True, None)
        assert pin["digest"] == pin["seen_digest"]
        assert pin["approved_by"]
    table = tether(live, "mcp", "show", "local")
    assert table.returncode == exit_codes.OK, table.stderr
    add = next(t for t in added["tools"] if t["tool"] == "add")
    # The approved row's first line: who approved it (when is on the next line).
    _, state, reason, digest, seen, by, description = cells(table.stdout, "add")
    assert (state, reason, by, description) == ("approved", "", "operator:root", "Add two numbers.")
    assert digest == seen == add["digest"][: len("sha256:") + 8]
    assert "Waiting for review" not in table.stdout


def test_mcp_add_reaches_an_http_server_with_an_allow_list(
    live: Live, http_upstream: HttpUpstream
) -> None:
    added = tether(
        live, "mcp", "add", "tools", "--url", http_upstream.url,
        "--allow-tool", "add", "--allow-tool", "whoami",
    )  # fmt: skip
    assert added.returncode == exit_codes.OK, added.stderr
    assert cells(added.stdout, "whoami")[1] == "approved"
    assert "transfer" not in added.stdout  # not on the allow-list: never pinned
    shown = api(live, "/v1/mcp/servers/tools")
    assert shown["allowed_tools"] == ["add", "whoami"]
    assert [t["tool"] for t in shown["tools"]] == ["add", "whoami"]
    listed = tether(live, "mcp", "list")
    assert listed.returncode == exit_codes.OK, listed.stderr
    assert cells(listed.stdout, "tools") == ["tools", "http", http_upstream.url, "", "2"]


def test_mcp_add_needs_exactly_one_of_url_and_command(live: Live) -> None:
    both = ("mcp", "add", "crm", "--url", "http://127.0.0.1:9/mcp", "--command", STDIO)
    refused(tether(live, *both), exit_codes.INVALID_INPUT, "exactly one of --url")
    refused(tether(live, "mcp", "add", "crm"), exit_codes.INVALID_INPUT, "exactly one of --url")
    unbalanced = ("mcp", "add", "crm", "--command", "python 'server.py")
    refused(tether(live, *unbalanced), exit_codes.INVALID_INPUT, "--command")
    assert api(live, "/v1/mcp/servers")["servers"] == []


def test_mcp_add_places_a_credential_where_the_transport_takes_it(live: Live) -> None:
    # A server that takes a credential is listed first by an agent: nothing is reached now.
    url = "https://crm.example/mcp"
    cred = ("--credential-engine", "vault-main", "--credential-role", "crm-api")
    half = ("mcp", "add", "crm", "--url", url, "--credential-engine", "vault-main")
    refused(tether(live, *half), exit_codes.INVALID_INPUT, "together")
    no_env = ("mcp", "add", "files", "--command", STDIO, *cred)
    refused(tether(live, *no_env), exit_codes.INVALID_INPUT, "--env")
    http = ok(tether(live, "mcp", "add", "crm", "--url", url, *cred, "--prefix", "", "-o", "json"))
    assert http["credential"] == {
        "engine": "vault-main", "role": "crm-api", "header": "Authorization", "prefix": "",
        "env": None,
    }  # fmt: skip
    assert http["tools"] == []
    stdio = ("mcp", "add", "files", "--command", STDIO, *cred, "--env", "UPSTREAM_TOKEN")
    shown = tether(live, *stdio)
    assert shown.returncode == exit_codes.OK, shown.stderr
    assert "vault-main/crm-api (env UPSTREAM_TOKEN)" in shown.stdout
    assert "when an agent first calls it" in shown.stdout
    assert api(live, "/v1/mcp/servers/files")["credential"]["env"] == "UPSTREAM_TOKEN"


def test_mcp_approve_tool_refuses_a_stale_digest(live: Live, http_upstream: HttpUpstream) -> None:
    # An invisible character in the definition: the tool waits for a person at add time.
    http_upstream.mutate.write_text("Add two numbers.\u200b", encoding="utf-8")
    added = tether(live, "mcp", "add", "tools", "--url", http_upstream.url)
    assert added.returncode == exit_codes.OK, added.stderr
    _, state, reason, _, description = cells(added.stdout, "add")
    assert (state, description) == ("pending", "Add two numbers.<U+200B>")
    assert "invisible" in reason
    seen = next(t for t in api(live, "/v1/mcp/servers/tools")["tools"] if t["tool"] == "add")[
        "seen_digest"
    ]
    assert f"tether mcp approve-tool tools add --digest {seen}" in added.stdout
    stale = tether(live, "mcp", "approve-tool", "tools", "add", "--digest", WRONG)
    refused(stale, exit_codes.CONFLICT, "version_conflict")
    approved = tether(live, "mcp", "approve-tool", "tools", "add", "--digest", seen)
    assert approved.returncode == exit_codes.OK, approved.stderr
    assert facts(approved.stdout)["state"] == "approved"
    assert f"pinned {seen}" in approved.stdout
    pin = next(t for t in api(live, "/v1/mcp/servers/tools")["tools"] if t["tool"] == "add")
    assert (pin["state"], pin["digest"], pin["usable"]) == ("approved", seen, True)


def test_mcp_remove_asks_first(live: Live) -> None:
    add_with_a_credential(live, "crm")
    add_with_a_credential(live, "erp")
    declined = tether(live, "mcp", "remove", "crm", stdin="n\n")
    refused(declined, exit_codes.ERROR, "not removed")
    assert "Remove MCP server crm (https://crm.example/mcp)" in declined.stderr
    unanswered = tether(live, "mcp", "remove", "crm")  # end of input: no
    refused(unanswered, exit_codes.ERROR, "not removed")
    assert [s["name"] for s in api(live, "/v1/mcp/servers")["servers"]] == ["crm", "erp"]
    removed = ok(tether(live, "mcp", "remove", "crm", "-o", "json", stdin="y\n"))
    assert removed == {"removed": "crm"}
    assert ok(tether(live, "mcp", "remove", "erp", "--yes", "-o", "json")) == {"removed": "erp"}
    assert api(live, "/v1/mcp/servers")["servers"] == []


def test_mcp_output_json_round_trips(live: Live) -> None:
    added = ok(tether(live, "mcp", "add", "local", "--command", STDIO, "-o", "json"))
    shown = ok(tether(live, "mcp", "show", "local", "-o", "json"))
    assert added == shown == api(live, "/v1/mcp/servers/local")
    listed = ok(tether(live, "mcp", "list", "-o", "json"))
    assert listed == api(live, "/v1/mcp/servers")["servers"]
    assert listed == [{k: v for k, v in shown.items() if k != "tools"}]
    pin = shown["tools"][0]
    again = (
        "mcp",
        "approve-tool",
        "local",
        pin["tool"],
        "--digest",
        pin["seen_digest"],
        "-o",
        "json",
    )
    approved = ok(tether(live, *again))
    after = api(live, "/v1/mcp/servers/local")
    assert approved == next(t for t in after["tools"] if t["tool"] == pin["tool"])


def test_mcp_errors_map_to_exit_codes(live: Live) -> None:
    refused(tether(live, "mcp", "show", "nothing"), exit_codes.NOT_FOUND, "mcp_server_not_found")
    bad = ("mcp", "add", "Bad_Name", "--url", "https://x.example/mcp")
    refused(tether(live, *bad), exit_codes.INVALID_INPUT, "invalid_input")
    add_with_a_credential(live, "crm")
    again = ("mcp", "add", "crm", "--url", "https://crm.example/mcp")
    refused(tether(live, *again), exit_codes.CONFLICT, "mcp_server_exists")
    nowhere = f"http://127.0.0.1:{free_port()}/mcp"  # no one listens there: not added
    unreachable = tether(live, "mcp", "add", "gone", "--url", nowhere)
    refused(unreachable, exit_codes.UNAVAILABLE, "engine_unavailable")
    assert [s["name"] for s in api(live, "/v1/mcp/servers")["servers"]] == ["crm"]


def test_mcp_show_escapes_markup_in_tool_descriptions(
    live: Live, http_upstream: HttpUpstream
) -> None:
    # Only visible characters: approved as the server is added.
    text = "[bold red]x[/] adds [link=https://evil.example]a[/link]\na second line [conceal]b[/]"
    http_upstream.mutate.write_text(text, encoding="utf-8")
    added = tether(live, "mcp", "add", "tools", "--url", http_upstream.url)
    assert added.returncode == exit_codes.OK, added.stderr
    shown = tether(live, "mcp", "show", "tools")
    assert shown.returncode == exit_codes.OK, shown.stderr
    for out in (added.stdout, shown.stdout):
        row = cells(out, "add")
        assert (row[1], row[-1]) == (
            "approved",
            "[bold red]x[/] adds [link=https://evil.example]a[/link]…",
        )
        assert "second line" not in out
        assert "\x1b" not in out


def test_mcp_add_shows_control_characters_of_a_description(
    live: Live, http_upstream: HttpUpstream
) -> None:
    # ESC would start a terminal escape sequence (here: clear the screen); it is shown instead.
    http_upstream.mutate.write_text("\x1b[2J\x1b[31mAdd two numbers.", encoding="utf-8")
    added = tether(live, "mcp", "add", "tools", "--url", http_upstream.url)
    assert added.returncode == exit_codes.OK, added.stderr
    assert "\x1b" not in added.stdout
    row = cells(added.stdout, "add")
    assert (row[1], row[-1]) == ("pending", "<U+001B>[2J<U+001B>[31mAdd two numbers.")

"""How ``tether`` reports the server's errors: the message as text, the short details the
server sent, and a hint chosen by the error's code and the command group it concerns."""

from __future__ import annotations

import io
import re
from typing import Any

import httpx
import pytest
import typer
from rich.console import Console

from tether.cli import client, exit_codes
from tether.cli.client import Api, fail, hint_for
from tether.config import ClientSettings

ADDR = "http://tether.test"
DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def stderr(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """What the CLI prints on stderr, as to a terminal (rich styling included), 80 wide."""
    file = io.StringIO()
    console = Console(file=file, force_terminal=True, width=80, color_system="truecolor")
    monkeypatch.setattr(client, "err", console)
    return file


def answering(status: int, body: Any) -> Api:
    """An ``Api`` whose server answers every request with ``status`` and JSON ``body``."""
    api = Api(ClientSettings(addr=ADDR, token="t"))
    transport = httpx.MockTransport(lambda request: httpx.Response(status, json=body))
    api._client = httpx.Client(base_url=ADDR, transport=transport)
    return api


def error(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def refused(api: Api, method: str, path: str) -> int:
    """The exit code calling ``path`` ends the command with."""
    with pytest.raises(typer.Exit) as raised, api:
        api.call(method, path)
    return raised.value.exit_code


def seen(stderr: io.StringIO) -> str:
    """What was printed, without rich's own styling (SGR sequences: bold, colours)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", stderr.getvalue())


def hint(stderr: io.StringIO) -> str:
    [line] = [line for line in seen(stderr).splitlines() if line.startswith("hint: ")]
    return line.removeprefix("hint: ")


# -- hints by error code and command group ----------------------------------------------------


def test_a_missing_mcp_server_is_looked_for_among_mcp_servers(stderr: io.StringIO) -> None:
    api = answering(404, error("mcp_server_not_found", "no MCP server 'crm'"))
    assert refused(api, "GET", "/v1/mcp/servers/crm") == exit_codes.NOT_FOUND
    assert "`tether mcp list`" in hint(stderr)
    assert "agent" not in hint(stderr)


def test_an_existing_mcp_server_is_shown_with_mcp_show(stderr: io.StringIO) -> None:
    api = answering(409, error("mcp_server_exists", "an MCP server named 'crm' exists"))
    assert refused(api, "POST", "/v1/mcp/servers") == exit_codes.CONFLICT
    assert "`tether mcp show NAME`" in hint(stderr)
    assert "agent" not in hint(stderr)


def test_an_upstream_mcp_server_down_is_not_the_tether_server_down(stderr: io.StringIO) -> None:
    api = answering(503, error("engine_unavailable", "the MCP server 'gone' cannot be reached"))
    assert refused(api, "POST", "/v1/mcp/servers") == exit_codes.UNAVAILABLE
    assert "upstream MCP server" in hint(stderr)
    assert "tether serve" not in hint(stderr)
    assert "TETHER_ADDR" not in hint(stderr)


def test_a_credential_engine_down_is_not_the_tether_server_down(stderr: io.StringIO) -> None:
    api = answering(503, error("engine_unavailable", "the database cannot be reached"))
    assert refused(api, "POST", "/v1/leases") == exit_codes.UNAVAILABLE
    assert "credential engine" in hint(stderr)
    assert "tether serve" not in hint(stderr)


def test_the_tether_server_unreachable_is_still_to_be_started(stderr: io.StringIO) -> None:
    api = Api(ClientSettings(addr=ADDR, token="t"))

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    api._client = httpx.Client(base_url=ADDR, transport=httpx.MockTransport(down))
    assert refused(api, "GET", "/v1/mcp/servers") == exit_codes.UNAVAILABLE
    assert hint(stderr) == exit_codes.REMEDY[exit_codes.UNAVAILABLE]


@pytest.mark.parametrize("code", ["store_unavailable", "audit_unavailable"])
def test_a_server_that_answered_unavailable_is_not_to_be_started(
    stderr: io.StringIO, code: str
) -> None:
    api = answering(503, error(code, "the service is temporarily unavailable"))
    assert refused(api, "GET", "/v1/agents") == exit_codes.UNAVAILABLE
    assert "tether serve" not in hint(stderr)
    assert "try again" in hint(stderr)


def test_a_stale_digest_shows_the_digest_the_server_saw(stderr: io.StringIO) -> None:
    message = "the tool's definition changed since you looked: review it again"
    api = answering(409, error("version_conflict", message, {"seen_digest": DIGEST}))
    assert refused(api, "POST", "/v1/mcp/servers/crm/tools/search/approve") == 5
    out = stderr.getvalue()
    # On one line, whole, though wider than the terminal: it is to be copied.
    [line] = [line for line in out.splitlines() if "version_conflict" in line]
    assert line.endswith(f"{message} (seen_digest: {DIGEST})")
    assert "`tether mcp show NAME --output json`" in hint(stderr)
    assert "agent" not in hint(stderr)


@pytest.mark.parametrize(
    ("exit_code", "code", "group", "expected"),
    [
        # The exit code's hint where it fits: agents, values, tokens.
        (4, "agent_not_found", "agent", exit_codes.REMEDY[4]),
        (5, "agent_exists", "agent", exit_codes.REMEDY[5]),
        (5, "invalid_state_transition", "agent", exit_codes.REMEDY[5]),
        (3, "invalid_input", "mcp", exit_codes.REMEDY[3]),
        (6, "forbidden", "mcp", exit_codes.REMEDY[6]),
        (6, "unauthenticated", None, exit_codes.REMEDY[6]),
        (7, None, None, exit_codes.REMEDY[7]),
        (1, "internal_error", "mcp", None),
        # The error's own group, whatever the command: a lease issued from a missing engine.
        (4, "engine_not_found", "lease", "check the name: `tether engine list` shows what exists"),
        (4, "not_found", "user", "check the name: `tether user list` shows what exists"),
        (4, "lease_not_found", "lease", "check the name: `tether lease list` shows what exists"),
        (5, "user_exists", "user",
         "the object exists or is in another state: `tether user show NAME`"),
        (5, "conflict", "client", "the object exists or is in another state: `tether client list`"),
        (5, "version_conflict", "grant",
         "it changed meanwhile: look again (`tether grant show ID`) and retry"),
        (4, "audit_record_not_found", "audit",
         "check the id: `tether audit query` shows the records"),
        (4, "key_not_found", "agent",
         "check the key id: `tether agent key list NAME` shows an agent's keys"),
    ],
)  # fmt: skip
def test_the_hint_per_error_code(
    exit_code: int, code: str | None, group: str | None, expected: str | None
) -> None:
    assert hint_for(exit_code, code, group) == expected


@pytest.mark.parametrize(
    ("exit_code", "code", "group"),
    [
        (4, "mcp_server_not_found", "mcp"),
        (5, "mcp_server_exists", "mcp"),
        (5, "version_conflict", "mcp"),
        (7, "engine_unavailable", "mcp"),
        (7, "engine_unavailable", "lease"),
        (7, "store_unavailable", "mcp"),
        (7, "audit_unavailable", "agent"),
        (7, "audit_log_invalid", "agent"),
        (4, "policy_set_not_found", "policy"),
        (4, "approval_not_found", "approval"),
        (4, "not_found", "audit"),
    ],
)
def test_no_hint_sends_a_user_to_the_wrong_place(exit_code: int, code: str, group: str) -> None:
    found = hint_for(exit_code, code, group)
    assert found is not None
    assert found != exit_codes.REMEDY[exit_code]
    assert "tether agent" not in found
    assert "tether serve" not in found


# -- the message and its details ----------------------------------------------------------------


def test_the_rule_is_printed_once(stderr: io.StringIO) -> None:
    body = error("invalid_name", "agent name must be lowercase", {"rule": "lowercase"})
    assert refused(answering(400, body), "POST", "/v1/agents") == exit_codes.INVALID_INPUT
    assert "invalid_name: agent name must be lowercase\n" in stderr.getvalue()
    body = error("invalid_input", "ttl: too big", {"field": "ttl", "rule": "at most 3600"})
    refused(answering(400, body), "POST", "/v1/leases")
    assert "invalid_input: ttl: too big (rule: at most 3600)\n" in stderr.getvalue()


def test_only_short_string_details_with_plain_names_are_printed(stderr: io.StringIO) -> None:
    details = {
        "rule": "at most 20 owners",
        "from": "active",
        "secret": "s3cr3t",
        "password_hint": "hunter2",
        "token_id": "tok-1",
        "admin_credential": "postgres://u:p@db",
        "long": "x" * 101,
        "count": 3,
        "reasons": ["a", "b"],
        "nested": {"rule": "deep"},
        "Bad Name": "shown?",
        "empty": "",
    }
    refused(answering(409, error("conflict", "no", details)), "POST", "/v1/agents")
    [line] = [line for line in stderr.getvalue().splitlines() if "conflict: no" in line]
    assert line.endswith("conflict: no (rule: at most 20 owners; from: active)")


@pytest.mark.parametrize("details", [None, "a string", ["a list"]])
def test_details_of_any_shape_do_not_break_the_report(stderr: io.StringIO, details: Any) -> None:
    body = {"error": {"code": "conflict", "message": "no", "details": details}}
    assert refused(answering(409, body), "POST", "/v1/agents") == exit_codes.CONFLICT
    assert "conflict: no\n" in stderr.getvalue()


def test_terminal_escape_in_an_error_message_is_shown_not_executed(stderr: io.StringIO) -> None:
    message = "no agent \x1b[2J\x1b]8;;https://evil.example\x1b\\x\x9b\x07\x08\r\u202e"
    details = {"rule": "\x1b]0;title\x07"}
    refused(answering(404, error("agent_not_found", message, details)), "GET", "/v1/agents/x")
    out = stderr.getvalue()
    for raw in ("\x1b[2J", "\x1b]", "\x9b", "\x07", "\x08", "\r", "\u202e"):
        assert raw not in out
    assert "<U+001B>[2J<U+001B>]8;;https://evil.example<U+001B>\\x<U+009B>" in out
    assert "<U+0007><U+0008><U+000D><U+202E> (rule: <U+001B>]0;title<U+0007>)" in out


def test_markup_in_an_error_message_is_printed_literally(stderr: io.StringIO) -> None:
    message = "[conceal]hidden[/] [link=https://evil.example]x[/link]"
    refused(answering(400, error("invalid_input", message)), "POST", "/v1/agents")
    assert f"invalid_input: {message}" in stderr.getvalue()
    assert "\x1b]8;" not in stderr.getvalue()


def test_an_oauth_error_is_reported_with_its_description(stderr: io.StringIO) -> None:
    body = {"error": "invalid_client", "error_description": "\x1b[2Jbad"}
    assert refused(answering(401, body), "POST", "/oauth2/token") == exit_codes.AUTH
    assert "invalid_client: <U+001B>[2Jbad" in stderr.getvalue()
    assert hint(stderr) == exit_codes.REMEDY[exit_codes.AUTH]


def test_a_local_failure_keeps_its_lines_and_brackets(stderr: io.StringIO) -> None:
    with pytest.raises(typer.Exit):
        fail("pip install 'tether[server]'\nsecond line", exit_codes.INVALID_INPUT)
    out = stderr.getvalue()
    assert "pip install 'tether[server]'\nsecond line" in out
    assert hint(stderr) == exit_codes.REMEDY[exit_codes.INVALID_INPUT]

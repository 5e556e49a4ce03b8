"""What ``tether`` prints of the server's words outside tables: text, never terminal control or
markup — ``policy show``/``diff``/``schema``/``validate``/``replay``, ``audit trace`` and
``demo``.

Each command runs against a fake ``Api`` (``demo``'s lines are printed through its ``Show``) and
prints through a real rich console into a buffer, which holds exactly what the terminal (or a
pipe) would get.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import typer
from rich.console import Console

from tether.cli import output
from tether.cli.commands import audit, policy
from tether.cli.demo._show import DemoFailed, Show
from tether.cli.exit_codes import INVALID_INPUT
from tether.cli.output import Output

from .test_output import ATTACKS


class FakeApi:
    """``Api``'s answers, by path, with no server."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers

    def __enter__(self) -> FakeApi:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.answers[path]

    raw = call


def answer(monkeypatch: pytest.MonkeyPatch, module: Any, answers: dict[str, Any]) -> None:
    api = FakeApi(answers)
    monkeypatch.setattr(module, "_api", lambda **_: api)


def _console(monkeypatch: pytest.MonkeyPatch, *, force_terminal: bool) -> Console:
    console = Console(
        file=io.StringIO(),
        force_terminal=force_terminal,
        width=240,
        color_system="truecolor" if force_terminal else None,
    )
    for module in (output, policy, audit):
        monkeypatch.setattr(module, "console", console)
    return console


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Console:
    """The console every command prints to, as if to a terminal."""
    return _console(monkeypatch, force_terminal=True)


@pytest.fixture
def plain(monkeypatch: pytest.MonkeyPatch) -> Console:
    """The console every command prints to, as if to a pipe (no styling at all)."""
    return _console(monkeypatch, force_terminal=False)


def printed(console: Console) -> str:
    file = console.file
    assert isinstance(file, io.StringIO)
    return file.getvalue()


def assert_shown_not_executed(out: str, attack: tuple[str, str, str], times: int) -> None:
    _, raw, shown = attack
    assert raw not in out
    assert out.count(shown) == times, out
    for control in ("\x07", "\x08", "\r", "\x9b", "\x7f", "\u202e", "\u2066", "\u200b"):
        assert control not in out


ATTACK_PARAMS = pytest.mark.parametrize("attack", ATTACKS.values(), ids=list(ATTACKS))

# --- tether policy ---------------------------------------------------------------------------


@ATTACK_PARAMS
def test_policy_text_with_terminal_escapes_is_shown_not_executed(
    monkeypatch: pytest.MonkeyPatch, terminal: Console, attack: tuple[str, str, str]
) -> None:
    value = attack[0]
    text = f'// {value}\n@id("{value}")\npermit (principal, action, resource);\n'
    answer(monkeypatch, policy, {"/v1/policies/active": {"version": 1, "text": text}})
    policy.show_version(None, Output.TABLE)
    assert_shown_not_executed(printed(terminal), attack, 2)


def test_policy_text_prints_line_by_line_as_written(
    monkeypatch: pytest.MonkeyPatch, plain: Console
) -> None:
    text = (
        "// [bold]not markup[/] :warning: [allow]\r\n"
        '@id("faq")\n'
        "permit (\n"
        "\tprincipal,\n"
        "    action,  resource\n"
        ");\n"
    )
    answer(monkeypatch, policy, {"/v1/policies/3": {"version": 3, "text": text}})
    policy.show_version(3, Output.TABLE)
    lines = printed(plain).splitlines()
    assert lines[-7:] == [
        "// [bold]not markup[/] :warning: [allow]",  # no markup, no emoji, no CR
        '@id("faq")',
        "permit (",
        "        principal,",  # a tab to the next tab stop, as before
        "    action,  resource",
        ");",
        "",  # the text's final line break, as before
    ]


@ATTACK_PARAMS
def test_policy_diff_with_terminal_escapes_is_shown_not_executed(
    monkeypatch: pytest.MonkeyPatch, terminal: Console, attack: tuple[str, str, str]
) -> None:
    value = attack[0]
    diff = f'--- v1\n+++ v2\n-// old\n+// {value}\n+@id("{value}")\n'
    answer(monkeypatch, policy, {"/v1/policies/diff": {"diff": diff}})
    policy.diff(1, 2, Output.TABLE)
    assert_shown_not_executed(printed(terminal), attack, 2)


def test_policy_diff_prints_line_by_line_as_written(
    monkeypatch: pytest.MonkeyPatch, plain: Console
) -> None:
    diff = '--- v1\n+++ v2\n@@ -1 +1,2 @@\n [bold]kept[/]\n+@id("faq-bot-queries")\n'
    answer(monkeypatch, policy, {"/v1/policies/diff": {"diff": diff}})
    policy.diff(1, 2, Output.TABLE)
    assert printed(plain).splitlines() == [*diff.splitlines(), ""]


def test_policy_diff_of_equal_versions_says_so(
    monkeypatch: pytest.MonkeyPatch, plain: Console
) -> None:
    answer(monkeypatch, policy, {"/v1/policies/diff": {"diff": ""}})
    policy.diff(1, 1, Output.TABLE)
    assert printed(plain) == "(no difference)\n"


@ATTACK_PARAMS
def test_policy_validation_errors_with_terminal_escapes_are_shown_not_executed(
    monkeypatch: pytest.MonkeyPatch,
    terminal: Console,
    tmp_path: Path,
    attack: tuple[str, str, str],
) -> None:
    value = attack[0]
    path = tmp_path / "bad.cedar"
    path.write_text('permit (principal, action == Tether::Action::"fly", resource);\n')
    errors = [f"unrecognized action {value}", f"in policy {value}"]
    answer(monkeypatch, policy, {"/v1/policies/check": {"valid": False, "errors": errors}})
    with pytest.raises(typer.Exit) as exited:
        policy.validate(path, Output.TABLE)
    assert exited.value.exit_code == INVALID_INPUT
    assert_shown_not_executed(printed(terminal), attack, 2)


def test_policy_validation_errors_print_brackets_literally(
    monkeypatch: pytest.MonkeyPatch, plain: Console, tmp_path: Path
) -> None:
    path = tmp_path / "bad.cedar"
    path.write_text("permit (principal, action, resource)\n")
    errors = ["[red]unexpected end of input[/]", 'expected one of ["permit", "forbid"]']
    answer(monkeypatch, policy, {"/v1/policies/check": {"valid": False, "errors": errors}})
    with pytest.raises(typer.Exit):
        policy.validate(path, Output.TABLE)
    assert printed(plain).splitlines() == [f"✗ {e}" for e in errors]


@ATTACK_PARAMS
def test_policy_schema_with_terminal_escapes_is_shown_not_executed(
    monkeypatch: pytest.MonkeyPatch, terminal: Console, attack: tuple[str, str, str]
) -> None:
    value = attack[0]
    schema = f"namespace Tether {{\n  // {value}\n  entity Agent;\n}}\n"
    answer(monkeypatch, policy, {"/v1/policies/schema": schema})
    policy.schema()
    assert_shown_not_executed(printed(terminal), attack, 1)


def test_policy_replay_summary_with_terminal_escapes_is_shown_not_executed(
    monkeypatch: pytest.MonkeyPatch, terminal: Console, tmp_path: Path
) -> None:
    path = tmp_path / "p.cedar"
    path.write_text("permit (principal, action, resource);\n")
    report = {
        "flips": [],
        "evaluated": 3,
        "since": "[bold]2026\x1b[2J",
        "skipped": 0,
        "truncated": True,
    }
    answer(monkeypatch, policy, {"/v1/policies/replay": report})
    policy.replay(path, "7d", Output.TABLE)
    out = printed(terminal)
    assert "\x1b[2J" not in out
    assert "decisions since [bold]2026<U+001B>[2J (0 not replayable) — list truncated" in out


def test_policy_json_output_is_unchanged(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], terminal: Console
) -> None:
    version = {"version": 1, "text": "// \x1b[2J[bold]\n"}
    diff = {"diff": "+// \x1b[2J[bold]\n"}
    answer(monkeypatch, policy, {"/v1/policies/active": version, "/v1/policies/diff": diff})
    policy.show_version(None, Output.JSON)
    shown = capsys.readouterr().out
    policy.diff(1, None, Output.JSON)
    diffed = capsys.readouterr().out
    assert shown == json.dumps(version, indent=2, sort_keys=True) + "\n"
    assert diffed == json.dumps(diff, indent=2, sort_keys=True) + "\n"
    assert printed(terminal) == ""


# --- tether audit trace ----------------------------------------------------------------------


def step(**fields: Any) -> dict[str, Any]:
    """One step of ``/v1/audit/trace/…``, as the server answers it."""
    return {
        "sequence": 1,
        "record_id": "rec_1",
        "time": "2026-01-01T00:00:00+00:00",
        "type": "decision.evaluated",
        "actor": "spiffe://acme.org/agent/faq-bot",
        "outcome": "success",
        "path": [],
        "effect": None,
        "policy_ids": [],
        "enforcement_point": None,
        "approval_id": None,
        "approver": None,
        "grant_id": None,
        "lease_id": None,
        **fields,
    }


TRACE = "/v1/audit/trace/req-1"


def test_audit_trace_prints_the_effect_in_brackets(
    monkeypatch: pytest.MonkeyPatch, plain: Console
) -> None:
    hops = [{"kind": "agent", "id": "faq-bot"}, {"kind": "action", "id": "call_tool"}]
    steps = [
        step(effect="allow", path=hops, policy_ids=["faq"]),
        step(effect="deny", path=hops),
        step(type="credential.issued"),
    ]
    answer(monkeypatch, audit, {TRACE: {"correlation_id": "req-1", "steps": steps}})
    audit.trace("req-1", Output.TABLE)
    assert printed(plain).splitlines() == [
        "2026-01-01T00:00:00+00:00 decision.evaluated [allow]",
        "  agent faq-bot → action call_tool",
        '  {"policy_ids": ["faq"]}',
        "2026-01-01T00:00:00+00:00 decision.evaluated [deny]",
        "  agent faq-bot → action call_tool",
        "2026-01-01T00:00:00+00:00 credential.issued [success]",
        "  spiffe://acme.org/agent/faq-bot",
    ]


def test_audit_trace_prints_the_effect_in_brackets_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, terminal: Console
) -> None:
    steps = [step(effect="allow", type="[bold]decision[/]")]
    answer(monkeypatch, audit, {TRACE: {"correlation_id": "req-1", "steps": steps}})
    audit.trace("req-1", Output.TABLE)
    out = printed(terminal)
    assert " [bold]decision[/] [allow]\n" in out
    assert "\x1b[1m2026-01-01T00:00:00+00:00\x1b[0m" in out  # the time, bold as before


@ATTACK_PARAMS
def test_audit_trace_with_terminal_escapes_is_shown_not_executed(
    monkeypatch: pytest.MonkeyPatch, terminal: Console, attack: tuple[str, str, str]
) -> None:
    value = attack[0]
    steps = [
        step(time=value, type=value, effect=value, path=[{"kind": value, "id": value}]),
        step(actor=value, outcome=value, approver=value),
    ]
    answer(monkeypatch, audit, {TRACE: {"correlation_id": "req-1", "steps": steps}})
    audit.trace("req-1", Output.TABLE)
    assert_shown_not_executed(printed(terminal), attack, 7)


def test_audit_trace_line_break_in_a_value_cannot_pass_for_another_step(
    monkeypatch: pytest.MonkeyPatch, plain: Console
) -> None:
    forged = "decision.evaluated [deny]\n2026-01-01T00:00:01+00:00 decision.evaluated"
    steps = [step(type=forged, effect="allow", path=[{"kind": "agent", "id": "a\r\nb"}])]
    answer(monkeypatch, audit, {TRACE: {"correlation_id": "req-1", "steps": steps}})
    audit.trace("req-1", Output.TABLE)
    assert printed(plain).splitlines() == [
        "2026-01-01T00:00:00+00:00 decision.evaluated [deny]<U+000A>2026-01-01T00:00:01+00:00"
        " decision.evaluated [allow]",
        "  agent a<U+000D><U+000A>b",
    ]


def test_audit_trace_json_output_is_unchanged(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], terminal: Console
) -> None:
    found = {"correlation_id": "req-1", "steps": [step(effect="allow", type="\x1b[2J")]}
    answer(monkeypatch, audit, {TRACE: found})
    audit.trace("req-1", Output.JSON)
    assert capsys.readouterr().out == json.dumps(found, indent=2, sort_keys=True) + "\n"
    assert printed(terminal) == ""


# --- tether demo -----------------------------------------------------------------------------


@ATTACK_PARAMS
def test_demo_failure_with_terminal_escapes_is_shown_not_executed(
    terminal: Console, attack: tuple[str, str, str]
) -> None:
    Show(terminal).failed(DemoFailed(f"registering faq-bot: HTTP 500 {attack[0]}"))
    out = printed(terminal)
    assert_shown_not_executed(out, attack, 1)
    assert "registering faq-bot: HTTP 500 " in out


def test_demo_failure_prints_brackets_literally(plain: Console) -> None:
    Show(plain).failed(DemoFailed("the policies: HTTP 400 [red]bad[/] [allow]"))
    assert printed(plain) == "demo failed: the policies: HTTP 400 [red]bad[/] [allow]\n"


@ATTACK_PARAMS
def test_demo_steps_with_terminal_escapes_are_shown_not_executed(
    terminal: Console, attack: tuple[str, str, str]
) -> None:
    # What the servers answer (a tool's text, a reason, a trace) reaches every kind of line.
    show = Show(terminal)
    show.ok(f"the approved call runs: {attack[0]}")
    show.say(f"  {attack[0]}")
    show.step(f"MCP server {attack[0]}")
    assert_shown_not_executed(printed(terminal), attack, 3)


def test_demo_steps_print_brackets_literally(plain: Console) -> None:
    show = Show(plain)
    show.ok("refused: [red]x[/]")
    show.say("  [bold]y[/]")
    assert printed(plain).splitlines() == ["✔ refused: [red]x[/]", "  [bold]y[/]"]

"""What ``tether`` prints of the server's values: text, never terminal control or markup.

Each test prints through the real rich console (``force_terminal``: as to a terminal, with
rich's own styling) into a buffer, which holds exactly what the terminal would get.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from rich.console import Console

from tether.cli import output
from tether.cli.commands import mcp
from tether.cli.output import Output, show, show_rows

#: Attacks a server's string may carry, each with what must never reach the terminal raw and
#: what is shown instead.
ATTACKS = {
    "esc_csi_clear_screen": ("\x1b[2J\x1b[31mfaq-bot", "\x1b[2J", "<U+001B>[2J<U+001B>[31mfaq-bot"),
    "osc8_hyperlink": (
        "\x1b]8;;https://evil.example\x1b\\docs\x1b]8;;\x1b\\",
        "\x1b]",
        "<U+001B>]8;;https://evil.example<U+001B>\\docs<U+001B>]8;;<U+001B>\\",
    ),
    "osc_window_title": ("\x1b]0;owned\x07", "\x1b]", "<U+001B>]0;owned<U+0007>"),
    "c1_csi": ("\x9b2Jhidden", "\x9b", "<U+009B>2Jhidden"),
    "bel": ("ding\x07", "\x07", "ding<U+0007>"),
    "backspace": ("rm -rf /\x08\x08\x08\x08\x08\x08\x08\x08ls", "\x08", "rm -rf /<U+0008>"),
    "lone_cr": ("approve: no\rapprove: yes", "\r", "approve: no<U+000D>approve: yes"),
    "bidi_override": ("invoice\u202efdp.exe", "\u202e", "invoice<U+202E>fdp.exe"),
    "bidi_isolate": ("a\u2066b\u2069c", "\u2066", "a<U+2066>b<U+2069>c"),
    "del": ("x\x7fy", "\x7f", "x<U+007F>y"),
    "zero_width": ("ad\u200bmin", "\u200b", "ad<U+200B>min"),
    "line_separator": ("one\u2028two", "\u2028", "one<U+2028>two"),
}


def _terminal(*, force_terminal: bool) -> Console:
    if force_terminal:
        return Console(file=io.StringIO(), force_terminal=True, width=240, color_system="truecolor")
    return Console(file=io.StringIO(), force_terminal=False, width=240, color_system=None)


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Console:
    """The console ``show`` prints to, as if to a terminal."""
    console = _terminal(force_terminal=True)
    monkeypatch.setattr(output, "console", console)
    return console


@pytest.fixture
def plain(monkeypatch: pytest.MonkeyPatch) -> Console:
    """The console ``show`` prints to, as if to a pipe (no styling at all)."""
    console = _terminal(force_terminal=False)
    monkeypatch.setattr(output, "console", console)
    return console


def printed(console: Console) -> str:
    file = console.file
    assert isinstance(file, io.StringIO)
    return file.getvalue()


@pytest.mark.parametrize("attack", ATTACKS.values(), ids=list(ATTACKS))
def test_terminal_escape_in_a_server_value_is_shown_not_executed(
    terminal: Console, attack: tuple[str, str, str]
) -> None:
    value, raw, shown = attack
    show({"description": value, value: "a key is the server's too"}, Output.TABLE)
    show_rows([{"name": value, "owner": {"display_name": value}}], ("name", "owner.display_name"),
              Output.TABLE)  # fmt: skip
    out = printed(terminal)
    assert raw not in out
    assert out.count(shown) == 4
    for control in ("\x07", "\x08", "\r", "\x9b", "\x7f", "\u202e", "\u2066", "\u200b"):
        assert control not in out


def test_terminal_escape_in_a_nested_value_is_escaped_by_json(terminal: Console) -> None:
    show({"definition": {"description": "\x1b[2J\x9b\u202e"}}, Output.TABLE)
    out = printed(terminal)
    assert "\x1b[2J" not in out
    assert "\x9b" not in out
    assert "\u202e" not in out
    assert r"\u001b[2J\u009b\u202e" in out


def test_the_only_escapes_on_a_pipe_are_none(plain: Console) -> None:
    # Not a terminal: rich adds no styling, so not one ESC may be printed.
    show({key: value for key, (value, _, _) in ATTACKS.items()}, Output.TABLE)
    show_rows([{"v": value} for value, _, _ in ATTACKS.values()], ("v",), Output.TABLE)
    out = printed(plain)
    assert "\x1b" not in out
    for value, _, shown in ATTACKS.values():
        assert shown in out, value


@pytest.mark.parametrize(
    "value",
    [
        "[bold red]x[/]",
        "[link=https://evil.example]click[/link]",
        "approve [conceal]and grant admin[/]",
        "[/]",
        "\\[escaped]",
        ":warning: :thumbs_up:",
    ],
)
def test_markup_in_a_server_value_is_printed_literally(plain: Console, value: str) -> None:
    show({"description": value}, Output.TABLE)
    show_rows([{"name": value}], ("name",), Output.TABLE)
    assert printed(plain).count(value) == 2


def test_markup_in_a_server_value_is_not_styled_on_a_terminal(terminal: Console) -> None:
    show({"description": "[link=https://evil.example]click[/link]"}, Output.TABLE)
    out = printed(terminal)
    assert "[link=https://evil.example]click[/link]" in out
    assert "\x1b]8;" not in out  # no hyperlink made of it


def test_line_breaks_in_a_table_cell_stay_line_breaks(plain: Console) -> None:
    show_rows([{"approved": "operator:root\n2026-01-01T00:00:00", "tool": "a\r\nb"}],
              ("approved", "tool"), Output.TABLE)  # fmt: skip
    show({"tab": "x\ty", "cr": "x\ry"}, Output.TABLE)
    lines = printed(plain).splitlines()
    assert any("operator:root" in line and " a " in line for line in lines)
    assert any("2026-01-01T00:00:00" in line and " b " in line for line in lines)
    assert any("x y" in line for line in lines)  # a tab is a space
    assert any("x<U+000D>y" in line for line in lines)  # a lone CR is shown


def test_missing_values_are_empty_and_scalars_are_text(plain: Console) -> None:
    show_rows([{"a": None, "b": 3, "c": True}], ("a", "b", "c", "d.e"), Output.TABLE)
    show({"none": None, "n": 7}, Output.TABLE)
    lines = printed(plain).splitlines()
    row = next(line for line in lines if "True" in line)
    assert [cell.strip() for cell in row.split("│")[1:-1]] == ["", "3", "True", ""]
    assert [line.split() for line in lines[-2:]] == [["none", "None"], ["n", "7"]]


SERVER = {
    "name": "faq-bot",
    "description": "\x1b[2J\x1b]8;;https://evil.example\x1b\\x\x9b\x07\x08\r\u202e\u2066\x7f",
    "owners": ["[bold]alice[/]", "bob"],
    "count": 3,
    "nested": {"display_name": "Ali\u200bce\n", "none": None},
}


@pytest.mark.parametrize("data", [SERVER, [SERVER, SERVER]], ids=["show", "show_rows"])
def test_json_output_is_the_servers_json(
    capsys: pytest.CaptureFixture[str], terminal: Console, data: Any
) -> None:
    if isinstance(data, list):
        show_rows(data, ("name",), Output.JSON)
    else:
        show(data, Output.JSON)
    out = capsys.readouterr().out
    assert json.loads(out) == data  # every value, unchanged
    assert out == json.dumps(data, indent=2, sort_keys=True) + "\n"
    # Nothing but printable ASCII and line breaks: JSON escapes every control character.
    assert all(" " <= char <= "~" or char == "\n" for char in out), repr(out)
    assert r"\u001b[2J" in out
    assert r"\u009b" in out
    assert r"\u202e" in out
    assert printed(terminal) == ""  # not through rich: no markup, no wrapping


def test_mcp_uses_the_shared_glyphs() -> None:
    assert not hasattr(mcp, "_glyphs")
    assert not hasattr(mcp, "_visible")
    assert mcp._first_line("\x1b[2J\x9bAdd.\u202e\nsecond") == "<U+001B>[2J<U+009B>Add.<U+202E>…"
    assert output.visible("a\nb\tc\r") == "a<U+000A>b<U+0009>c<U+000D>"
    assert output.visible(None) == ""

"""Printing results: ``--output json`` (machine-readable, stable) or a rich table.

Every value is printed as text, never read as rich markup: values come from the server and
some from agents (an approval request's fields), and ``[conceal]…[/]`` in one must not hide
part of what a person is asked to approve. Nor does a value reach the terminal with a
character the terminal would act on (ESC starts an escape sequence that may clear the
screen, retitle the window or plant a hyperlink; BEL, backspace, a carriage return, the C1
controls such as the 8-bit CSI U+009B) or a reader would not see (bidi overrides, zero-width
characters): each is shown as ``<U+XXXX>`` (:func:`visible`). In tables and key/value views a
value keeps its line breaks (``\\n``, ``\\r\\n``) and a tab becomes a space. A server's text
of many lines (a policy, a diff, a schema) is printed line by line (:func:`show_text`): its tabs
stay tabs, expanded by rich to the next tab stop.

``--output json`` prints the server's JSON (sorted, indented) with every character outside
printable ASCII escaped as ``\\uXXXX``, so it holds no control character either.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = [
    "HIDDEN",
    "Output",
    "glyphs",
    "printable",
    "show",
    "show_rows",
    "show_text",
    "text_block",
    "visible",
]

console = Console()

#: Unicode categories shown as ``<U+XXXX>``: controls (a terminal acts on them: ESC starts an
#: escape sequence, U+009B is an 8-bit CSI), format characters (zero-width, bidi controls),
#: private use, unassigned, surrogates, and line and paragraph separators.
HIDDEN = frozenset({"Cc", "Cf", "Co", "Cn", "Cs", "Zl", "Zp"})


class Output(StrEnum):
    TABLE = "table"
    JSON = "json"


def glyphs(text: str) -> list[str]:
    """Each character of ``text`` as shown: itself, or ``<U+XXXX>`` if hidden."""
    return [
        f"<U+{ord(char):04X}>" if unicodedata.category(char) in HIDDEN else char for char in text
    ]


def visible(value: Any) -> str:
    """A server's value as one line of plain text a person can read (``""`` for None): every
    hidden character, line breaks and tabs too, as ``<U+XXXX>``.

    >>> visible("ok\\x1b[2J\\u202e")
    'ok<U+001B>[2J<U+202E>'
    """
    return "" if value is None else "".join(glyphs(str(value)))


def printable(value: Any) -> str:
    """A value as a table (or an error message) shows it: :func:`visible`, but line breaks
    (``\\n``, ``\\r\\n``) stay line breaks and a tab is a space.

    >>> printable("a\\tb\\r\\nc\\rd")
    'a b\\nc<U+000D>d'
    """
    text = str(value).replace("\r\n", "\n").replace("\t", " ")
    return "\n".join(visible(line) for line in text.split("\n"))


def text_block(value: Any) -> Text:
    """A server's text of many lines (a policy, a diff, a schema) as printed: :func:`visible`
    line by line, but line breaks (``\\n``, ``\\r\\n``) stay line breaks and tabs stay tabs
    (rich expands them to the next tab stop); never markup, emoji codes or highlighting.

    >>> text_block("permit\\t(\\x1b[2J [allow]);\\r\\n").plain
    'permit\\t(<U+001B>[2J [allow]);\\n'
    """
    text = "" if value is None else str(value).replace("\r\n", "\n")
    lines = ("\t".join(visible(part) for part in line.split("\t")) for line in text.split("\n"))
    return Text("\n".join(lines))


def show_text(value: Any) -> None:
    """Print a server's text of many lines as :func:`text_block` shows it."""
    console.print(text_block(value))


def _text(value: Any, style: str = "") -> Text:
    """A table cell: the value's text as is (never markup, emoji codes or highlighting)."""
    return Text(printable(value), style=style)


def _json(data: Any) -> str:
    # ensure_ascii (the default, spelled out): with it off, DEL, the C1 controls (U+009B is a
    # CSI) and bidi controls would be printed raw; json.dumps escapes only U+0000-U+001F then.
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=True)


def show(data: Any, output: Output) -> None:
    if output is Output.JSON:
        print(_json(data))
        return
    table = Table(show_header=False, box=None)
    for key, value in data.items():
        shown = json.dumps(value) if isinstance(value, dict | list) else value
        table.add_row(_text(key, "bold"), _text(shown))
    console.print(table)


def show_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str], output: Output) -> None:
    if output is Output.JSON:
        print(_json(list(rows)))
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*(_cell(row, c) for c in columns))
    console.print(table)


def _cell(row: dict[str, Any], column: str) -> Text:
    value: Any = row
    for part in column.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return _text("" if value is None else value)

"""Printing results: ``--output json`` (machine-readable, stable) or a rich table.

Every value is printed as text, never read as rich markup: values come from the server and
some from agents (an approval request's fields), and ``[conceal]…[/]`` in one must not hide
part of what a person is asked to approve."""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

__all__ = ["Output", "show", "show_rows"]

console = Console()


class Output(StrEnum):
    TABLE = "table"
    JSON = "json"


def show(data: Any, output: Output) -> None:
    if output is Output.JSON:
        print(json.dumps(data, indent=2, sort_keys=True))
        return
    table = Table(show_header=False, box=None)
    for key, value in data.items():
        shown = json.dumps(value) if isinstance(value, dict | list) else str(value)
        table.add_row(f"[bold]{escape(str(key))}[/]", escape(shown))
    console.print(table)


def show_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str], output: Output) -> None:
    if output is Output.JSON:
        print(json.dumps(list(rows), indent=2, sort_keys=True))
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*(_cell(row, c) for c in columns))
    console.print(table)


def _cell(row: dict[str, Any], column: str) -> str:
    value: Any = row
    for part in column.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else escape(str(value))

"""How the demo shows its progress (rich): use cases as rules, steps as they happen, a spinner
while it waits. What a server answers is printed as text (:func:`printable`): never markup,
every character a terminal would act on shown as ``<U+XXXX>``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.text import Text

from tether.cli.output import printable

__all__ = ["DemoFailed", "Show"]


class DemoFailed(Exception):
    """A step did not behave as expected; the message says how."""


class Show:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()

    def rule(self, title: str) -> None:
        self.console.rule(Text(title, style="bold"))

    def case(self, number: int, title: str) -> None:
        self.console.print()
        self.console.rule(Text(f"Use case {number}: {title}", style="bold cyan"))

    def step(self, message: str) -> None:
        """Something done to set the scene."""
        self.console.print(Text.assemble(("•", "cyan"), " ", printable(message)))

    def ok(self, message: str) -> None:
        """A step that behaved as expected."""
        self.console.print(Text.assemble(("✔", "green"), " ", printable(message)))

    def say(self, message: str) -> None:
        self.console.print(Text(printable(message)))

    def failed(self, message: object) -> None:
        self.console.print(Text.assemble(("demo failed:", "bold red"), " ", printable(message)))

    @contextlib.contextmanager
    def waiting(self, message: str) -> Iterator[None]:
        """A spinner with ``message`` while the block runs."""
        with self.console.status(Text(printable(message))):
            yield

"""Options shared by every command."""

from __future__ import annotations

from typing import Annotated

import typer

from tether.cli.output import Output

OutputOpt = Annotated[
    Output, typer.Option("--output", "-o", help="json for scripts, table for people")
]

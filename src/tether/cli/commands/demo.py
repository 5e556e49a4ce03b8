"""``tether demo``: the seeds' three use cases, end to end, on the embedded defaults.

What ``make demo`` runs (with ``--approve``). The play itself is :mod:`tether.cli.demo.play`.
"""

from __future__ import annotations

from typing import Annotated

import typer


def demo(
    approve: Annotated[
        bool,
        typer.Option("--approve", help="Alice's phone approves the transfer (non-interactive)"),
    ] = False,
    serve: Annotated[
        bool, typer.Option("--serve", help="Keep everything running afterwards")
    ] = False,
    port: Annotated[int, typer.Option(help="Tether's port (0: any free one)")] = 0,
) -> None:
    """Play the three use cases: JIT credentials, acting for a person, an approved transfer."""
    # Imported here: the play needs the MCP SDK, which would add about a second to every
    # other ``tether`` command's start.
    from tether.cli.demo.play import run

    code = run(approve=approve, serve=serve, port=port)
    if code:
        raise typer.Exit(code)

"""``tether client …``: OAuth clients of the built-in provider (administrators).

A client is an application people sign in to. Every client is public (no secret; PKCE ties a
code to it) and registered with its exact redirect URIs: ``https``, or ``http`` on a loopback
address (whose port may then differ, RFC 8252 §7.3). A client registered for an agent asks
consent for that agent. ``tether-cli``, the command line's own, is built in: listed, never
replaced or removed.

Example::

    $ tether client add shop-web --name "Shop" --agent shop-bot \\
        --redirect-uri https://shop.example/callback
    $ tether client list
    $ tether client remove shop-web
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import typer

from tether.cli.client import Api
from tether.cli.options import OutputOpt
from tether.cli.output import Output, show, show_rows
from tether.config import ClientSettings

app = typer.Typer(
    help="OAuth clients of the built-in provider (applications people sign in to).",
    no_args_is_help=True,
)

_COLUMNS = ("client_id", "name", "redirect_uris", "agent", "created_at", "created_by")


def _api() -> Api:
    return Api(ClientSettings.from_environ())


def _rows(clients: Sequence[dict[str, Any]], output: Output) -> None:
    """A table shows the redirect URIs space-separated; JSON keeps the list."""
    if output is Output.TABLE:
        clients = [c | {"redirect_uris": " ".join(c.get("redirect_uris", ()))} for c in clients]
    show_rows(clients, _COLUMNS, output)


@app.command("add")
def add(
    client_id: str,
    redirect_uri: Annotated[
        list[str], typer.Option(help="An exact redirect URI: https, or http on loopback (repeat)")
    ],
    name: Annotated[str | None, typer.Option(help="The name shown on the sign-in page")] = None,
    agent: Annotated[str | None, typer.Option(help="The agent it asks consent for")] = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Register an OAuth client (public, PKCE with S256)."""
    body: dict[str, Any] = {"client_id": client_id, "redirect_uris": redirect_uri}
    if name is not None:
        body["name"] = name
    if agent is not None:
        body["agent"] = agent
    with _api() as api:
        show(api.call("POST", "/v1/clients", json=body), output)


@app.command("list")
def list_clients(output: OutputOpt = Output.TABLE) -> None:
    """List OAuth clients."""
    with _api() as api:
        _rows(api.call("GET", "/v1/clients")["clients"], output)


@app.command("remove")
def remove(client_id: str, output: OutputOpt = Output.TABLE) -> None:
    """Remove an OAuth client: no one can start a sign-in to it any more (not tether-cli)."""
    with _api() as api:
        show(api.call("DELETE", f"/v1/clients/{client_id}"), output)

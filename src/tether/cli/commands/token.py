"""``tether token …``: operator tokens for people and for enforcement points.

An enforcement point (a gateway asking for decisions on agents' behalf) gets a token of its
own role, which may evaluate decisions and otherwise only read (agents, policies, the token
revocations in force), as every operator may::

    tether token create --role enforcement-point --name envoy-gateway
"""

from __future__ import annotations

from typing import Annotated

import typer

from tether.cli.client import Api
from tether.cli.options import OutputOpt
from tether.cli.output import Output, show, show_rows
from tether.config import ClientSettings

app = typer.Typer(help="Operator tokens for the management API.", no_args_is_help=True)


@app.command("create")
def create(
    role: Annotated[
        str,
        typer.Option(
            help="security-admin | platform-admin | developer | auditor | enforcement-point"
        ),
    ],
    name: Annotated[str, typer.Option("--name", help="Whose token it is (shown in audit)")],
    output: OutputOpt = Output.TABLE,
    ttl: Annotated[int | None, typer.Option(help="Lifetime in seconds")] = None,
) -> None:
    """Mint a token for a person or an enforcement point (needs the root token). The token is
    shown once."""
    body = {"role": role, "display_name": name, "ttl_seconds": ttl}
    with Api(ClientSettings.from_environ()) as api:
        show(api.call("POST", "/v1/tokens", json=body), output)


@app.command("revoke")
def revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (opt_…), from 'token list'")],
    output: OutputOpt = Output.TABLE,
) -> None:
    """Revoke an operator token at once (root or a security admin; anyone for their own)."""
    with Api(ClientSettings.from_environ()) as api:
        show(api.call("DELETE", f"/v1/tokens/{token_id}"), output)


@app.command("list")
def list_tokens(output: OutputOpt = Output.TABLE) -> None:
    """List operator tokens (never their secrets)."""
    with Api(ClientSettings.from_environ()) as api:
        rows = api.call("GET", "/v1/tokens")["tokens"]
    show_rows(rows, ("id", "role", "display_name", "expires_at", "revoked_at"), output)

"""``tether status``: is the server up and ready, and who am I to it."""

from __future__ import annotations

import typer

from tether.cli.client import Api
from tether.cli.options import OutputOpt
from tether.cli.output import Output, show
from tether.config import ClientSettings


def status(output: OutputOpt = Output.TABLE) -> None:
    """Show the server's address, readiness, issuer and the calling token's role."""
    settings = ClientSettings.from_environ()
    with Api(settings) as api:
        ready = api.call("GET", "/readyz")
        meta = api.call("GET", "/.well-known/oauth-authorization-server")
        me = api.call("GET", "/v1/tokens/self") if settings.token else None
    result = {
        "address": settings.addr,
        "ready": ready.get("status") == "ready",
        "issuer": meta["issuer"],
        "trust_domain": meta.get("spiffe_trust_domain"),
        "signing_kid": ready.get("signing_kid"),
        "token_role": me["role"] if me else None,
        "token_name": me["display_name"] if me else None,
    }
    show(result, output)
    if not result["ready"]:
        raise typer.Exit(7)

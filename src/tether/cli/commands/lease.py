"""``tether lease …``: just-in-time credentials from the command line.

``tether lease issue`` runs as the agent: ``TETHER_TOKEN`` holds its JWT-SVID (``tether agent
token``). It prints the credential's secret once; ``--output json`` prints it for scripts.
``list``, ``show``, ``renew`` and ``revoke`` take the agent's token (its own leases) or an
operator token. ``tether lease revoke --agent NAME`` (or ``--instance``, ``--grant``,
``--user``) ends every lease they hold in one call.

Example::

    $ TETHER_TOKEN=$(tether agent token faq-bot --key faq.key) \\
        tether lease issue --engine pg-main --role readonly --ttl 300 --output json
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tether.cli.client import Api, fail
from tether.cli.exit_codes import INVALID_INPUT
from tether.cli.options import OutputOpt
from tether.cli.output import Output, show, show_rows
from tether.config import ClientSettings

app = typer.Typer(help="Just-in-time credentials (leases).", no_args_is_help=True)

_COLUMNS = ("id", "engine", "role", "agent", "instance", "state", "expires_at", "renewals")
Reason = Annotated[str | None, typer.Option(help="Why (kept in the audit log)")]


def _api() -> Api:
    return Api(ClientSettings.from_environ())


@app.command()
def issue(
    engine: Annotated[str, typer.Option(help="The engine (tether engine list)")],
    role: Annotated[str, typer.Option(help="One of the engine's roles")],
    ttl: Annotated[int | None, typer.Option(help="Seconds (default: the role's)")] = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Take a lease as the agent whose JWT-SVID is in TETHER_TOKEN; prints the secret once."""
    body: dict[str, Any] = {"engine": engine, "role": role}
    if ttl is not None:
        body["ttl"] = ttl
    with _api() as api:
        issued = api.call("POST", "/v1/leases", json=body)
    if output is Output.JSON:
        show(issued, output)
        return
    show(issued["lease"], output)
    show(issued["credential"], output)


@app.command("list")
def list_leases(
    output: OutputOpt = Output.TABLE,
    agent: Annotated[str | None, typer.Option(help="Only this agent's")] = None,
    instance: Annotated[str | None, typer.Option(help="Only this instance's")] = None,
    grant: Annotated[str | None, typer.Option(help="Only this grant's")] = None,
    user: Annotated[str | None, typer.Option(help="Only this user's")] = None,
    engine: Annotated[str | None, typer.Option(help="Only this engine's")] = None,
    state: Annotated[
        list[str] | None, typer.Option(help="Only in this state (repeat): active, revoking, …")
    ] = None,
) -> None:
    """List leases."""
    params: dict[str, Any] = {
        k: v
        for k, v in {
            "agent": agent,
            "instance": instance,
            "grant_id": grant,
            "user": user,
            "engine": engine,
            "state": state,
        }.items()
        if v
    }
    with _api() as api:
        rows = api.call("GET", "/v1/leases", params=params)["leases"]
    show_rows(rows, _COLUMNS, output)


@app.command("show")
def show_lease(lease_id: str, output: OutputOpt = Output.TABLE) -> None:
    """Show a lease."""
    with _api() as api:
        show(api.call("GET", f"/v1/leases/{lease_id}"), output)


@app.command()
def renew(
    lease_id: str,
    ttl: Annotated[int | None, typer.Option(help="Seconds from now (capped at the max)")] = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Renew a lease, up to its max TTL."""
    body = {"ttl": ttl} if ttl is not None else None
    with _api() as api:
        show(api.call("POST", f"/v1/leases/{lease_id}/renew", json=body), output)


@app.command()
def revoke(
    lease_id: Annotated[str | None, typer.Argument(help="One lease (or use a filter)")] = None,
    agent: Annotated[str | None, typer.Option(help="Every lease of this agent")] = None,
    instance: Annotated[str | None, typer.Option(help="Every lease of this instance")] = None,
    grant: Annotated[str | None, typer.Option(help="Every lease under this grant")] = None,
    user: Annotated[str | None, typer.Option(help="Every lease acting for this user")] = None,
    reason: Reason = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Revoke one lease, or every lease of an agent, instance, grant or user."""
    bulk = {"agent": agent, "instance": instance, "grant_id": grant, "user": user}
    named = {k: v for k, v in bulk.items() if v}
    if (lease_id is None) == (not named):
        fail(
            "name one lease (LEASE_ID) or filters (--agent, --instance, …), not both", INVALID_INPUT
        )
    with _api() as api:
        if lease_id is not None:
            body = {"reason": reason} if reason else None
            show(api.call("POST", f"/v1/leases/{lease_id}/revoke", json=body), output)
            return
        answer = api.call("POST", "/v1/leases/revoke", json=named | {"reason": reason})
    if output is Output.JSON:
        show(answer, output)
        return
    show({"revoked": answer["revoked"]}, output)
    show_rows(answer["leases"], _COLUMNS, output)

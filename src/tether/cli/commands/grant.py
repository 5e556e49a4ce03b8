"""``tether grant …``: users' consent grants (an agent's scopes, for a purpose, until expiry).

Security admins list and revoke anyone's grants (auditors list them). ``tether grant create``
is consent, so only the user can give it: it runs with the user's own access token in
``TETHER_TOKEN`` (an operator token is refused). Revoking a grant refuses every delegated token
under it from the next decision and ends the leases issued under it.

Example::

    $ tether grant list --user alice --in-force
    $ tether grant revoke grt_… --reason "no longer needed"
    $ tether grant revoke-all --agent shop-bot --reason "agent compromised"
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import typer

from tether.cli.client import Api, fail
from tether.cli.exit_codes import USAGE
from tether.cli.options import OutputOpt
from tether.cli.output import Output, show, show_rows
from tether.config import ClientSettings

app = typer.Typer(
    help="Users' consent grants: which agent may act for whom, for what.", no_args_is_help=True
)

_COLUMNS = ("id", "user", "agent", "scopes", "purpose_code", "state", "expires_at")
Reason = Annotated[str | None, typer.Option(help="Why (kept in the audit log)")]


def _api() -> Api:
    return Api(ClientSettings.from_environ())


def _rows(grants: Sequence[dict[str, Any]], output: Output) -> None:
    """A table shows the scopes space-separated; JSON keeps the list."""
    if output is Output.TABLE:
        grants = [g | {"scopes": " ".join(g.get("scopes", ()))} for g in grants]
    show_rows(grants, _COLUMNS, output)


@app.command()
def create(
    agent: Annotated[str, typer.Option(help="The agent that may act for you")],
    scope: Annotated[list[str], typer.Option(help="A scope granted to it (repeat)")],
    purpose: Annotated[str, typer.Option(help="Why, in words shown to people")],
    purpose_code: Annotated[str, typer.Option(help="Why, as a code (e.g. order-tracking)")],
    session: Annotated[str | None, typer.Option(help="Tie the grant to this session")] = None,
    ttl: Annotated[int | None, typer.Option(help="Seconds (default and cap: the max)")] = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Consent: grant an agent scopes for a purpose. Only with a user's own access token in
    TETHER_TOKEN (the grant is theirs); an operator token is refused."""
    body: dict[str, Any] = {
        "agent": agent,
        "scopes": scope,
        "purpose": purpose,
        "purpose_code": purpose_code,
    }
    if session is not None:
        body["session"] = session
    if ttl is not None:
        body["ttl_seconds"] = ttl
    with _api() as api:
        show(api.call("POST", "/v1/grants", json=body), output)


@app.command("list")
def list_grants(
    output: OutputOpt = Output.TABLE,
    user: Annotated[str | None, typer.Option(help="Only this user's")] = None,
    agent: Annotated[str | None, typer.Option(help="Only this agent's")] = None,
    session: Annotated[str | None, typer.Option(help="Only this session's")] = None,
    in_force: Annotated[bool, typer.Option("--in-force", help="Only active, unexpired")] = False,
    limit: Annotated[int | None, typer.Option(help="At most this many (1 to 500)")] = None,
    after: Annotated[str | None, typer.Option(help="Those after this grant id (paging)")] = None,
) -> None:
    """List grants (a user's own token sees only their own)."""
    params: dict[str, Any] = {
        k: v
        for k, v in {
            "user": user,
            "agent": agent,
            "session": session,
            "in_force": in_force,
            "limit": limit,
            "after": after,
        }.items()
        if v
    }
    with _api() as api:
        rows = api.call("GET", "/v1/grants", params=params)["grants"]
    _rows(rows, output)


@app.command("show")
def show_grant(grant_id: str, output: OutputOpt = Output.TABLE) -> None:
    """Show a grant."""
    with _api() as api:
        show(api.call("GET", f"/v1/grants/{grant_id}"), output)


@app.command()
def revoke(grant_id: str, reason: Reason = None, output: OutputOpt = Output.TABLE) -> None:
    """Revoke a grant (revoking a revoked grant shows it unchanged)."""
    params = {"reason": reason} if reason else None
    with _api() as api:
        show(api.call("DELETE", f"/v1/grants/{grant_id}", params=params), output)


@app.command("revoke-all")
def revoke_all(
    user: Annotated[str | None, typer.Option(help="Every active grant of this user")] = None,
    agent: Annotated[str | None, typer.Option(help="Every active grant to this agent")] = None,
    session: Annotated[str | None, typer.Option(help="Every active grant of this session")] = None,
    reason: Reason = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Revoke every active grant of a user, an agent or a session (filters combine). Up to
    1,000 per call: run it again while it reports 1,000."""
    named = {k: v for k, v in {"user": user, "agent": agent, "session": session}.items() if v}
    if not named:
        fail("name at least one of --user, --agent or --session", USAGE)
    with _api() as api:
        answer = api.call("POST", "/v1/grants/revoke", json=named | {"reason": reason})
    if output is Output.JSON:
        show(answer, output)
        return
    show({"revoked": answer["count"]}, output)
    _rows(answer["revoked"], output)

"""``tether alert …``: what the monitor found — list, show, acknowledge, resolve.

Security admins see and act on every alert; a developer sees and acts on those of the agents
they own (auditors and platform admins read). Each acknowledgement and resolution is an audit
record.

Example::

    $ tether alert list --state open
    $ tether alert show alr_…
    $ tether alert ack alr_… --note "looking into it"
    $ tether alert resolve alr_… --note "key rotated, agent re-approved"
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tether.cli.client import Api
from tether.cli.options import OutputOpt
from tether.cli.output import Output, show, show_rows
from tether.config import ClientSettings

app = typer.Typer(help="The monitor's alerts: list, show, acknowledge, resolve.",
                  no_args_is_help=True)  # fmt: skip

_COLUMNS = ("id", "severity", "state", "kind", "agent", "count", "last_seen", "summary")
Note = Annotated[str | None, typer.Option(help="A note kept with the alert and audited")]


def _api() -> Api:
    return Api(ClientSettings.from_environ())


def _row(alert: dict[str, Any]) -> dict[str, Any]:
    return alert | {"id": alert.get("alert_id")}


@app.command("list")
def list_alerts(
    output: OutputOpt = Output.TABLE,
    state: Annotated[
        list[str] | None, typer.Option(help="open, acknowledged or resolved (repeat)")
    ] = None,
    kind: Annotated[str | None, typer.Option(help="Only this kind (e.g. impersonation)")] = None,
    agent: Annotated[str | None, typer.Option(help="Only this agent's")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many (1 to 500)")] = None,
    after: Annotated[str | None, typer.Option(help="Those after this alert id (paging)")] = None,
) -> None:
    """List alerts, newest first."""
    given = {"state": state, "kind": kind, "agent": agent, "limit": limit, "after": after}
    params = {k: v for k, v in given.items() if v}
    with _api() as api:
        rows = api.call("GET", "/v1/alerts", params=params)["alerts"]
    show_rows([_row(a) for a in rows], _COLUMNS, output)


@app.command("show")
def show_alert(alert_id: str, output: OutputOpt = Output.TABLE) -> None:
    """Show an alert, with its details."""
    with _api() as api:
        show(api.call("GET", f"/v1/alerts/{alert_id}"), output)


@app.command("ack")
def acknowledge(alert_id: str, note: Note = None, output: OutputOpt = Output.TABLE) -> None:
    """Acknowledge an open alert: someone is on it."""
    with _api() as api:
        show(api.call("POST", f"/v1/alerts/{alert_id}/acknowledge", json={"note": note}), output)


@app.command()
def resolve(alert_id: str, note: Note = None, output: OutputOpt = Output.TABLE) -> None:
    """Resolve an alert; the next finding of its kind and key opens a new one."""
    with _api() as api:
        show(api.call("POST", f"/v1/alerts/{alert_id}/resolve", json={"note": note}), output)

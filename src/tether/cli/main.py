"""The ``tether`` command. Reads ``TETHER_ADDR`` and ``TETHER_TOKEN`` like ``vault`` does;
``--output json`` everywhere; exit codes in :mod:`tether.cli.exit_codes`.

Example::

    $ tether serve --dev &
    $ export TETHER_ADDR=http://127.0.0.1:8200 TETHER_TOKEN=...
    $ tether agent register faq-bot --owner alice --tool search_faq
"""

from __future__ import annotations

import typer

from tether.cli.commands import (
    agent,
    alert,
    approval,
    audit,
    client,
    demo,
    engine,
    grant,
    lease,
    login,
    mcp,
    policy,
    posture,
    serve,
    status,
    token,
    user,
)

app = typer.Typer(
    name="tether",
    help="Tether: the runtime security control plane for AI agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(agent.app, name="agent")
app.add_typer(token.app, name="token")
app.add_typer(policy.app, name="policy")
app.add_typer(audit.app, name="audit")
app.add_typer(lease.app, name="lease")
app.add_typer(engine.app, name="engine")
app.add_typer(user.app, name="user")
app.add_typer(grant.app, name="grant")
app.add_typer(approval.app, name="approval")
app.add_typer(client.app, name="client")
app.add_typer(mcp.app, name="mcp")
app.add_typer(alert.app, name="alert")
app.add_typer(posture.app, name="posture")
app.command("serve")(serve.serve)
app.command("login")(login.login)
app.command("status")(status.status)
app.command("demo")(demo.demo)


def main() -> None:
    app()

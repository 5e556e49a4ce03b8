"""``tether user …``: the people of the built-in OpenID provider (security admins).

A password is read from standard input (``--password-stdin``: all of it, less one final
newline), never from an argument, so it stays out of shell history and process listings; no
answer ever carries it back (a user shows only ``password_set``). Disabling a user revokes
every grant they gave at once; enabling them again leaves those grants revoked. A person's
console role (``security-admin``, ``platform-admin``, ``developer`` or ``auditor``; none: an end
user) is given with ``--role`` or ``tether user role``.

Example::

    $ printf '%s\\n' "$ALICE_PASSWORD" | tether user add alice --password-stdin \\
        --display-name "Alice Example" --email alice@example.com --role developer
    $ tether user role alice auditor
    $ tether user role alice --none
    $ tether user list --output json
    $ tether user disable alice
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from tether.cli.client import Api, fail
from tether.cli.exit_codes import INVALID_INPUT, USAGE
from tether.cli.options import OutputOpt
from tether.cli.output import Output, show, show_rows
from tether.config import ClientSettings

app = typer.Typer(
    help="Users of the built-in OpenID provider (people who sign in and consent).",
    no_args_is_help=True,
)

_COLUMNS = ("name", "display_name", "email", "state", "role", "password_set", "created_at")
_ROLES = "security-admin, platform-admin, developer or auditor"
PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from stdin")
]


def _api() -> Api:
    return Api(ClientSettings.from_environ())


def _password() -> str:
    """Standard input, less one final newline; never empty."""
    password = sys.stdin.read().removesuffix("\n").removesuffix("\r")
    if not password:
        fail("standard input held no password", INVALID_INPUT)
    return password


@app.command("add")
def add(
    name: str,
    password_stdin: PasswordStdin = False,
    display_name: Annotated[str | None, typer.Option(help="The name shown to people")] = None,
    email: Annotated[str | None, typer.Option(help="Their e-mail address")] = None,
    role: Annotated[str | None, typer.Option(help=f"Their console role: {_ROLES}")] = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Add a user (without --password-stdin they cannot sign in until `tether user passwd`;
    without --role they are an end user of the console)."""
    body: dict[str, Any] = {"name": name}
    if password_stdin:
        body["password"] = _password()
    optional = {"display_name": display_name, "email": email, "role": role}
    body |= {k: v for k, v in optional.items() if v is not None}
    with _api() as api:
        show(api.call("POST", "/v1/users", json=body), output)


@app.command("list")
def list_users(
    output: OutputOpt = Output.TABLE,
    limit: Annotated[int | None, typer.Option(help="At most this many (1 to 500)")] = None,
    after: Annotated[str | None, typer.Option(help="Those after this name (paging)")] = None,
) -> None:
    """List users, by name."""
    params = {k: v for k, v in {"limit": limit, "after": after}.items() if v is not None}
    with _api() as api:
        rows = api.call("GET", "/v1/users", params=params)["users"]
    show_rows(rows, _COLUMNS, output)


@app.command("show")
def show_user(name: str, output: OutputOpt = Output.TABLE) -> None:
    """Show a user (never their password)."""
    with _api() as api:
        show(api.call("GET", f"/v1/users/{name}"), output)


@app.command()
def disable(name: str, output: OutputOpt = Output.TABLE) -> None:
    """Disable a user: they cannot sign in, and every grant they gave is revoked."""
    with _api() as api:
        show(api.call("POST", f"/v1/users/{name}/disable"), output)


@app.command()
def enable(name: str, output: OutputOpt = Output.TABLE) -> None:
    """Enable a disabled user (the grants revoked when they were disabled stay revoked)."""
    with _api() as api:
        show(api.call("POST", f"/v1/users/{name}/enable"), output)


@app.command("role")
def set_role(
    name: str,
    role: Annotated[str | None, typer.Argument(help=f"The console role: {_ROLES}")] = None,
    none: Annotated[bool, typer.Option("--none", help="Take their console role away")] = False,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Give a user a console role, or take it away with --none (security admins)."""
    if (role is None) == (not none):
        fail("name a ROLE, or pass --none (not both)", USAGE)
    with _api() as api:
        show(api.call("PUT", f"/v1/users/{name}/role", json={"role": role}), output)


@app.command()
def passwd(
    name: str, password_stdin: PasswordStdin = False, output: OutputOpt = Output.TABLE
) -> None:
    """Set a user's password, read from stdin (a security admin, or the user with their own
    token in TETHER_TOKEN)."""
    if not password_stdin:
        fail("pass the password on standard input, with --password-stdin", INVALID_INPUT)
    body = {"password": _password()}
    with _api() as api:
        show(api.call("PUT", f"/v1/users/{name}/password", json=body), output)

"""``tether engine …``: credential engines (platform admins).

An engine's configuration is a JSON file: ``{"kind": "postgres", "settings": {...},
"roles": [{"name": "readonly", "group": "app_readonly", "default_ttl": 300, "max_ttl":
3600}]}``. The admin password is read from standard input (``--secret-stdin``), never from a
flag, so it stays out of shell history and process listings.

The secrets of a vault engine are set one at a time, the value read from standard input
(all of it, less one final newline, so a PEM file works), and only their names come back.

Example::

    $ echo "$PG_ADMIN_PASSWORD" | tether engine add pg-main --config pg-main.json --secret-stdin
    $ tether engine secret-put vault-main crm-api-key --value-stdin < crm-api-key.txt
    $ tether engine secret-list vault-main
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from tether.cli.client import Api, fail
from tether.cli.exit_codes import INVALID_INPUT
from tether.cli.options import OutputOpt
from tether.cli.output import Output, show, show_rows
from tether.config import ClientSettings

app = typer.Typer(
    help="Credential engines (database connections and their roles).", no_args_is_help=True
)

_COLUMNS = ("name", "kind", "version", "secret_set", "updated_at")


def _api() -> Api:
    return Api(ClientSettings.from_environ())


def _config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        fail(f"cannot read {path}: {exc}", INVALID_INPUT)
    if not isinstance(config, dict):
        fail(f"{path} must hold a JSON object", INVALID_INPUT)
    if "secret" in config:
        fail("keep the secret out of the file: pass it with --secret-stdin", INVALID_INPUT)
    return config


@app.command("add")
def add(
    name: str,
    config: Annotated[Path, typer.Option(help="JSON: kind, settings, roles")],
    secret_stdin: Annotated[
        bool, typer.Option("--secret-stdin", help="Read the admin password from stdin")
    ] = False,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Configure an engine (or replace its configuration; the secret is kept if not given).
    Tether connects to check it before saving."""
    body = _config(config)
    if secret_stdin:
        # All of it (a vault engine's map may span lines), less one final newline.
        body["secret"] = sys.stdin.read().removesuffix("\n").removesuffix("\r")
        if not body["secret"]:
            fail("standard input held no secret", INVALID_INPUT)
    with _api() as api:
        show(api.call("PUT", f"/v1/engines/{name}", json=body), output)


@app.command("list")
def list_engines(output: OutputOpt = Output.TABLE) -> None:
    """List engines."""
    with _api() as api:
        show_rows(api.call("GET", "/v1/engines")["engines"], _COLUMNS, output)


@app.command("show")
def show_engine(name: str, output: OutputOpt = Output.TABLE) -> None:
    """Show an engine (never its secret)."""
    with _api() as api:
        show(api.call("GET", f"/v1/engines/{name}"), output)


@app.command("remove")
def remove(name: str, output: OutputOpt = Output.TABLE) -> None:
    """Remove an engine that no live lease uses."""
    with _api() as api:
        show(api.call("DELETE", f"/v1/engines/{name}"), output)


@app.command("unmanaged")
def unmanaged(name: str, output: OutputOpt = Output.TABLE) -> None:
    """Logins in the engine's database that Tether did not create (standing privileges)."""
    with _api() as api:
        answer = api.call("GET", f"/v1/engines/{name}/unmanaged-logins")
    show_rows(answer["logins"], ("name", "superuser", "createrole", "valid_until"), output)


@app.command("secret-put")
def secret_put(
    engine: str,
    name: str,
    value_stdin: Annotated[
        bool, typer.Option("--value-stdin", help="Read the secret's value from stdin")
    ] = False,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Set one secret of a vault engine (added, or replaced); the others stay as they are."""
    if not value_stdin:
        fail("pass the value on standard input, with --value-stdin", INVALID_INPUT)
    value = sys.stdin.read()
    value = value.removesuffix("\n").removesuffix("\r")
    if not value:
        fail("standard input held no value", INVALID_INPUT)
    with _api() as api:
        show(api.call("PUT", f"/v1/engines/{engine}/secrets/{name}", json={"value": value}), output)


@app.command("secret-list")
def secret_list(engine: str, output: OutputOpt = Output.TABLE) -> None:
    """The names of a vault engine's secrets (never a value)."""
    with _api() as api:
        answer = api.call("GET", f"/v1/engines/{engine}/secrets")
    show_rows([{"name": name} for name in answer["secrets"]], ("name",), output)


@app.command("secret-delete")
def secret_delete(engine: str, name: str, output: OutputOpt = Output.TABLE) -> None:
    """Remove one secret of a vault engine (refused while a role hands it out)."""
    with _api() as api:
        show(api.call("DELETE", f"/v1/engines/{engine}/secrets/{name}"), output)

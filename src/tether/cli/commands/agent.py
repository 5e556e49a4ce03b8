"""``tether agent …``: the registry from the command line.

``tether agent revoke-tokens NAME [--instance ID]`` revokes every JWT-SVID the agent (or one
instance of it) holds now; ``tether agent revoke-tokens --jti JTI`` revokes one token.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from tether.cli.client import Api, fail
from tether.cli.commands import devtools
from tether.cli.exit_codes import INVALID_INPUT
from tether.cli.options import OutputOpt
from tether.cli.output import Output, show, show_rows
from tether.config import ClientSettings

app = typer.Typer(help="Register and manage agents.", no_args_is_help=True)
key_app = typer.Typer(help="An agent's public keys.", no_args_is_help=True)
app.add_typer(key_app, name="key")

app.command("keygen")(devtools.keygen)
app.command("token")(devtools.token)

_COLUMNS = ("name", "state", "risk.tier", "risk.score", "spiffe_id", "owners")


def _api() -> Api:
    return Api(ClientSettings.from_environ())


def _declarations(
    tools: list[str] | None,
    resources: list[str] | None,
    data_classes: list[str] | None,
    connections: str | None,
    autonomy: str | None,
    may_call_agents: bool | None,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pairs = {
        "tools": tools,
        "resources": resources,
        "data_classes": data_classes,
        "external_connections": connections,
        "autonomy": autonomy,
        "may_call_agents": may_call_agents,
    }
    for key, value in pairs.items():
        if value is not None and value != []:
            out[key] = value
    return out


Tools = Annotated[list[str] | None, typer.Option("--tool", help="A tool it may call (repeat)")]
Resources = Annotated[
    list[str] | None, typer.Option("--resource", help="A resource it touches (repeat)")
]
DataClasses = Annotated[
    list[str] | None,
    typer.Option("--data-class", help="public | internal | confidential | restricted (repeat)"),
]
Connections = Annotated[
    str | None, typer.Option("--connections", help="none | internal | internet")
]
Autonomy = Annotated[
    str | None, typer.Option("--autonomy", help="human-in-the-loop | supervised | autonomous")
]
CallsAgents = Annotated[
    bool | None, typer.Option("--may-call-agents/--no-call-agents", help="may it call agents")
]


@app.command()
def register(
    name: str,
    owner: Annotated[list[str], typer.Option("--owner", help="An owner (repeat; at least one)")],
    output: OutputOpt = Output.TABLE,
    description: Annotated[str, typer.Option(help="What the agent is for")] = "",
    tool: Tools = None,
    resource: Resources = None,
    data_class: DataClasses = None,
    connections: Connections = None,
    autonomy: Autonomy = None,
    may_call_agents: CallsAgents = None,
) -> None:
    """Register an agent; its risk is assessed (critical ones wait for approval)."""
    decl = _declarations(tool, resource, data_class, connections, autonomy, may_call_agents)
    body = {"name": name, "owners": owner, "description": description, "declarations": decl}
    with _api() as api:
        show(api.call("POST", "/v1/agents", json=body), output)


@app.command("list")
def list_agents(
    output: OutputOpt = Output.TABLE,
    state: Annotated[str | None, typer.Option(help="Only agents in this state")] = None,
) -> None:
    """List agents."""
    params = {"state": state} if state else {}
    with _api() as api:
        rows = api.call("GET", "/v1/agents", params=params)["agents"]
    show_rows(rows, _COLUMNS, output)


@app.command("show")
def show_agent(name: str, output: OutputOpt = Output.TABLE) -> None:
    """Show an agent with its latest risk factors."""
    with _api() as api:
        agent = api.call("GET", f"/v1/agents/{name}")
        agent["assessments"] = api.call("GET", f"/v1/agents/{name}/assessments")["assessments"]
        agent["instances"] = api.call("GET", f"/v1/agents/{name}/instances")["instances"]
    show(agent, output)


@app.command()
def update(
    name: str,
    output: OutputOpt = Output.TABLE,
    owner: Annotated[list[str] | None, typer.Option("--owner", help="Replace owners")] = None,
    description: Annotated[str | None, typer.Option(help="Replace the description")] = None,
    tool: Tools = None,
    resource: Resources = None,
    data_class: DataClasses = None,
    connections: Connections = None,
    autonomy: Autonomy = None,
    may_call_agents: CallsAgents = None,
) -> None:
    """Change an agent; new declarations are merged into the current ones and re-assessed."""
    decl = _declarations(tool, resource, data_class, connections, autonomy, may_call_agents)
    body: dict[str, Any] = {}
    with _api() as api:
        if decl:
            current = api.call("GET", f"/v1/agents/{name}")["declarations"]
            body["declarations"] = current | decl
        if owner:
            body["owners"] = owner
        if description is not None:
            body["description"] = description
        show(api.call("PATCH", f"/v1/agents/{name}", json=body), output)


def _state_command(action: str, doc: str) -> None:
    def command(
        name: str,
        output: OutputOpt = Output.TABLE,
        reason: Annotated[str | None, typer.Option(help="Why (kept in the audit log)")] = None,
    ) -> None:
        body = {"reason": reason} if reason else None
        with _api() as api:
            show(api.call("POST", f"/v1/agents/{name}/{action}", json=body), output)

    command.__doc__ = doc
    app.command(action)(command)


_state_command("suspend", "Suspend an agent: it can no longer authenticate.")
_state_command("resume", "Resume a suspended (or, for security admins, quarantined) agent.")
_state_command("quarantine", "Quarantine an agent: it can no longer authenticate.")
_state_command("retire", "Retire an agent for good.")
_state_command("approve", "Approve an agent waiting for security review.")


@app.command("revoke-tokens")
def revoke_tokens(
    name: Annotated[
        str | None, typer.Argument(help="The agent whose tokens to revoke (leave out with --jti)")
    ] = None,
    output: OutputOpt = Output.TABLE,
    instance: Annotated[
        str | None, typer.Option(help="Only the tokens of this instance of the agent")
    ] = None,
    jti: Annotated[
        str | None,
        typer.Option(help="Only the one token with this jti (admins only: a jti names no owner)"),
    ] = None,
    reason: Annotated[str | None, typer.Option(help="Why (kept in the audit log)")] = None,
) -> None:
    """Revoke JWT-SVIDs before they expire: decisions refuse them at once. An agent or
    instance revocation also covers tokens issued up to 30 s after it; later ones work
    (unless the agent is stopped)."""
    body: dict[str, Any]
    if jti is not None:
        if name is not None or instance is not None:
            fail("--jti names one token of any agent: leave out NAME and --instance", INVALID_INPUT)
        body = {"jti": jti}
    elif name is not None:
        body = {"agent": name} | ({"instance": instance} if instance else {})
    else:
        fail("name the agent (NAME) or one token (--jti)", INVALID_INPUT)
    if reason:
        body["reason"] = reason
    with _api() as api:
        show(api.call("POST", "/v1/svid/revocations", json=body), output)


@key_app.command("add")
def key_add(
    name: str,
    jwk_file: Annotated[Path, typer.Option("--jwk", help="A public JWK (JSON file)")],
    output: OutputOpt = Output.TABLE,
) -> None:
    """Register a public key; its kid is the RFC 7638 thumbprint."""
    try:
        jwk = json.loads(jwk_file.read_text())
    except (OSError, ValueError) as exc:
        fail(f"cannot read a JWK from {jwk_file}: {exc}", INVALID_INPUT)
    with _api() as api:
        show(api.call("POST", f"/v1/agents/{name}/keys", json={"jwk": jwk}), output)


@key_app.command("list")
def key_list(name: str, output: OutputOpt = Output.TABLE) -> None:
    """List an agent's keys."""
    with _api() as api:
        rows = api.call("GET", f"/v1/agents/{name}/keys", params={"include_removed": True})
    show_rows(rows["keys"], ("kid", "alg", "created_at", "removed_at"), output)


@key_app.command("remove")
def key_remove(name: str, kid: str, output: OutputOpt = Output.TABLE) -> None:
    """Remove a key: assertions signed with it are refused from now on."""
    with _api() as api:
        show(api.call("DELETE", f"/v1/agents/{name}/keys/{kid}"), output)

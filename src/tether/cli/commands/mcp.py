"""``tether mcp …``: the MCP gateway's upstream servers and the pins of their tools.

Platform admins add and remove servers and approve tools; auditors and developers read them.
Adding a server lists its tools (a server that cannot be reached is not added) and approves
the clean ones at once; a tool whose definition holds invisible characters, or whose name
another server's approved tool has, waits for ``approve-tool``, as does a tool whose
definition changed after it was approved (quarantined). A server that takes a credential is
listed first when an agent calls it (with the agent's lease): its tools wait for
``approve-tool`` too.

Everything a server says of its tools is shown as text: markup in a description is printed
literally, and characters a terminal would act on or a reader would not see are shown as
``<U+XXXX>``. A table shows only the first line of a description; ``--output json`` has every
tool's whole definition, to review before approving it.

Example::

    $ tether mcp add files --command "npx -y @modelcontextprotocol/server-filesystem /srv"
    $ tether mcp add crm --url https://crm.internal/mcp --allow-tool search \\
        --credential-engine vault-main --credential-role crm-api
    $ tether mcp show crm -o json
    $ tether mcp approve-tool crm search --digest sha256:…
    $ tether mcp remove files --yes
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

import typer

from tether.cli.client import Api, fail
from tether.cli.exit_codes import ERROR, INVALID_INPUT
from tether.cli.options import OutputOpt
from tether.cli.output import Output, console, glyphs, show, show_rows, visible
from tether.config import ClientSettings

app = typer.Typer(
    help="The MCP gateway: upstream MCP servers and the pins of their tools.",
    no_args_is_help=True,
)

_SERVER_COLUMNS = ("name", "transport", "target", "credential", "allowed_tools")
#: ``add``: each tool as listed (``digest``: its definition's, short).
_BRIEF_COLUMNS = ("tool", "state", "reason", "digest", "description")
_TOOL_COLUMNS = ("tool", "state", "reason", "digest", "seen_digest", "approved", "description")
#: Hex digits of a digest a table shows (the whole one is printed where it is to be copied).
_SHORT = 8
#: Characters of a description's first line a table shows.
_DESCRIPTION = 60
#: Adding lists the server's tools: starting a stdio server may take the server seconds, and
#: it waits up to 30 s for the start and 60 s for the answer.
_ADD_TIMEOUT = 100.0


def _api(timeout: float = 10.0) -> Api:
    return Api(ClientSettings.from_environ(), timeout=timeout)


def _path(name: str, *rest: str) -> str:
    """``/v1/mcp/servers/NAME/…``, each part escaped (a tool's name is the server's: it may
    hold ``?``, ``#`` or ``/``)."""
    return "/".join(["/v1/mcp/servers", *(quote(part, safe="") for part in (name, *rest))])


# -- showing what a server says --------------------------------------------------------------


def _first_line(description: Any) -> str:
    """The first line of a description, visible, cut at :data:`_DESCRIPTION` characters
    (``…`` when anything was left out)."""
    if not isinstance(description, str):
        return ""
    lines = description.strip().splitlines()
    shapes = glyphs(lines[0]) if lines else []
    shown, length = [], 0
    for glyph in shapes:
        if length + len(glyph) > _DESCRIPTION - 1:
            break
        shown.append(glyph)
        length += len(glyph)
    cut = len(shown) < len(shapes) or len(lines) > 1
    return "".join(shown).rstrip() + ("…" if cut else "")


def _short(digest: Any) -> str:
    """``sha256:`` and the first hex digits of a digest."""
    if not isinstance(digest, str):
        return ""
    algorithm, _, hexdigits = digest.partition(":")
    return visible(f"{algorithm}:{hexdigits[:_SHORT]}" if hexdigits else digest[:_SHORT])


def _to_the_second(moment: Any) -> str:
    """An ISO 8601 time without its fraction of a second."""
    if not isinstance(moment, str):
        return ""
    return datetime.fromisoformat(moment).replace(microsecond=0).isoformat()


def _target(server: Mapping[str, Any]) -> str:
    """Where the gateway reaches it: the URL, or the command line."""
    if server.get("url"):
        return visible(server["url"])
    return visible(shlex.join(server.get("command") or ()))


def _credential(server: Mapping[str, Any]) -> str:
    credential = server.get("credential")
    if not credential:
        return ""
    where = (
        f"header {credential['header']}"
        if credential.get("header")
        else f"env {credential.get('env')}"
    )
    return visible(f"{credential['engine']}/{credential['role']} ({where})")


def _allowed(server: Mapping[str, Any], *, brief: bool) -> str:
    """The allow-list: how many tools (brief) or their names; ``any`` without one."""
    tools = server.get("allowed_tools")
    if tools is None:
        return "any"
    return str(len(tools)) if brief else " ".join(visible(t) for t in tools)


def _server_row(server: Mapping[str, Any]) -> dict[str, str]:
    return {
        "name": visible(server["name"]),
        "transport": visible(server["transport"]),
        "target": _target(server),
        "credential": _credential(server),
        "allowed_tools": _allowed(server, brief=True),
    }


def _approved(pin: Mapping[str, Any]) -> str:
    """Who approved the tool's pinned definition, and (on a line of its own) when."""
    at = _to_the_second(pin.get("approved_at"))
    return visible(pin.get("approved_by")) + (f"\n{at}" if at else "")


def _tool_row(pin: Mapping[str, Any], *, brief: bool) -> dict[str, str]:
    """A tool's row (``brief``: ``digest`` is the digest of the definition as listed)."""
    definition = pin.get("definition") or {}
    return {
        "tool": visible(pin["tool"]),
        "state": visible(pin["state"]),
        "reason": visible(pin.get("reason")),
        "digest": _short(pin.get("seen_digest") if brief else pin.get("digest")),
        "seen_digest": _short(pin.get("seen_digest")),
        "approved": _approved(pin),
        "description": _first_line(definition.get("description")),
    }


def _say(line: str) -> None:
    """One line of text, never read as markup, never wrapped (so a digest can be copied)."""
    console.print(line, markup=False, highlight=False, soft_wrap=True)


def _waiting(server: Mapping[str, Any], tools: Sequence[Mapping[str, Any]]) -> None:
    """For each tool agents cannot use, how to approve the definition shown."""
    name = visible(server["name"])
    held = [pin for pin in tools if not pin.get("usable")]
    if held:
        _say(f"Waiting for review (whole definitions: tether mcp show {name} --output json):")
    for pin in held:
        tool = shlex.quote(visible(pin["tool"]))
        digest = visible(pin.get("seen_digest"))
        _say(f"  tether mcp approve-tool {name} {tool} --digest {digest}")


def _show_server(answer: Mapping[str, Any], output: Output, *, brief: bool) -> None:
    """A server, its tools (a row each) and how to approve those that wait; JSON: as is."""
    if output is Output.JSON:
        show(answer, output)
        return
    facts = _server_row(answer) | {
        "allowed_tools": _allowed(answer, brief=False),
        "created_by": visible(answer.get("created_by")),
        "created_at": _to_the_second(answer.get("created_at")),
        "version": visible(answer.get("version")),
    }
    show(facts, output)
    tools = answer.get("tools") or []
    if not tools and answer.get("credential"):
        _say("Its tools are listed when an agent first calls it (with the agent's lease);")
        _say(f"they wait for review then: tether mcp show {visible(answer['name'])}")
        return
    columns = _BRIEF_COLUMNS if brief else _TOOL_COLUMNS
    show_rows([_tool_row(pin, brief=brief) for pin in tools], columns, output)
    _waiting(answer, tools)


# -- what add sends ----------------------------------------------------------------------------


def _argv(command: str) -> list[str]:
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        fail(f"--command: {exc}", INVALID_INPUT)
    if not argv:
        fail("--command names no program", INVALID_INPUT)
    return argv


def _injection(
    *,
    http: bool,
    engine: str | None,
    role: str | None,
    header: str | None,
    prefix: str | None,
    env: str | None,
) -> dict[str, Any] | None:
    """The credential to send upstream, or None; each option only where it applies."""
    if (engine is None) != (role is None):
        fail("give --credential-engine and --credential-role together", INVALID_INPUT)
    if engine is None:
        if header is not None or prefix is not None or env is not None:
            fail(
                "--header, --prefix and --env say where the credential goes: "
                "give --credential-engine and --credential-role",
                INVALID_INPUT,
            )
        return None
    credential: dict[str, Any] = {"engine": engine, "role": role}
    if http:
        if env is not None:
            fail("--env is for a stdio server (--command); use --header", INVALID_INPUT)
        return credential | {
            k: v for k, v in {"header": header, "prefix": prefix}.items() if v is not None
        }
    if header is not None or prefix is not None:
        fail("--header and --prefix are for an HTTP server (--url); use --env", INVALID_INPUT)
    if env is None:
        fail(
            "a stdio server gets its credential in an environment variable: give --env",
            INVALID_INPUT,
        )
    return credential | {"env": env}


# -- commands --------------------------------------------------------------------------------


#: The options of ``tether mcp add``.
_Url = Annotated[str | None, typer.Option(help="Its streamable-HTTP endpoint (or --command)")]
_Command = Annotated[
    str | None,
    typer.Option(
        help="Start it as a child process speaking stdio: one string, split as a shell "
        'would ("npx -y some-server /srv"); or --url'
    ),
]
_Engine = Annotated[
    str | None,
    typer.Option(help="Send it a credential: a lease of this engine, taken by the agent"),
]
_Role = Annotated[str | None, typer.Option(help="The engine role of that lease")]
_Header = Annotated[
    str | None,
    typer.Option(help="HTTP: the header the credential goes in (default: Authorization)"),
]
_Prefix = Annotated[
    str | None, typer.Option(help='HTTP: the text before the credential (default: "Bearer ")')
]
_Env = Annotated[
    str | None, typer.Option(help="stdio: the environment variable the credential goes in")
]
_AllowTool = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-tool",
        help="The only tools ever offered (repeat); without it every tool (policies decide)",
    ),
]


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Agents reach it at /mcp/NAME")],
    url: _Url = None,
    command: _Command = None,
    credential_engine: _Engine = None,
    credential_role: _Role = None,
    header: _Header = None,
    prefix: _Prefix = None,
    env: _Env = None,
    allow_tool: _AllowTool = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Add an upstream MCP server; its clean tools are approved (pinned) at once.

    Its tools are listed first (a server that cannot be reached is not added); a tool with
    invisible characters in its definition, or named as another server's approved tool,
    waits for approve-tool."""
    if (url is None) == (command is None):
        fail("give exactly one of --url (streamable HTTP) and --command (stdio)", INVALID_INPUT)
    body: dict[str, Any] = {"name": name}
    if url is not None:
        body["url"] = url
    elif command is not None:
        body["command"] = _argv(command)
    credential = _injection(
        http=url is not None,
        engine=credential_engine,
        role=credential_role,
        header=header,
        prefix=prefix,
        env=env,
    )
    if credential is not None:
        body["credential"] = credential
    if allow_tool:
        body["allowed_tools"] = allow_tool
    with _api(_ADD_TIMEOUT) as api:
        added = api.call("POST", "/v1/mcp/servers", json=body)
    _show_server(added, output, brief=True)


@app.command("list")
def list_servers(output: OutputOpt = Output.TABLE) -> None:
    """List the upstream MCP servers (allowed_tools: how many, or any)."""
    with _api() as api:
        servers = api.call("GET", "/v1/mcp/servers")["servers"]
    rows = servers if output is Output.JSON else [_server_row(s) for s in servers]
    show_rows(rows, _SERVER_COLUMNS, output)


@app.command("show")
def show_server(name: str, output: OutputOpt = Output.TABLE) -> None:
    """Show a server and its tools' pins.

    Each tool's state, why it waits, the digest approved and the digest of the definition
    last seen (what approve-tool --digest takes); --output json has whole definitions."""
    with _api() as api:
        _show_server(api.call("GET", _path(name)), output, brief=False)


def _confirmed(question: str) -> bool:
    """Asked on stderr; no answer (end of input) is no."""
    try:
        return typer.confirm(question, default=False, err=True)
    except typer.Abort:
        return False


@app.command("remove")
def remove(
    name: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Remove without asking")] = False,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Remove a server and the pins of its tools (asks first unless --yes).

    Agents lose its tools at once."""
    with _api() as api:
        if not yes:
            server = api.call("GET", _path(name))
            pins = len(server.get("tools") or ())
            question = (
                f"Remove MCP server {name} ({_target(server)}) and its {pins} tool pins?"
                " Agents lose its tools at once"
            )
            if not _confirmed(question):
                fail("not removed (answer y, or pass --yes)", ERROR)
        show(api.call("DELETE", _path(name)), output)


@app.command("approve-tool")
def approve_tool(
    name: str,
    tool: str,
    digest: Annotated[
        str | None,
        typer.Option(
            help="The seen_digest of the definition you reviewed (tether mcp show NAME): if "
            "the server's definition changed since, nothing is approved (exit 5). Without "
            "it, whatever definition the server showed last is approved"
        ),
    ] = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Approve (pin) a tool's definition, as reviewed.

    Agents may call the tool while the server still defines it so. Give --digest: the
    seen_digest you reviewed (tether mcp show NAME), so a definition that changed meanwhile
    is not approved."""
    body = {"digest": digest} if digest is not None else {}
    with _api() as api:
        pin = api.call("POST", _path(name, "tools", tool, "approve"), json=body)
    if output is Output.JSON:
        show(pin, output)
        return
    row = _tool_row(pin, brief=False)
    facts = {k: row[k] for k in ("tool", "state", "description")}
    by, at = visible(pin.get("approved_by")), _to_the_second(pin.get("approved_at"))
    show(facts | {"approved_by": by, "approved_at": at}, output)
    _say(f"pinned {visible(pin.get('digest'))}")

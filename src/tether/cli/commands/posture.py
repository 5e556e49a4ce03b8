"""``tether posture``: the fleet's standing state, and secrets living outside Tether.

``tether posture`` prints the report of ``GET /v1/posture`` (root, security admins, auditors):
agents by state and tier, ownerless agents, callers seen but not registered, standing
privileges, agents seen presenting a person's credentials, unused permissions with a
least-privilege policy, and the engines that keep secrets. ``--output json`` prints it as the
server sent it (sorted keys), so two runs on the same state print the same ``problems``.

``tether posture scan-secrets PATH`` finds credentials in code and configuration under PATH
with Yelp's ``detect-secrets`` (the ``scan`` extra: ``pip install 'tether[scan]'``), on this
machine. Only the SHA-256 digests of what it found go to the server
(``POST /v1/posture/secrets``, security admins), which answers which are the digest of a
secret one of its engines holds: a managed database's admin password in a file is a standing
credential. Nothing prints a found secret, only a redacted form (at most its first two
characters and its length). ``--no-match`` scans without asking the server.

Example::

    $ tether posture --days 30 --output json | jq '.problems'
    $ tether posture scan-secrets ./deploy --output json | jq '.findings[].status'
    "managed: engine pg-main (standing credential)"
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from tether.cli.client import Api, fail
from tether.cli.exit_codes import INVALID_INPUT
from tether.cli.options import OutputOpt
from tether.cli.output import Output, show, show_rows, show_text
from tether.config import ClientSettings
from tether.errors import ConfigError

app = typer.Typer(help="The posture: inventory, standing privileges, unused permissions.")

#: Folders never scanned: version control, dependencies, caches.
SKIP_DIRS = frozenset(
    {".git", ".hg", ".svn", ".venv", "venv", "node_modules", "__pycache__", ".tox",
     ".mypy_cache", ".pytest_cache", ".ruff_cache"}
)  # fmt: skip
#: Files larger than this are not scanned (built artefacts, data).
MAX_FILE_BYTES = 2 * 1024 * 1024
#: At most this many files are scanned.
MAX_FILES = 100_000
#: Digests sent per request (the server's cap).
BATCH = 10_000
INSTALL = "pip install 'tether[scan]'"
_PROBLEM_COLUMNS = ("kind", "subject", "summary")
_SOURCE_COLUMNS = ("engine", "kind", "location", "roles", "secrets")
_FINDING_COLUMNS = ("where", "type", "redacted", "status")


def _api() -> Api:
    return Api(ClientSettings.from_environ())


@app.callback(invoke_without_command=True)
def report(
    ctx: typer.Context,
    days: Annotated[int, typer.Option(help="The window of observed use, in days")] = 30,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Print the posture report (unless a subcommand is given)."""
    if ctx.invoked_subcommand is not None:
        return
    with _api() as api:
        data = api.call("GET", "/v1/posture", params={"days": days})
    if output is Output.JSON:
        show(data, output)
        return
    _print_report(data)


def _print_report(data: dict[str, Any]) -> None:
    agents = data["agents"]
    show({"agents": agents["total"], "by state": agents["by_state"],
          "by tier": agents["by_tier"], "policy version": data["policy"]["version"],
          "unused over": f"{data['days']} days"}, Output.TABLE)  # fmt: skip
    show_rows(data["problems"], _PROBLEM_COLUMNS, Output.TABLE)
    sources = [s | {"roles": ", ".join(s["roles"])} for s in data["secret_sources"]]
    show_rows(sources, _SOURCE_COLUMNS, Output.TABLE)
    for advice in data["unused_permissions"]:
        if advice["unused_permissions"] or advice["unused_declarations"]:
            show_text(f"\nSuggested policy for {advice['agent']}:")
            show_text(advice["suggested_policy"])


# -- scan-secrets -------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Found:
    """A secret found in a file: where, what kind, its digest and redacted form (never the
    value itself)."""

    file: str
    line: int
    type: str
    digest: str
    redacted: str


def redacted(value: str) -> str:
    """What may be shown of a found secret: its first two characters when it is long enough
    that they give little away, and its length.

    >>> redacted("superpw-for-tests"), redacted("short")
    ('su****** (17 characters)', '****** (5 characters)')
    """
    head = value[:2] if len(value) >= 12 else ""
    return f"{head}****** ({len(value)} characters)"


def files_under(path: Path) -> Iterator[Path]:
    """Regular files at or under ``path`` (not following links, skipping :data:`SKIP_DIRS`
    and files over :data:`MAX_FILE_BYTES`), in a stable order."""
    if path.is_file() and not path.is_symlink():
        yield path
        return
    count = 0
    for top, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(names):
            file = Path(top, name)
            if file.is_symlink() or not file.is_file():
                continue
            if file.stat().st_size > MAX_FILE_BYTES:
                continue
            count += 1
            if count > MAX_FILES:
                return
            yield file


def find_secrets(path: Path) -> list[Found]:
    """Secrets ``detect-secrets`` finds at or under ``path``, with its default plugins and
    filters (transient settings: nothing global is left changed)."""
    try:
        from detect_secrets.core.secrets_collection import SecretsCollection
        from detect_secrets.settings import default_settings
    except ImportError:
        fail(
            f"{ConfigError.code}: scanning needs detect-secrets, in the scan extra: {INSTALL}",
            INVALID_INPUT,
            hint=f"install it ({INSTALL}), or run from an environment that has it",
        )
    from tether.monitor.sprawl import digest

    base = path if path.is_dir() else path.parent
    collection = SecretsCollection(root=str(base))
    with default_settings():
        for file in files_under(path):
            collection.scan_file(file.relative_to(base).as_posix())
    found = {
        Found(file=Path(name).as_posix(), line=secret.line_number, type=secret.type,
              digest=digest(secret.secret_value), redacted=redacted(secret.secret_value))
        for name, secrets in collection.data.items()
        for secret in secrets
        if secret.secret_value
    }  # fmt: skip
    return sorted(found)


def _matches(found: Sequence[Found]) -> dict[str, list[dict[str, Any]]]:
    """The managed secrets each found digest is, by digest (asked in batches)."""
    digests = sorted({f.digest for f in found})
    managed: dict[str, list[dict[str, Any]]] = {}
    with _api() as api:
        for start in range(0, len(digests), BATCH):
            body = {"digests": digests[start : start + BATCH]}
            answer = api.call("POST", "/v1/posture/secrets", json=body)
            for match in answer["matches"]:
                held = {k: match[k] for k in ("engine", "kind", "name")}
                managed.setdefault(match["digest"], []).append(held)
    return managed


def _finding(found: Found, managed: list[dict[str, Any]] | None) -> dict[str, Any]:
    if managed is None:
        status, kind = "unchecked", "secret_in_file"
    elif managed:
        engines = ", ".join(sorted({m["engine"] for m in managed}))
        status, kind = f"managed: engine {engines} (standing credential)", "managed_secret_in_file"
    else:
        status, kind = "unmanaged", "secret_in_file"
    return {
        "kind": kind, "file": found.file, "line": found.line, "type": found.type,
        "redacted": found.redacted, "managed": managed or [], "status": status,
    }  # fmt: skip


@app.command("scan-secrets")
def scan_secrets(
    path: Annotated[Path, typer.Argument(help="A file or folder to scan", exists=True)],
    match: Annotated[
        bool, typer.Option("--match/--no-match", help="Ask the server which are managed")
    ] = True,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Find credentials in code and configuration; tell which are secrets Tether manages."""
    found = find_secrets(path)
    managed = _matches(found) if match and found else {}
    findings = [_finding(f, managed.get(f.digest, []) if match else None) for f in found]
    if output is Output.JSON:
        show({"path": str(path), "checked": match, "findings": findings}, output)
        return
    rows = [f | {"where": f"{f['file']}:{f['line']}"} for f in findings]
    show_rows(rows, _FINDING_COLUMNS, output)

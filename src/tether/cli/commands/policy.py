"""``tether policy …``: the operators' Cedar policy set from the command line.

``PATH`` is a ``.cedar`` file or a directory of them (read in name order, joined).

What the server says (policy text, diffs, the schema, validation errors) is printed as text,
never markup, with every character a terminal would act on shown as ``<U+XXXX>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from tether.cli.client import Api, fail
from tether.cli.exit_codes import INVALID_INPUT
from tether.cli.options import OutputOpt
from tether.cli.output import Output, console, printable, show, show_rows, show_text
from tether.config import ClientSettings

app = typer.Typer(
    help="Cedar policies: check, apply, list, show, diff, roll back.", no_args_is_help=True
)

PathArg = Annotated[Path, typer.Argument(help="A .cedar file, or a directory of them")]


def _api() -> Api:
    return Api(ClientSettings.from_environ())


def read_policies(path: Path) -> str:
    """The policy text at ``path``: one file, or every ``*.cedar`` file of a directory."""
    if path.is_dir():
        files = sorted(path.glob("*.cedar"))
        if not files:
            fail(f"no .cedar files in {path}", INVALID_INPUT)
        return "\n".join(f"// {f.name}\n{f.read_text(encoding='utf-8')}" for f in files)
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}", INVALID_INPUT)


def _without_text(data: dict[str, Any]) -> dict[str, Any]:
    """A version's facts without its (long) text, for a table."""
    return {k: v for k, v in data.items() if k != "text"}


def _text_or_json(data: dict[str, Any], output: Output) -> None:
    if output is Output.JSON:
        show(data, output)
        return
    show(_without_text(data), output)
    if "text" in data:
        show_text(data["text"])


@app.command()
def validate(path: PathArg, output: OutputOpt = Output.TABLE) -> None:
    """Check policies against the server's schema without applying them (exit 3 if invalid)."""
    with _api() as api:
        result = api.call("POST", "/v1/policies/check", json={"text": read_policies(path)})
    if output is Output.JSON:
        show(result, output)
    elif result["valid"]:
        console.print("[green]valid[/]")
    else:
        for error in result["errors"]:
            console.print(Text(f"✗ {printable(error)}"))
    if not result["valid"]:
        raise typer.Exit(INVALID_INPUT)


@app.command()
def apply(
    path: PathArg,
    output: OutputOpt = Output.TABLE,
    comment: Annotated[str | None, typer.Option(help="Why (kept with the version)")] = None,
) -> None:
    """Apply policies: they become the next version and are in force at once."""
    body = {"text": read_policies(path), "comment": comment}
    with _api() as api:
        stored = api.call("POST", "/v1/policies", json=body)
    show(_without_text(stored), output)


@app.command("list")
def list_versions(output: OutputOpt = Output.TABLE) -> None:
    """Policy set versions, newest first."""
    with _api() as api:
        rows = api.call("GET", "/v1/policies")["versions"]
    show_rows(rows, ("version", "active", "created_at", "created_by", "comment"), output)


@app.command("show")
def show_version(
    version: Annotated[int | None, typer.Argument(help="Default: the active version")] = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """One version with its text."""
    with _api() as api:
        data = api.call("GET", f"/v1/policies/{version if version else 'active'}")
    _text_or_json(data, output)


@app.command()
def diff(
    old: Annotated[int, typer.Argument(help="From this version")],
    new: Annotated[int | None, typer.Argument(help="To this version (default: active)")] = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """What changed between two versions (unified diff)."""
    params = {"from": old} | ({"to": new} if new else {})
    with _api() as api:
        data = api.call("GET", "/v1/policies/diff", params=params)
    if output is Output.JSON:
        show(data, output)
    else:
        show_text(data["diff"] or "(no difference)")


@app.command()
def rollback(
    version: Annotated[int, typer.Argument(help="The version to put back in force")],
    output: OutputOpt = Output.TABLE,
) -> None:
    """Put an earlier version back in force (checked against today's schema first)."""
    with _api() as api:
        data = api.call("POST", f"/v1/policies/{version}/activate")
    show(_without_text(data), output)


@app.command()
def schema() -> None:
    """Print the Cedar schema policies are checked against."""
    with _api() as api:
        response = api.raw("GET", "/v1/policies/schema")
    show_text(response)


@app.command("test")
def run_policy_tests(
    policies: PathArg,
    tests: Annotated[Path, typer.Argument(help="A .toml test file, or a directory of them")],
    output: OutputOpt = Output.TABLE,
) -> None:
    """Run declarative policy tests locally, with the shipped schema and defaults (exit 3 on a
    failing case). Needs the server extras (the Cedar engine)."""
    from tether.errors import Error

    try:
        from tether.policy._cedar import CedarEngine
    except ImportError:  # pragma: no cover - only without the server extras
        fail("the Cedar engine is not installed: pip install 'tether[server]'", INVALID_INPUT)
    from tether.policy.testing import load_cases, run_cases

    files = sorted(tests.glob("*.toml")) if tests.is_dir() else [tests]
    engine = CedarEngine()
    try:
        compiled = engine.compile(read_policies(policies), version=None)
        cases = [c for f in files for c in load_cases(f.read_text("utf-8"), source=f.name)]
    except Error as exc:
        errors = exc.details.get("errors")
        detail = "\n".join(errors) if isinstance(errors, list) else ""
        fail(f"{exc.message}\n{detail}".strip(), INVALID_INPUT)
    results = run_cases(engine, compiled, cases)
    rows = [
        {
            "case": r.case.name,
            "passed": r.passed,
            "expected": str(r.case.expect),
            "got": str(r.decision.effect),
            "policies": ", ".join(r.decision.policy_ids),
            "reasons": "; ".join(r.decision.reasons),
        }
        for r in results
    ]
    show_rows(rows, ("case", "passed", "expected", "got", "policies"), output)
    failed = [r for r in results if not r.passed]
    if output is Output.TABLE:
        console.print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    if failed:
        raise typer.Exit(INVALID_INPUT)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """``90s``, ``30m``, ``24h``, ``7d`` → seconds."""
    unit = text[-1:].lower()
    if unit not in _UNITS or not text[:-1].isdigit():
        fail(f"not a duration: {text!r} (use 90s, 30m, 24h or 7d)", INVALID_INPUT)
    return int(text[:-1]) * _UNITS[unit]


@app.command()
def replay(
    path: PathArg,
    since: Annotated[str, typer.Option(help="How far back: 30m, 24h, 7d (at most 90d)")] = "7d",
    output: OutputOpt = Output.TABLE,
) -> None:
    """What if these policies had been in force? List every recorded decision they would flip,
    before anyone applies them (needs policy and audit read rights)."""
    body = {"text": read_policies(path), "since_seconds": parse_duration(since)}
    with _api() as api:
        report = api.call("POST", "/v1/policies/replay", json=body, timeout=120)
    if output is Output.JSON:
        show(report, output)
        return
    show_rows(
        report["flips"],
        ("time", "agent", "action", "resource", "before", "after", "after_policies"),
        output,
    )
    summary = (
        f"{len(report['flips'])} would flip of {report['evaluated']} decisions since "
        f"{report['since']} ({report['skipped']} not replayable)"
        + (" — list truncated" if report["truncated"] else "")
    )
    console.print(Text(printable(summary)))

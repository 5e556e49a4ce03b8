"""``tether audit …``: read, trace, verify, prove and export the tamper-evident audit log.

Reading needs a token with ``audit.read`` (an auditor or a security admin). Two commands work
offline, with nothing but the log's verifier key (``tether audit key``, shared out of band)::

    tether audit prove rec_… > bundle.json            # on a machine that reaches the server
    tether audit verify-bundle bundle.json --key "acme.org/audit+…"   # anywhere
    tether audit export > log.jsonl
    tether audit verify --file log.jsonl --checkpoint note.txt --key "acme.org/audit+…"

Exit code 8 means the log or bundle does not prove what it claims (the first bad index is
printed).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from tether.audit.bundle import BundleInvalid, signature_verifies, verify_bundle
from tether.audit.chain import LogInvalid, LogVerifier
from tether.audit.notes import NoteInvalid, TreeHead, open_note, parse_verifier_key
from tether.cli.client import Api, fail
from tether.cli.exit_codes import INVALID_INPUT, NOT_PROVEN
from tether.cli.options import OutputOpt
from tether.cli.output import Output, console, show, show_rows, visible
from tether.config import ClientSettings

app = typer.Typer(
    help="The audit log: tail, query, trace, verify, prove, export.", no_args_is_help=True
)

KeyOpt = Annotated[
    str, typer.Option("--key", help="The log's verifier key (from `tether audit key`)")
]
_COLUMNS = ("sequence", "time", "type", "actor", "subject", "outcome", "correlation_id")


def _api(*, timeout: float = 10.0) -> Api:
    return Api(ClientSettings.from_environ(), timeout=timeout)


#: Verifying or exporting a large log reads all of it: minutes, not seconds.
LONG = 3600.0


def _records(api: Api, **params: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = api.call("GET", "/v1/audit", params=params)["records"]
    return found


@app.command()
def query(
    output: OutputOpt = Output.TABLE,
    type_prefix: Annotated[str | None, typer.Option("--type", help="Type prefix")] = None,
    correlation_id: Annotated[str | None, typer.Option(help="One request's records")] = None,
    after: Annotated[int, typer.Option(help="After this sequence number")] = 0,
    limit: Annotated[int, typer.Option(help="At most this many (≤ 1000)")] = 100,
) -> None:
    """Records in order, filtered."""
    params = {"type_prefix": type_prefix, "correlation_id": correlation_id}
    with _api() as api:
        rows = _records(
            api, after=after, limit=limit, **{k: v for k, v in params.items() if v is not None}
        )
    show_rows(rows, _COLUMNS, output)


@app.command()
def tail(
    output: OutputOpt = Output.TABLE,
    lines: Annotated[int, typer.Option("-n", help="How many of the newest records")] = 20,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new ones")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between polls with --follow")] = 1.0,
) -> None:
    """The newest records; with ``--follow``, every new one as it is written."""
    with _api() as api:
        after, page = 0, _records(api, limit=1000)
        while len(page) == 1000:  # find the end
            after = page[-1]["sequence"]
            page = _records(api, after=after, limit=1000)
        rows = page[-lines:]
        show_rows(rows, _COLUMNS, output)
        after = rows[-1]["sequence"] if rows else after
        while follow:
            time.sleep(interval)
            new = _records(api, after=after, limit=1000)
            if new:
                show_rows(new, _COLUMNS, output)
                after = new[-1]["sequence"]


@app.command()
def trace(
    correlation_id: Annotated[str, typer.Argument(help="A request's correlation id")],
    output: OutputOpt = Output.TABLE,
) -> None:
    """One request end to end: user → agents → instance → action → resource, per record,
    with the policies that decided and the approver."""
    with _api() as api:
        found = api.call("GET", f"/v1/audit/trace/{correlation_id}")
    if output is Output.JSON:
        show(found, output)
        return
    for step in found["steps"]:
        for line in _trace_step(step):
            console.print(line)


def _trace_step(step: dict[str, Any]) -> list[Text]:
    """One step of a trace as printed: its time, type and effect in brackets (``[allow]``, as
    is), its path, and who decided. Text, never markup; each value from the server on one line
    (:func:`visible`), so a line break in one cannot pass for another step."""
    hops = " → ".join(f"{visible(h['kind'])} {visible(h['id'])}" for h in step["path"])
    effect = step["effect"] or step["outcome"]
    lines = [
        Text.assemble(
            (visible(step["time"]), "bold"), f" {visible(step['type'])} [{visible(effect)}]"
        ),
        Text(f"  {hops or visible(step['actor'])}"),
    ]
    extra = {k: step[k] for k in ("policy_ids", "approver", "approval_id", "grant_id") if step[k]}
    if extra:
        lines.append(Text(f"  {visible(json.dumps(extra))}"))
    return lines


@app.command()
def key(output: OutputOpt = Output.TABLE) -> None:
    """The verifier key of the log's signed checkpoints, to give to third parties."""
    with _api() as api:
        show(api.call("GET", "/v1/audit/key"), output)


@app.command("hash")
def hash_value(
    value: Annotated[str, typer.Argument(help="The value; '-' reads it from stdin")],
    output: OutputOpt = Output.TABLE,
) -> None:
    """The HMAC a decision record holds in place of a sensitive value (a password, a key)."""
    text = sys.stdin.read().rstrip("\n") if value == "-" else value
    with _api() as api:
        show(api.call("POST", "/v1/audit/hash", json={"value": text}), output)


@app.command()
def logs(output: OutputOpt = Output.TABLE) -> None:
    """Every replica's log: its size and its latest signed checkpoint (``--output json``
    prints the checkpoint notes, for ``verify --file``)."""
    with _api() as api:
        found = api.call("GET", "/v1/audit/logs")
    show_rows(found["logs"], ("log", "size", "signed_size", "signed_at"), output)


@app.command()
def prove(
    record_id: Annotated[str, typer.Argument(help="The record's id (rec_…)")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write it here")] = None,
) -> None:
    """A proof bundle for one record (record, inclusion proof, signed checkpoint)."""
    with _api() as api:
        bundle = api.call("GET", f"/v1/audit/records/{record_id}/proof")
    text = json.dumps(bundle, indent=2, sort_keys=True) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")


@app.command("verify-bundle")
def verify_bundle_command(
    bundle: Annotated[Path, typer.Argument(help="A bundle from `tether audit prove`")],
    verifier_key: KeyOpt,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Check a proof bundle offline, with only the verifier key (no server)."""
    try:
        record = verify_bundle(json.loads(bundle.read_bytes()), verifier_key=verifier_key)
    except (OSError, ValueError) as exc:  # BundleInvalid is a ValueError
        code = NOT_PROVEN if isinstance(exc, BundleInvalid) else INVALID_INPUT
        fail(f"not proven: {exc}", code)
    show({"proven": True, "record": record}, output)


@app.command()
def verify(
    output: OutputOpt = Output.TABLE,
    file: Annotated[
        Path | None, typer.Option(help="Verify this export (jsonl) offline instead of the server")
    ] = None,
    checkpoint: Annotated[
        list[Path] | None,
        typer.Option(help="Signed checkpoints for --file (notes or witness files)"),
    ] = None,
    verifier_key: Annotated[str | None, typer.Option("--key", help="Needed with --file")] = None,
) -> None:
    """Verify every replica's log on the server, or an export offline; exit 8 and name the
    first bad index if it does not verify."""
    if file is not None:
        if verifier_key is None or not checkpoint:
            fail("--file needs --key and at least one --checkpoint of its log", INVALID_INPUT)
        report = _verify_file(file, checkpoint or [], verifier_key)
        show(report, output)
        if not report["ok"]:
            raise typer.Exit(NOT_PROVEN)
        return
    with _api(timeout=LONG) as api:
        found = api.call("GET", "/v1/audit/verify")
    show_rows(
        found["logs"], ("log", "ok", "size", "signed_size", "first_bad_index", "reason"), output
    )
    if not found["ok"]:
        raise typer.Exit(NOT_PROVEN)


def _notes(paths: list[Path]) -> list[bytes]:
    """Signed notes from files: one note per file, or a witness file (JSON lines)."""
    notes: list[bytes] = []
    for path in paths:
        data = path.read_bytes()
        if data.startswith(b"{"):
            notes += [json.loads(line)["note"].encode() for line in data.splitlines() if line]
        else:
            notes.append(data)
    return notes


def _verify_file(file: Path, checkpoints: list[Path], verifier_key: str) -> dict[str, Any]:
    """The export checked against the signed checkpoints of the log it claims to be: a forged
    export naming another log finds no checkpoint of that log, and fails."""
    try:
        name, public_key = parse_verifier_key(verifier_key)
        heads = [
            TreeHead.parse(
                open_note(n, name=name, public_key=public_key, verify=signature_verifies)
            )
            for n in _notes(checkpoints)
        ]
        entries = file.read_bytes().splitlines()
    except (OSError, ValueError) as exc:  # NoteInvalid is a ValueError
        code = NOT_PROVEN if isinstance(exc, NoteInvalid) else INVALID_INPUT
        fail(f"cannot use the input: {exc}", code)
    try:
        origin = str(json.loads(entries[0])["log"]) if entries else ""
    except (ValueError, KeyError, TypeError):
        origin = ""
    signed = {h.size: h.root for h in heads if h.origin == origin}
    if not signed:
        return {
            "log": origin,
            "entries": len(entries),
            "ok": False,
            "first_bad_index": 0,
            "reason": "no signed checkpoint given is of the log this export claims to be",
        }
    report: dict[str, Any] = {"log": origin, "entries": len(entries), "checkpoints": len(signed)}
    verifier = LogVerifier(origin=origin, checkpoints=signed, strict=True)
    try:
        verifier.feed(entries)
        state = verifier.finish()
    except LogInvalid as exc:
        return report | {"ok": False, "first_bad_index": exc.index, "reason": exc.reason}
    return report | {
        "ok": True,
        "size": state.size,
        "signed_size": max(signed),
        "unsigned": state.size - max(signed),
    }


@app.command()
def export(
    output_format: Annotated[
        str, typer.Option("--format", help="jsonl (the exact entries) | ocsf (OCSF events)")
    ] = "jsonl",
    log: Annotated[
        str | None, typer.Option(help="Which replica's log (default: the server's)")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write here, not stdout")] = None,
) -> None:
    """A log as JSON lines: its exact entries (verifiable) or OCSF events for a SIEM."""
    if output_format not in {"jsonl", "ocsf"}:
        fail("--format is jsonl or ocsf", INVALID_INPUT)
    params = {"format": output_format} | ({"log": log} if log else {})
    with _api(timeout=LONG) as api:
        if out is None:
            api.download("/v1/audit/export", sys.stdout.buffer, params=params)
        else:
            with out.open("wb") as file:
                api.download("/v1/audit/export", file, params=params)

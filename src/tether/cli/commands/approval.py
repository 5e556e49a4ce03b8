"""``tether approval …``: approval requests (OpenID CIBA), where an agent asks a person to
approve exact calls.

Each request carries RFC 9396 ``authorization_details`` items, one per call, numbered from 0.
The person asked approves all of them, some (``--item N``, repeated) or none (``deny``), with
their own sign-in: the token ``tether login`` stored, or their access token in
``TETHER_TOKEN``. An operator token is refused (6): no one answers for a person. A person
lists and shows only the requests made to them; security admins and auditors read everyone's.

Example::

    $ printf '%s\\n' "$ALICE_PASSWORD" | tether login --username alice --password-stdin
    $ tether approval list --state pending
    $ tether approval show apr_…
    $ tether approval approve apr_… --item 1
    $ tether approval deny apr_…
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any

import typer

from tether.cli.client import Api
from tether.cli.options import OutputOpt
from tether.cli.output import Output, show, show_rows
from tether.config import ClientSettings
from tether.delegation.models import ApprovalState

app = typer.Typer(
    help="Approval requests: an agent asks a person to approve exact calls.",
    no_args_is_help=True,
)

_COLUMNS = ("id", "agent", "state", "binding_message", "asks", "expires_at")
_ITEM_COLUMNS = ("item", "type", "fields")
_DETAILS, _DIGEST = "authorization_details", "call_digest"
#: How much of a field's value the list shows (``show`` shows it whole).
_BRIEF = 24


def _api() -> Api:
    return Api(ClientSettings.from_environ())


def _value(value: Any, *, brief: bool) -> str:
    """A field's value as text; cut short if brief."""
    text = json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else str(value)
    if not brief or len(text) <= _BRIEF:
        return text
    return text[: _BRIEF - 1] + "…"


def _fields(item: Mapping[str, Any], *, brief: bool) -> str:
    """An item's fields but its ``type``, as ``name=value``, one per line; if brief, on one
    line, cut short and without the call digest (opaque to people: ``show`` has it)."""
    hidden = {"type", _DIGEST} if brief else {"type"}
    pairs = [f"{k}={_value(v, brief=brief)}" for k, v in sorted(item.items()) if k not in hidden]
    return (" " if brief else "\n").join(pairs)


def _asks(items: Sequence[Mapping[str, Any]]) -> str:
    """What a request asks, in brief: an item per line, with its position (what ``--item``
    names)."""
    return "\n".join(
        f"{position}: {item.get('type')} {_fields(item, brief=True)}".rstrip()
        for position, item in enumerate(items)
    )


def _to_the_second(moment: str) -> str:
    """An ISO 8601 time without its fraction of a second."""
    return datetime.fromisoformat(moment).replace(microsecond=0).isoformat()


def _rows(approvals: Sequence[dict[str, Any]], output: Output) -> None:
    """A table shows what each request asks in brief, and when it expires to the second;
    JSON keeps everything."""
    if output is Output.TABLE:
        approvals = [
            a
            | {
                "asks": _asks(a.get(_DETAILS, ())),
                "expires_at": _to_the_second(a["expires_at"]),
            }
            for a in approvals
        ]
    show_rows(approvals, _COLUMNS, output)


def _show(approval: dict[str, Any], output: Output) -> None:
    """Everything about a request; a table lists each item on its own row, numbered."""
    if output is Output.JSON:
        show(approval, output)
        return
    lists = {k: " ".join(str(v) for v in approval.get(k, ())) for k in ("scope", "approved")}
    show({k: v for k, v in approval.items() if k != _DETAILS} | lists, output)
    items = [
        {"item": position, "type": item.get("type"), "fields": _fields(item, brief=False)}
        for position, item in enumerate(approval.get(_DETAILS, ()))
    ]
    show_rows(items, _ITEM_COLUMNS, output)


@app.command("list")
def list_approvals(
    output: OutputOpt = Output.TABLE,
    state: Annotated[ApprovalState | None, typer.Option(help="Only those in this state")] = None,
    user: Annotated[str | None, typer.Option(help="Only those asking this user")] = None,
    agent: Annotated[str | None, typer.Option(help="Only this agent's")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many (1 to 500)")] = None,
    after: Annotated[str | None, typer.Option(help="Those after this request id (paging)")] = None,
) -> None:
    """List approval requests (a person sees only those made to them). A request past its
    time shows as expired: a timeout is a refusal."""
    params: dict[str, Any] = {
        k: v
        for k, v in {
            "state": state,
            "user": user,
            "agent": agent,
            "limit": limit,
            "after": after,
        }.items()
        if v
    }
    with _api() as api:
        rows = api.call("GET", "/v1/approvals", params=params)["approvals"]
    _rows(rows, output)


@app.command("show")
def show_approval(approval_id: str, output: OutputOpt = Output.TABLE) -> None:
    """Show an approval request, each item with its position (what --item names)."""
    with _api() as api:
        _show(api.call("GET", f"/v1/approvals/{approval_id}"), output)


@app.command()
def approve(
    approval_id: str,
    item: Annotated[
        list[int] | None,
        typer.Option("--item", min=0, help="Approve only the item at this position (repeat)"),
    ] = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Approve a request: every item, or only those named. Only the person asked, with their
    own sign-in (an operator token is refused)."""
    body = {"items": item} if item else {}
    with _api() as api:
        _show(api.call("POST", f"/v1/approvals/{approval_id}/approve", json=body), output)


@app.command()
def deny(approval_id: str, output: OutputOpt = Output.TABLE) -> None:
    """Refuse a request, every item of it. Only the person asked, with their own sign-in."""
    with _api() as api:
        _show(api.call("POST", f"/v1/approvals/{approval_id}/deny"), output)

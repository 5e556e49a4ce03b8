"""The CLI's HTTP client: one place that talks to the server and turns errors into exit codes.

An error is printed as text (never markup; a character a terminal would act on is shown as
``<U+XXXX>``), with the short details the server sent (``rule``, ``seen_digest``, …) and a
hint chosen by the error's code and the command group it concerns, not by the exit code
alone: a missing MCP server is looked for with ``tether mcp list``, and an upstream MCP
server or credential engine that is down is not a Tether server to start."""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from typing import IO, Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.text import Text

from tether.cli import exit_codes
from tether.cli.output import printable
from tether.config import ClientSettings

__all__ = ["Api", "fail", "hint_for"]

err = Console(stderr=True)

#: The command group an API path concerns: the path's first part after ``/v1/``.
_GROUP_OF_PATH = {
    "agents": "agent",
    "alerts": "alert",
    "approvals": "approval",
    "audit": "audit",
    "clients": "client",
    "engines": "engine",
    "grants": "grant",
    "leases": "lease",
    "mcp": "mcp",
    "policies": "policy",
    "posture": "posture",
    "svid": "agent",
    "tokens": "token",
    "users": "user",
}
#: The command group an error code names, whatever the path (``tether lease issue`` may name
#: an engine that does not exist).
_GROUP_OF_CODE = {
    "agent_exists": "agent",
    "agent_not_found": "agent",
    "alert_not_found": "alert",
    "approval_not_found": "approval",
    "client_not_found": "client",
    "engine_exists": "engine",
    "engine_not_found": "engine",
    "grant_not_found": "grant",
    "key_exists": "agent",
    "key_not_found": "agent",
    "lease_max_ttl_reached": "lease",
    "lease_not_found": "lease",
    "mcp_server_exists": "mcp",
    "mcp_server_not_found": "mcp",
    "operator_token_not_found": "token",
    "policy_set_not_found": "policy",
    "user_exists": "user",
    "user_not_found": "user",
}
#: What each group's ``show`` takes (a group not here has no ``show``: its ``list`` is named).
_SHOWN_BY = {
    "agent": "NAME",
    "alert": "ID",
    "approval": "ID",
    "engine": "NAME",
    "grant": "ID",
    "lease": "ID",
    "mcp": "NAME",
    "policy": "VERSION",
    "user": "NAME",
}
#: Hints for error codes whose exit code's hint would mislead, whatever the group.
_HINT_OF_CODE = {
    "key_not_found": "check the key id: `tether agent key list NAME` shows an agent's keys",
    "mcp_server_not_found": (
        "check the names: `tether mcp list` shows the MCP servers, `tether mcp show NAME` "
        "the tools a server has shown"
    ),
    "lease_max_ttl_reached": (
        "the lease cannot be renewed past its role's max TTL: issue a new one "
        "(`tether lease issue`)"
    ),
    "store_unavailable": (
        "the Tether server answered but its database is unavailable: try again shortly; if it "
        "persists, check the server's database"
    ),
    "audit_log_invalid": (
        "the server's audit log does not verify, so nothing more is recorded or done: "
        "`tether audit verify` names the first bad index"
    ),
    "audit_unavailable": (
        "the server could not record this in its audit log, so it was not done: try again "
        "shortly; if it persists, check the server's log"
    ),
    "temporarily_unavailable": "the server answered but cannot serve this now: try again shortly",
    "engine_unavailable": (
        "a credential engine (not Tether: it answered) cannot be reached or failed: check the "
        "database it manages (`tether engine show NAME` shows its settings), then try again"
    ),
    "audit_log_position_taken": "the audit log moved on meanwhile: try again",
}
#: ``(code, group)`` pairs whose hint is their own.
_HINT_OF_CODE_IN_GROUP = {
    ("engine_unavailable", "mcp"): (
        "an upstream MCP server (not Tether: it answered) cannot be reached or failed: check "
        "that it runs and that the Tether server can reach its URL or start its command"
    ),
    ("version_conflict", "mcp"): (
        "the tool's definition changed since you looked: review it again "
        "(`tether mcp show NAME --output json`) and approve-tool --digest the seen_digest "
        "you reviewed"
    ),
}
#: The audit group's hints where REMEDY's (about agents) would mislead.
_AUDIT_HINT = {
    exit_codes.NOT_FOUND: "check the id: `tether audit query` shows the records",
}
#: Details printed after an error's message: short strings under plain names. The server
#: never puts a secret in details; a name that speaks of one is left out all the same.
_DETAIL_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
_DETAIL_MAX = 100
_SECRET_WORDS = frozenset(
    {"assertion", "credential", "key", "passwd", "password", "private", "secret", "token"}
)


def fail(message: str, code: int, *, hint: str | None = None) -> NoReturn:
    """Print ``message`` and a hint (``hint``, or the exit code's) on stderr; exit ``code``.

    The message is printed as text: never read as markup, and every character a terminal
    would act on shown as ``<U+XXXX>`` (it often holds the server's words). Never wrapped, so
    a digest or an id in it can be copied."""
    err.print(
        Text.assemble(("error:", "bold red"), " ", printable(message)),
        soft_wrap=True,
    )
    remedy = exit_codes.REMEDY.get(code) if hint is None else hint
    if remedy:
        err.print(Text(f"hint: {printable(remedy)}", style="dim"), soft_wrap=True)
    raise typer.Exit(code)


def _group(path: str) -> str | None:
    """The command group an API path concerns (``/v1/mcp/servers/x`` → ``mcp``), or None."""
    parts = httpx.URL(path).path.strip("/").split("/")
    return _GROUP_OF_PATH.get(parts[1]) if len(parts) > 1 and parts[0] == "v1" else None


def hint_for(exit_code: int, error: str | None, group: str | None) -> str | None:
    """The hint for an error: by its ``error`` code and the command ``group`` it concerns
    where the exit code's own hint (:data:`exit_codes.REMEDY`) would mislead, else that.

    >>> hint_for(exit_codes.NOT_FOUND, "not_found", "engine")
    'check the name: `tether engine list` shows what exists'
    """
    code = error or ""
    group = _GROUP_OF_CODE.get(code, group)
    hint = _HINT_OF_CODE_IN_GROUP.get((code, group or "")) or _HINT_OF_CODE.get(code)
    if hint is None and group is not None and group != "agent":
        hint = _group_hint(exit_code, code, group)
    return hint or exit_codes.REMEDY.get(exit_code)


def _group_hint(exit_code: int, code: str, group: str) -> str | None:
    """The exit code's hint, for the objects of ``group`` (REMEDY's is for agents)."""
    if group == "audit":
        return _AUDIT_HINT.get(exit_code)
    look = (
        f"tether {group} show {_SHOWN_BY[group]}" if group in _SHOWN_BY else f"tether {group} list"
    )
    if exit_code == exit_codes.NOT_FOUND:
        return f"check the name: `tether {group} list` shows what exists"
    if code == "version_conflict":
        return f"it changed meanwhile: look again (`{look}`) and retry"
    if exit_code == exit_codes.CONFLICT:
        return f"the object exists or is in another state: `{look}`"
    return None


def _details(details: Any, message: str) -> str:
    """`` (name: value; …)``: the short string details not already in ``message``."""
    if not isinstance(details, Mapping):
        return ""
    shown = [
        f"{name}: {value}"
        for name, value in details.items()
        if isinstance(name, str)
        and _DETAIL_NAME.fullmatch(name)
        and not _SECRET_WORDS.intersection(name.split("_"))
        and isinstance(value, str)
        and 0 < len(value) <= _DETAIL_MAX
        and value not in message
    ]
    return f" ({'; '.join(shown)})" if shown else ""


class Api:
    def __init__(self, settings: ClientSettings, *, timeout: float = 10.0) -> None:
        verify: Any = (
            ssl.create_default_context(cafile=str(settings.ca_cert)) if settings.ca_cert else True
        )
        headers = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
        self.settings = settings
        self._client = httpx.Client(
            base_url=settings.addr, headers=headers, timeout=timeout, verify=verify
        )

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer; any failure becomes the documented exit code."""
        return self._send(method, path, **kwargs).json()

    def raw(self, method: str, path: str, **kwargs: Any) -> str:
        """The response body as text (for plain-text endpoints)."""
        return self._send(method, path, **kwargs).text

    def download(self, path: str, into: IO[bytes], **kwargs: Any) -> int:
        """Stream the body of ``GET path`` into ``into``; the bytes written."""
        written = 0
        try:
            with self._client.stream("GET", path, **kwargs) as response:
                if not response.is_success:
                    response.read()
                    self._raise(response, path)
                for chunk in response.iter_bytes():
                    written += into.write(chunk)
        except httpx.TransportError as exc:
            fail(f"cannot reach {self.settings.addr}: {type(exc).__name__}", exit_codes.UNAVAILABLE)
        return written

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            fail(f"cannot reach {self.settings.addr}: {type(exc).__name__}", exit_codes.UNAVAILABLE)
        if not response.is_success:
            self._raise(response, path)
        return response

    def _raise(self, response: httpx.Response, path: str) -> NoReturn:
        code = exit_codes.BY_STATUS.get(response.status_code, exit_codes.ERROR)
        group = _group(path)
        try:
            body = response.json()
        except ValueError:
            fail(f"HTTP {response.status_code}", code, hint=hint_for(code, None, group))
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            name = error.get("code")
            message = f"{name}: {error.get('message')}"
            hint = hint_for(code, name if isinstance(name, str) else None, group)
            fail(message + _details(error.get("details"), message), code, hint=hint)
        if isinstance(error, str):
            hint = hint_for(code, error, group)
            fail(f"{error}: {body.get('error_description', '')}", code, hint=hint)
        fail(f"HTTP {response.status_code}", code, hint=hint_for(code, None, group))

"""``tether login``: a person signs in to Tether's built-in provider from the command line.

Two ways, one protocol (the authorization code flow with PKCE, client ``tether-cli``):

* **the browser** (default): a one-shot listener on a loopback port receives the redirect
  (RFC 8252 §7.3), the sign-in and consent happen in the browser, the code never appears on
  screen;
* **a script**: ``--username NAME --password-stdin`` posts the same sign-in form the browser
  would (there is no password grant), so the same checks and audit records apply.

The tokens are stored like ``vault login`` stores its token — in ``~/.tether/credentials.json``
(or ``TETHER_CREDENTIALS``), mode 0600 — and later commands use them when ``TETHER_TOKEN`` is
not set. ``--output json`` prints them.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import time
import webbrowser
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

import httpx
import typer

from tether.cli import exit_codes
from tether.cli._drive import drive
from tether.cli.client import fail
from tether.cli.options import OutputOpt
from tether.cli.output import Output, show
from tether.config import ClientSettings
from tether.delegation.flows import (
    FlowError,
    SignedIn,
    TokenSet,
    code_flow,
    code_from_redirect,
    password_login_flow,
    start_login,
)
from tether.delegation.grants import ACCOUNT_SCOPE

#: The person's identity and their own account (grants, password) — what the CLI acts on.
DEFAULT_SCOPE = f"openid profile {ACCOUNT_SCOPE}"
#: How long the browser sign-in may take.
BROWSER_WAIT = 300.0


def login(
    output: OutputOpt = Output.TABLE,
    username: Annotated[
        str | None, typer.Option("--username", "-u", help="sign in by name (with --password-stdin)")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from standard input")
    ] = False,
    scope: Annotated[str, typer.Option(help="scopes to ask for")] = DEFAULT_SCOPE,
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="print the sign-in address instead of opening it")
    ] = False,
) -> None:
    """Sign in to the built-in provider and store the tokens for later commands."""
    settings = ClientSettings.from_environ()
    if username is not None and not password_stdin:
        fail("--username needs --password-stdin", exit_codes.USAGE)
    with httpx.Client(timeout=30.0, verify=_verify(settings)) as client:
        try:
            if username is not None:
                password = sys.stdin.readline().rstrip("\r\n")
                flow = password_login_flow(
                    issuer=settings.addr, username=username, password=password, scope=scope
                )
                tokens = drive(flow, client)
            else:
                tokens = _browser_login(settings, client, scope=scope, open_browser=not no_browser)
            user = _who(settings, client, tokens)
        except FlowError as exc:
            code = exit_codes.AUTH if exc.error == "access_denied" else exit_codes.ERROR
            fail(exc.message, code)
        except httpx.TransportError as exc:
            fail(f"cannot reach {settings.addr}: {type(exc).__name__}", exit_codes.UNAVAILABLE)
    stored = _store(settings, tokens, user=user)
    if output is Output.JSON:
        show(stored, output)
    else:
        shown = {k: stored[k] for k in ("user", "expires_at", "scope")}
        show(shown | {"stored_in": str(settings.credentials)}, output)


def _verify(settings: ClientSettings) -> Any:
    return ssl.create_default_context(cafile=str(settings.ca_cert)) if settings.ca_cert else True


class _Callback(BaseHTTPRequestHandler):
    """Receives redirects until one carries this sign-in's ``state`` (any other local
    process may knock on the port: it is answered 400 and ignored, it cannot end the
    sign-in)."""

    state: str = ""
    received: str | None = None

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        if not self.path.startswith("/callback") or query.get("state") != [type(self).state]:
            self.send_error(400)
            return
        type(self).received = self.path
        body = b"<!doctype html><title>Tether</title><p>Signed in. You may close this window."
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Security-Policy", "default-src 'none'")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


def _browser_login(
    settings: ClientSettings, client: httpx.Client, *, scope: str, open_browser: bool
) -> TokenSet:
    handler: type[_Callback] = type("Callback", (_Callback,), {"received": None})
    with HTTPServer(("127.0.0.1", 0), handler) as server:
        port = server.server_address[1]
        start, _ = start_login(
            issuer=settings.addr, redirect_uri=f"http://127.0.0.1:{port}/callback", scope=scope
        )
        handler.state = start.state
        typer.echo(f"Sign in at: {start.url}", err=True)
        if open_browser:
            webbrowser.open(start.url)
        _serve_until_called(server, handler)
        if handler.received is None:
            raise FlowError("no sign-in arrived in time", error="timeout")
    signed_in: SignedIn = code_from_redirect(start, handler.received, issuer=settings.addr)
    return drive(code_flow(issuer=settings.addr, signed_in=signed_in), client)


def _serve_until_called(server: HTTPServer, handler: type[_Callback]) -> None:
    server.timeout = 0.5
    deadline = time.monotonic() + BROWSER_WAIT
    while handler.received is None and time.monotonic() < deadline:
        server.handle_request()


def _who(settings: ClientSettings, client: httpx.Client, tokens: TokenSet) -> str | None:
    """Who signed in, as the server says (the token is never read unverified here)."""
    me = client.get(
        f"{settings.addr}/oauth2/userinfo",
        headers={"Authorization": f"Bearer {tokens.access_token}"},
    )
    sub = me.json().get("sub") if me.status_code == 200 else None
    return sub if isinstance(sub, str) else None


def _store(settings: ClientSettings, tokens: TokenSet, *, user: str | None) -> dict[str, Any]:
    stored = {
        "addr": settings.addr,
        "user": user,
        "access_token": tokens.access_token,
        "id_token": tokens.id_token,
        "token_type": tokens.token_type,
        "scope": tokens.scope,
        "expires_at": int(time.time()) + tokens.expires_in,
    }
    path = settings.credentials or Path.home() / ".tether" / "credentials.json"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(stored, out)
    os.chmod(path, 0o600)
    return stored

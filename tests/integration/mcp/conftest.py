"""The MCP gateway, served for real: Tether on a loopback port (uvicorn, in the test's event
loop, on a SQLite store), upstream MCP servers started by the tests (one over stdio, one over
streamable HTTP in a process of its own), and agents that call through the official ``mcp``
client."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import httpx2
import orjson
import pytest
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.integration.live.conftest import free_port
from tests.support.tokens import client_credentials
from tether.api.app import create_app
from tether.api.services import Services
from tether.config import Settings
from tether.crypto.assertion import AgentKeyPair, generate_agent_key

ROOT = "tto_mcp-gateway-root-token-00000000"
TD = "acme.org"
UPSTREAM = Path(__file__).resolve().parents[2] / "support" / "mcp_upstream.py"

POLICIES = """
@id("shop-bot-uses-the-tools")
permit (principal == Tether::Agent::"shop-bot", action == Tether::Action::"call_tool",
        resource in Tether::McpServer::"tools");

@id("shop-bot-uses-the-stdio-tools")
permit (principal == Tether::Agent::"shop-bot", action == Tether::Action::"call_tool",
        resource in Tether::McpServer::"local");

@id("nobody-deletes-everything")
forbid (principal, action == Tether::Action::"call_tool", resource)
when { resource.name == "delete_all" };

@id("shop-bot-uses-the-crm-key")
permit (principal == Tether::Agent::"shop-bot", action == Tether::Action::"use_credential",
        resource == Tether::Secret::"crm");

@id("transfers-need-approval")
@obligation("approval")
permit (principal == Tether::Agent::"shop-bot", action == Tether::Action::"call_tool",
        resource == Tether::Tool::"tools/transfer");
"""


@dataclass
class Agent:
    name: str
    spiffe_id: str
    key: AgentKeyPair


@dataclass
class Gateway:
    addr: str
    services: Services
    ops: httpx.AsyncClient
    tmp: Path
    agents: dict[str, Agent] = field(default_factory=dict)

    def resource(self, server: str) -> str:
        return f"{self.addr}/mcp/{server}"

    async def agent(self, name: str = "shop-bot", **declarations: object) -> Agent:
        body = {"name": name, "owners": ["alice"], "declarations": declarations}
        created = await self.ops.post("/v1/agents", json=body)
        assert created.status_code == 201, created.text
        key = generate_agent_key()
        added = await self.ops.post(f"/v1/agents/{name}/keys", json={"jwk": key.public_jwk})
        assert added.status_code == 201, added.text
        self.agents[name] = Agent(name=name, spiffe_id=created.json()["spiffe_id"], key=key)
        return self.agents[name]

    async def ask_token(
        self, agent: Agent, audience: str, instance: str = "pod-1"
    ) -> httpx.Response:
        """The token endpoint's answer to the agent asking a JWT-SVID for ``audience``."""
        form = client_credentials(agent.key.private_pem, client_id=agent.spiffe_id,
                                  audience=f"{self.addr}/oauth2/token", now=int(time.time()),
                                  instance_id=instance)  # fmt: skip
        return await self.ops.post("/oauth2/token", data=form | {"audience": audience},
                                   headers={"Authorization": ""})  # fmt: skip

    async def token(self, agent: Agent, audience: str, instance: str = "pod-1") -> str:
        """The agent's JWT-SVID for ``audience``."""
        issued = await self.ask_token(agent, audience, instance)
        assert issued.status_code == 200, issued.text
        token: str = issued.json()["access_token"]
        return token

    async def add_server(self, name: str, **body: Any) -> dict[str, Any]:
        added = await self.ops.post("/v1/mcp/servers", json={"name": name, **body})
        assert added.status_code == 201, added.text
        found: dict[str, Any] = added.json()
        return found

    async def add_policies(self, text: str) -> None:
        """Apply the active policy set with ``text`` added."""
        current = (await self.ops.get("/v1/policies/active")).json()["text"]
        applied = await self.ops.post("/v1/policies", json={"text": current + text})
        assert applied.status_code == 201, applied.text

    async def records(self, prefix: str) -> list[dict[str, Any]]:
        found = await self.ops.get("/v1/audit", params={"type_prefix": prefix, "limit": 1000})
        assert found.status_code == 200, found.text
        return [r for r in found.json()["records"] if r["type"].startswith(prefix)]

    @asynccontextmanager
    async def client(
        self,
        server: str,
        token: str,
        mode: str = "auto",
        answers: list[tuple[str, str]] | None = None,
        **options: Any,
    ) -> AsyncIterator[Client]:
        """The official MCP client at ``/mcp/<server>`` with ``token`` as its bearer (and the
        client's ``options``: callbacks). ``answers``, when given, gets the method of each
        request the client sends and the media type it was answered with."""
        hooks = {"response": [_noting(answers)]} if answers is not None else {}
        bearer = {"Authorization": f"Bearer {token}"}
        async with httpx2.AsyncClient(headers=bearer, event_hooks=hooks) as http:
            transport = streamable_http_client(f"{self.addr}/mcp/{server}", http_client=http)
            async with Client(transport, mode=mode, cache=None, **options) as client:
                yield client


def _noting(answers: list[tuple[str, str]]) -> Callable[[httpx2.Response], Awaitable[None]]:
    async def note(response: httpx2.Response) -> None:
        request = response.request
        message = orjson.loads(request.content) if request.method == "POST" else None
        if isinstance(message, dict) and "id" in message and "method" in message:  # requests
            media = response.headers.get("content-type", "").partition(";")[0].strip()
            answers.append((str(message.get("method")), media))

    return note


def gateway_settings(tmp_path: Path, port: int, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data", "issuer": f"http://127.0.0.1:{port}", "trust_domain": TD,
        "root_token": ROOT, "mcp_listing_ttl_seconds": 0.0, "mcp_approval_wait_seconds": 10.0,
    } | overrides  # fmt: skip
    return Settings(**values)


@asynccontextmanager
async def serving(settings: Settings, tmp_path: Path) -> AsyncIterator[Gateway]:
    services = await Services.open(settings)
    app = create_app(settings, services=services)
    port = int(settings.issuer_url.rsplit(":", 1)[1])
    # a request left hanging by a broken rule must fail its test, not hold the run for ever
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            timeout_graceful_shutdown=10)  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "the server stopped at start"
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(
            base_url=settings.issuer_url, headers={"Authorization": f"Bearer {ROOT}"}, timeout=30
        ) as ops:
            yield Gateway(addr=settings.issuer_url, services=services, ops=ops, tmp=tmp_path)
    finally:
        server.should_exit = True
        await task
        await services.close()


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with serving(gateway_settings(tmp_path, free_port()), tmp_path) as gw:
        applied = await gw.ops.post("/v1/policies", json={"text": POLICIES})
        assert applied.status_code == 201, applied.text
        yield gw


@dataclass
class HttpUpstream:
    url: str
    calls: Path
    mutate: Path

    def received(self) -> list[dict[str, Any]]:
        import json  # noqa: PLC0415

        if not self.calls.exists():
            return []
        return [json.loads(line) for line in self.calls.read_text().splitlines()]


@contextmanager
def upstream_process(env: dict[str, str], script: Path | None = None) -> Iterator[str]:
    """The test upstream (or ``script``, run with the port as its one argument) over
    streamable HTTP on a free loopback port, in a process of its own with ``env``: its URL,
    until it is stopped on the way out."""
    port = free_port()
    argv = [str(UPSTREAM), "http", str(port)] if script is None else [str(script), str(port)]
    proc = subprocess.Popen([sys.executable, *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else "exited"
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "upstream not ready in 30 s"
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


@pytest.fixture
def http_upstream(tmp_path: Path) -> Iterator[HttpUpstream]:
    """The test upstream over streamable HTTP; what it receives lands in ``calls``."""
    calls, mutate = tmp_path / "http-calls.jsonl", tmp_path / "http-mutate.txt"
    env = {**os.environ, "CALLS_FILE": str(calls), "MUTATE_FILE": str(mutate)}
    with upstream_process(env) as url:
        yield HttpUpstream(url=url, calls=calls, mutate=mutate)


def stdio_command(tmp_path: Path) -> list[str]:
    return [sys.executable, str(UPSTREAM), "stdio"]

"""The admission bound (``TETHER_MAX_IN_FLIGHT``): beyond it a request is shed at once, 503
``overloaded`` with ``Retry-After``, undecided — a denial, never an allow; health, metrics and
long-lived streams stay answerable; a slow body holds no place."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from tests.integration.ext_authz.conftest import EXAMPLES, ISSUER, ROOT, register
from tether.api.admission import Admission, AdmissionGate
from tether.api.app import create_app
from tether.api.services import Services
from tether.config import Settings
from tether.errors import ConfigError


class Held:
    """An app that answers 200 once ``release`` is set; counts the requests it got."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.entered += 1
        if scope["method"] == "POST":
            message = await receive()
            self.bodies.append(message.get("body", b""))
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})


def _client(app: Admission) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER)


async def _until(condition: object) -> None:
    for _ in range(200):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the condition never held")


async def test_overload_sheds_beyond_the_limit_with_retry_after_and_recovers() -> None:
    inner, gate = Held(), AdmissionGate(limit=2)
    async with _client(Admission(inner, gate=gate)) as client:
        held = [asyncio.create_task(client.get(f"/v1/agents/{i}")) for i in range(2)]
        await _until(lambda: inner.entered == 2)
        shed = await client.get("/v1/agents/x")
        assert shed.status_code == 503
        assert shed.headers["retry-after"] == "1"
        assert shed.json()["error"]["code"] == "overloaded"
        assert (inner.entered, gate.shed) == (2, 1)  # the app never saw it
        inner.release.set()
        assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
        assert (await client.get("/v1/agents/y")).status_code == 200
    assert gate.in_flight == 0


async def test_overload_on_an_oauth_endpoint_is_temporarily_unavailable() -> None:
    inner, gate = Held(), AdmissionGate(limit=1)
    assert gate.enter()
    async with _client(Admission(inner, gate=gate)) as client:
        shed = await client.post("/oauth2/token", data={"grant_type": "client_credentials"})
    assert shed.status_code == 503
    assert shed.json()["error"] == "temporarily_unavailable"
    assert (shed.headers["retry-after"], shed.headers["cache-control"]) == ("1", "no-store")
    assert inner.entered == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/mcp/calc"),
     ("GET", "/console/decisions/stream")],
)  # fmt: skip
async def test_health_metrics_and_streams_are_answered_while_overloaded(
    method: str, path: str
) -> None:
    inner, gate = Held(), AdmissionGate(limit=1)
    inner.release.set()
    assert gate.enter()  # the one place is taken
    async with _client(Admission(inner, gate=gate)) as client:
        answer = await client.request(method, path)
    assert answer.status_code == 200
    assert (gate.in_flight, gate.shed) == (1, 0)


async def test_overload_counts_an_mcp_tool_call_but_not_its_listening_stream() -> None:
    inner, gate = Held(), AdmissionGate(limit=1)
    async with _client(Admission(inner, gate=gate)) as client:
        stream = asyncio.create_task(client.get("/mcp/calc"))
        await _until(lambda: inner.entered == 1)
        call = asyncio.create_task(client.post("/mcp/calc", json={"jsonrpc": "2.0"}))
        await _until(lambda: inner.entered == 2)
        assert (await client.post("/mcp/calc", json={})).status_code == 503
        inner.release.set()
        assert [r.status_code for r in await asyncio.gather(stream, call)] == [200, 200]


async def test_an_mcp_overload_does_not_shed_decisions() -> None:
    """Tool calls waiting on slow upstreams use up the MCP gateway's places, not the
    decisions'."""
    inner, gate = Held(), AdmissionGate(limit=1)
    async with _client(Admission(inner, gate=gate)) as client:
        call = asyncio.create_task(client.post("/mcp/calc", json={"jsonrpc": "2.0"}))
        await _until(lambda: inner.entered == 1)
        assert (await client.post("/mcp/calc", json={})).status_code == 503
        decision = asyncio.create_task(client.get("/v1/ext_authz/orders/orders/1"))
        await _until(lambda: inner.entered == 2)
        assert gate.counts == {"decision": 1, "mcp": 1, "other": 0}
        assert (await client.post("/access/v1/evaluation", json={})).status_code == 503
        inner.release.set()
        assert [r.status_code for r in await asyncio.gather(call, decision)] == [200, 200]
    assert (gate.in_flight, gate.shed) == (0, 2)


async def test_a_slow_body_holds_no_place_until_it_has_arrived() -> None:
    inner, gate = Held(), AdmissionGate(limit=1)
    inner.release.set()
    admission = Admission(inner, gate=gate)
    rest = asyncio.Event()
    parts: list[Message] = [
        {"type": "http.request", "body": b'{"a":', "more_body": True},
        {"type": "http.request", "body": b" 1}", "more_body": False},
    ]
    sent: list[Message] = []

    async def slow_receive() -> Message:
        if len(parts) == 1:
            await rest.wait()
        return parts.pop(0)

    async def record(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "method": "POST", "path": "/v1/agents", "query_string": b"",
                    "headers": [(b"content-length", b"8")]}  # fmt: skip
    slow = asyncio.create_task(admission(scope, slow_receive, record))
    await asyncio.sleep(0.05)
    assert gate.in_flight == 0  # still waiting for its body: no place taken
    async with _client(admission) as client:
        assert (await client.get("/v1/agents")).status_code == 200
    rest.set()
    await slow
    assert inner.bodies == [b'{"a": 1}']  # handed on whole
    assert sent[0]["status"] == 200
    assert gate.in_flight == 0


async def test_a_place_is_given_back_when_the_app_fails() -> None:
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    gate = AdmissionGate(limit=1)
    admission = Admission(failing, gate=gate)
    scope: Scope = {"type": "http", "method": "GET", "path": "/v1/agents", "headers": []}

    async def nothing() -> Message:
        return {"type": "http.disconnect"}

    async def ignore(message: Message) -> None:
        pass

    with pytest.raises(RuntimeError, match="boom"):
        await admission(scope, nothing, ignore)
    assert gate.in_flight == 0


def test_the_in_flight_limit_is_bounded_and_read_from_the_environment(tmp_path: Path) -> None:
    env = {"TETHER_DATA_DIR": str(tmp_path), "TETHER_MAX_IN_FLIGHT": "8"}
    assert Settings.from_environ(env).max_in_flight == 8
    with pytest.raises(ConfigError, match="max_in_flight"):
        Settings.from_environ(env | {"TETHER_MAX_IN_FLIGHT": "0"})
    with pytest.raises(ConfigError, match="whole number"):
        Settings.from_environ(env | {"TETHER_MAX_IN_FLIGHT": "many"})


# -- the whole app: the ext_authz enforcement point --------------------------------------------


@pytest.fixture
async def app_client(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, AdmissionGate]]:
    settings = Settings(data_dir=tmp_path / "data", issuer=ISSUER, trust_domain="acme.org",
                        root_token=ROOT, ext_authz_routes=EXAMPLES / "routes.toml",
                        max_in_flight=4)  # fmt: skip
    services = await Services.open(settings)
    try:
        app = create_app(settings, services=services)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
            yield client, app.state.admission
    finally:
        await services.close()


async def test_overload_never_allows_a_shed_ext_authz_request(
    app_client: tuple[httpx.AsyncClient, AdmissionGate],
) -> None:
    client, gate = app_client
    token = await register(client)
    ask = {"Authorization": f"Bearer {token}", "x-request-id": f"shed-{time.time_ns()}"}
    assert gate.limit == 4
    for _ in range(gate.limit):  # every decision's place taken, as by requests in flight
        assert gate.enter("decision")
    shed = await client.get("/v1/ext_authz/orders/orders/42", headers=ask)
    assert shed.status_code == 503
    assert shed.json()["error"]["code"] == "overloaded"
    assert shed.headers["retry-after"] == "1"
    assert "x-tether-decision-id" not in shed.headers
    health = await client.get("/healthz")
    metrics = await client.get("/metrics")
    assert health.status_code == metrics.status_code == 200
    assert "tether_requests_shed_total 1.0" in metrics.text
    assert "tether_requests_in_flight 4.0" in metrics.text
    for _ in range(gate.limit):
        gate.leave("decision")
    # Nothing was decided or recorded for it; the same request, now, is decided and allowed.
    records = await client.get("/v1/audit", headers={"Authorization": f"Bearer {ROOT}"},
                               params={"correlation_id": ask["x-request-id"]})  # fmt: skip
    assert records.status_code == 200
    assert records.json()["records"] == []
    allowed = await client.get("/v1/ext_authz/orders/orders/42", headers=ask)
    assert allowed.status_code == 200
    assert allowed.headers["x-tether-decision-id"]

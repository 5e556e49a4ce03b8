"""Traces and correlation ids: a span per request carrying the correlation id the decision is
recorded under, the MCP SDK's own spans through the gateway, the OTLP exporter Tether sets
up, and the correlation id on the log lines of a request — even one that fails."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import structlog
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.integration.live.conftest import free_port
from tests.integration.mcp.conftest import POLICIES as MCP_POLICIES
from tests.integration.mcp.conftest import (
    Gateway,
    HttpUpstream,
    gateway_settings,
    serving,
    upstream_process,
)
from tether.api.app import create_app
from tether.api.logs import configure_logging
from tether.api.services import Services
from tether.api.tracing import CORRELATION_ATTRIBUTE, SERVICE_NAME, tracer_provider
from tether.config import Settings
from tether.errors import ConfigError

from .conftest import ISSUER, ROOT
from .decisions import evaluation
from .test_management_api import as_


class _Switch(trace.TracerProvider):
    """The process's tracer provider in these tests. OpenTelemetry lets a process set one only
    once, and the ``mcp`` SDK keeps the tracers it got: so the one set is this switch, which
    hands out an SDK provider's tracers while a test records and no-op ones otherwise — the
    rest of the suite runs as without tracing."""

    def __init__(self) -> None:
        self.target: trace.TracerProvider = trace.NoOpTracerProvider()

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return _SwitchedTracer(self, args, kwargs)


class _SwitchedTracer(trace.Tracer):
    def __init__(self, switch: _Switch, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._switch, self._args, self._kwargs = switch, args, kwargs

    def _now(self) -> trace.Tracer:
        return self._switch.target.get_tracer(*self._args, **self._kwargs)

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        return self._now().start_span(*args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        return self._now().start_as_current_span(*args, **kwargs)


def _switch() -> _Switch:
    current = trace.get_tracer_provider()
    if isinstance(current, _Switch):
        return current
    switch = _Switch()
    trace.set_tracer_provider(switch)
    assert trace.get_tracer_provider() is switch, "another tracer provider was set first"
    return switch


@pytest.fixture(autouse=True)
def spans() -> Iterator[InMemorySpanExporter]:
    """Spans recorded during the test (apps made in it trace their requests)."""
    switch, exporter = _switch(), InMemorySpanExporter()
    provider = SdkTracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    switch.target = provider
    try:
        yield exporter
    finally:
        switch.target = trace.NoOpTracerProvider()
        provider.shutdown()


def _attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def _requests(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def _records(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    found = await client.get("/v1/audit", params={"type_prefix": "decision", "limit": 1000},
                             headers=as_(ROOT))  # fmt: skip
    return list(found.json()["records"])


async def test_request_span_carries_the_correlation_id_of_the_decision(
    spans: InMemorySpanExporter, client: httpx.AsyncClient, agent_token: str
) -> None:
    headers = as_(agent_token) | {"X-Correlation-Id": "order-7"}
    answer = await client.post("/access/v1/evaluation", json=evaluation(), headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-correlation-id"] == "order-7"
    [span] = _requests(spans, "POST /access/v1/evaluation")
    assert span.kind is SpanKind.SERVER
    assert _attributes(span)[CORRELATION_ATTRIBUTE] == "order-7"
    assert _attributes(span)["http.response.status_code"] == 200
    [record] = await _records(client)
    assert record["correlation_id"] == "order-7"


async def test_without_a_correlation_header_the_correlation_id_is_the_trace_id(
    spans: InMemorySpanExporter, client: httpx.AsyncClient, agent_token: str
) -> None:
    caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = as_(agent_token) | {"traceparent": f"00-{caller_trace}-00f067aa0ba902b7-01"}
    await client.post("/access/v1/evaluation", json=evaluation(), headers=headers)
    await client.post("/access/v1/evaluation", json=evaluation(), headers=as_(agent_token))
    first, second = _requests(spans, "POST /access/v1/evaluation")
    assert first.parent is not None  # the caller's trace, continued
    assert first.parent.is_remote
    for span in (first, second):
        assert _attributes(span)[CORRELATION_ATTRIBUTE] == f"{span.context.trace_id:032x}"
    assert f"{first.context.trace_id:032x}" == caller_trace
    recorded = [r["correlation_id"] for r in await _records(client)]
    assert sorted(recorded) == sorted(_attributes(s)[CORRELATION_ATTRIBUTE]
                                      for s in (first, second))  # fmt: skip


async def test_management_routes_are_named_by_their_template(
    spans: InMemorySpanExporter, client: httpx.AsyncClient
) -> None:
    await client.get("/v1/agents/no-such-agent")
    [span] = _requests(spans, "GET /v1/agents/{name}")
    assert _attributes(span)["http.route"] == "/v1/agents/{name}"
    assert _attributes(span)["http.response.status_code"] == 404


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[HttpUpstream]:
    calls = tmp_path / "http-calls.jsonl"
    env = {**os.environ, "CALLS_FILE": str(calls), "MUTATE_FILE": str(tmp_path / "mutate")}
    with upstream_process(env) as url:
        yield HttpUpstream(url=url, calls=calls, mutate=tmp_path / "mutate")


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with serving(gateway_settings(tmp_path, free_port()), tmp_path) as gw:
        applied = await gw.ops.post("/v1/policies", json={"text": MCP_POLICIES})
        assert applied.status_code == 201, applied.text
        yield gw


async def test_a_tool_call_through_the_gateway_is_traced_under_its_correlation_id(
    spans: InMemorySpanExporter, gateway: Gateway, upstream: HttpUpstream
) -> None:
    await gateway.add_server("tools", url=upstream.url)
    token = await gateway.token(await gateway.agent("shop-bot"), gateway.resource("tools"))
    async with gateway.client("tools", token) as client:
        result = await client.call_tool("add", {"a": 2, "b": 3})
    assert not result.is_error
    [decision] = [r for r in await gateway.records("decision")
                  if r["details"]["action"] == "call_tool"]  # fmt: skip
    correlation = decision["correlation_id"]
    # The HTTP request that carried the call: its span, labelled with the decision's
    # correlation id, which is its trace id (the caller sent no correlation header).
    [request] = [s for s in _requests(spans, "POST /mcp/{server}")
                 if _attributes(s).get(CORRELATION_ATTRIBUTE) == correlation]  # fmt: skip
    assert f"{request.context.trace_id:032x}" == correlation
    assert _attributes(request)["http.route"] == "/mcp/{server}"
    # The mcp SDK's own spans: the gateway serving the call, and sending it upstream.
    [served] = [s for s in _requests(spans, "tools/call add") if s.kind is SpanKind.SERVER]
    assert _attributes(served)["gen_ai.tool.name"] == "add"
    sent = [s for s in _requests(spans, "MCP send tools/call add")
            if s.parent is not None and s.parent.span_id == served.context.span_id]  # fmt: skip
    assert len(sent) == 1
    assert upstream.received()[0]["tool"] == "add"


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector on loopback: keeps what it is sent."""

    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        return None


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    received: list[tuple[str, str, bytes]] = []
    handler = type("Handler", (_Collector,), {"received": received})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_spans_are_exported_to_the_collector_as_the_tether_service(
    tmp_path: Path, collector: tuple[str, list[tuple[str, str, bytes]]]
) -> None:
    endpoint, received = collector
    settings = Settings(data_dir=tmp_path, otel_exporter_otlp_endpoint=endpoint + "/")
    provider = tracer_provider(settings)
    assert provider is not None
    assert provider.resource.attributes["service.name"] == SERVICE_NAME
    try:
        provider.get_tracer("test").start_span("decision-of-the-test").end()
        assert provider.force_flush()
    finally:
        provider.shutdown()
    [(path, content_type, body)] = received
    assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
    assert b"decision-of-the-test" in body
    assert SERVICE_NAME.encode() in body


def test_no_provider_without_the_endpoint_setting(tmp_path: Path) -> None:
    assert tracer_provider(Settings(data_dir=tmp_path)) is None


_SDK = (
    "opentelemetry.sdk", "opentelemetry.sdk.trace", "opentelemetry.sdk.resources",
    "opentelemetry.sdk.trace.export", "opentelemetry.exporter.otlp.proto.http.trace_exporter",
)  # fmt: skip


def test_tracing_without_the_otel_extra_fails_at_start(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    for module in _SDK:  # as if the extra were not installed
        monkeypatch.setitem(sys.modules, module, None)
    traced = settings.with_(otel_exporter_otlp_endpoint="http://otel-collector:4318")
    with pytest.raises(ConfigError, match=r"otel extra") as raised:
        create_app(traced)
    assert raised.value.code == "config_invalid"
    assert raised.value.details["setting"] == "otel_exporter_otlp_endpoint"


@pytest.mark.parametrize("endpoint", ["otel-collector:4318", "grpc://c:4317", "http://"])
def test_tracing_endpoint_is_an_http_url(tmp_path: Path, endpoint: str) -> None:
    with pytest.raises(ConfigError, match="TETHER_OTEL_EXPORTER_OTLP_ENDPOINT"):
        Settings(data_dir=tmp_path, otel_exporter_otlp_endpoint=endpoint)


# -- the correlation id on the log lines of a request served by the app ---------------------


@pytest.fixture
def logged(settings: Settings, services: Services) -> Iterator[FastAPI]:
    """The app with two routes of the test's: one that logs, one that fails."""
    app = create_app(settings, services=services)

    async def logs() -> dict[str, str]:
        structlog.get_logger("tether.test").info("serving", step=1)
        return {"ok": "yes"}

    async def fails() -> None:
        raise RuntimeError("something unexpected")

    app.add_api_route("/test/logs", logs)
    app.add_api_route("/test/fails", fails)
    configure_logging()
    try:
        yield app
    finally:
        structlog.reset_defaults()


async def test_a_log_line_logged_while_serving_carries_the_requests_correlation_id(
    capsys: pytest.CaptureFixture[str], logged: FastAPI
) -> None:
    transport = httpx.ASGITransport(app=logged, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
        answer = await client.get("/test/logs", headers={"X-Request-Id": "req-77"})
        failed = await client.get("/test/fails", headers={"X-Correlation-Id": "req-78"})
    assert answer.headers["x-correlation-id"] == "req-77"
    assert failed.status_code == 500
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    by_event = {line["event"]: line for line in lines}
    assert by_event["serving"]["correlation_id"] == "req-77"
    # The server-error handler logs outside the middleware: the id is still there.
    assert by_event["unhandled_error"]["correlation_id"] == "req-78"

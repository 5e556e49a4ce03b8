"""OpenTelemetry traces, when asked for: the optional ``otel`` extra.

Setting ``TETHER_OTEL_EXPORTER_OTLP_ENDPOINT`` (the base URL of an OTLP/HTTP collector) makes
:func:`install_tracing` set the process's tracer provider at start: service name ``tether``,
spans batched and exported to ``<endpoint>/v1/traces``. Without the ``otel`` extra installed
that is a :class:`~tether.errors.ConfigError` at start naming the extra, never a server that
silently traces nothing. The exporter's other standard variables
(``OTEL_EXPORTER_OTLP_HEADERS``, ``…_TIMEOUT``, ``…_CERTIFICATE``) and the sampler's
(``OTEL_TRACES_SAMPLER``) are read by the OpenTelemetry SDK itself.

With a tracer provider in place — Tether's, or one the embedding process set (for example
``opentelemetry-instrument``) — every HTTP request has a ``SERVER`` span continuing the
caller's W3C ``traceparent``: FastAPI's own (its native telemetry: ``http.route``, status,
a span per dependency and endpoint), which :class:`TraceRequests` completes — it names the
routes answered ahead of routing (``POST /access/v1/evaluation``,
``GET /v1/ext_authz/{service}/{path}``, ``POST /mcp/{server}``), labels the span with the
request's correlation id (``tether.correlation_id``,
:class:`~tether.api.middleware.CorrelationId`), and puts the span's context in place of the
request's ``traceparent`` for what runs inside, so that without a correlation header from the
caller the correlation id *is* the trace id, and the MCP gateway's decision records carry it.
The ``mcp`` SDK emits spans of its own through the same provider: a ``SERVER`` span per MCP
request the gateway serves (``tools/call <tool>``) and a ``CLIENT`` span per request it sends
upstream (``MCP send tools/call <tool>``), with W3C trace context in ``params._meta``.

Without a tracer provider nothing of this is installed: the decision path pays nothing.

Example::

    provider = install_tracing(settings)   # None unless TETHER_OTEL_EXPORTER_OTLP_ENDPOINT
    if tracing_on():
        app.add_middleware(TraceRequests)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.trace import SpanKind, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tether import __version__
from tether.api.routes.authzen import HOT_PATHS
from tether.config import Settings
from tether.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

__all__ = ["SERVICE_NAME", "TraceRequests", "install_tracing", "tracer_provider", "tracing_on"]

log = structlog.get_logger("tether.tracing")

SERVICE_NAME = "tether"
#: The span attribute carrying the request's correlation id.
CORRELATION_ATTRIBUTE = "tether.correlation_id"
#: Request headers holding the caller's trace context (replaced by the request span's).
_CONTEXT = frozenset({b"traceparent", b"tracestate"})
#: Routes the framework does not match (answered ahead of routing), by path prefix.
_PREFIXES = (("/v1/ext_authz/", "/v1/ext_authz/{service}/{path}"), ("/mcp/", "/mcp/{server}"))


def tracer_provider(settings: Settings) -> TracerProvider | None:
    """The tracer provider ``settings`` ask for (not installed), None when tracing is off.
    :class:`~tether.errors.ConfigError` when the ``otel`` extra is not installed."""
    endpoint = settings.otel_exporter_otlp_endpoint
    if endpoint is None:
        return None
    try:  # the optional extra: imported only when asked for
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )
        from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415
    except ImportError as exc:
        raise ConfigError(
            "TETHER_OTEL_EXPORTER_OTLP_ENDPOINT is set but the OpenTelemetry SDK is not "
            "installed: install the otel extra (pip install 'tether[otel]')",
            details={"setting": "otel_exporter_otlp_endpoint", "extra": "otel"},
        ) from exc
    resource = Resource.create({"service.name": SERVICE_NAME, "service.version": __version__})
    provider = TracerProvider(resource=resource)
    exporter = OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def install_tracing(settings: Settings) -> TracerProvider | None:
    """Set the process's tracer provider from ``settings``; the provider set (to flush at
    shutdown), or None when tracing is off — or when the process already has a provider
    (OpenTelemetry allows one: that one is kept, and used)."""
    provider = tracer_provider(settings)  # the otel extra is required even then
    if provider is None:
        return None
    if tracing_on():
        log.warning("tracer_provider_already_set", setting="TETHER_OTEL_EXPORTER_OTLP_ENDPOINT")
        provider.shutdown()
        return None
    trace.set_tracer_provider(provider)
    return provider


def tracing_on() -> bool:
    """Whether the process has a tracer provider (spans are made, not thrown away)."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


class TraceRequests:
    """Tether's part of each HTTP request's ``SERVER`` span (see the module docstring).

    FastAPI makes that span itself once a tracer provider is set (its native telemetry, around
    the whole app): this names the routes it does not see (answered ahead of routing), labels
    the span with the correlation id and hands its context to what runs inside. Without such
    a span (FastAPI's telemetry turned off or absent) it makes one of its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._tracer = trace.get_tracer("tether", __version__)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        current = trace.get_current_span()
        if current.get_span_context().is_valid:
            await self._within(current, scope, receive, send)
            return
        method, path = str(scope["method"]), str(scope["path"])
        carrier = {n.decode("latin-1"): v.decode("latin-1")
                   for n, v in scope.get("headers", ()) if n in _CONTEXT}  # fmt: skip
        attributes: dict[str, Any] = {"http.request.method": method, "url.path": path}
        with self._tracer.start_as_current_span(
            method, context=extract(carrier), kind=SpanKind.SERVER, attributes=attributes
        ) as span:
            status = await self._within(span, scope, receive, send)
            matched = getattr(scope.get("route"), "path", None)
            if isinstance(matched, str):
                span.set_attribute("http.route", matched)
                span.update_name(f"{method} {matched}")
            if status:
                span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(StatusCode.ERROR)

    async def _within(self, span: trace.Span, scope: Scope, receive: Receive, send: Send) -> int:
        """Serve the request inside ``span``; the status answered (0: none)."""
        method = str(scope["method"])
        route = _route(str(scope["path"]))
        if route is not None:
            span.update_name(f"{method} {route}")
            span.set_attribute("http.route", route)
        ours: dict[str, str] = {}
        inject(ours)  # nothing when the span is not a valid one
        if ours:
            names = {name.encode("latin-1") for name in ours} | _CONTEXT
            scope["headers"] = [
                *((n, v) for n, v in scope.get("headers", ()) if n not in names),
                *((k.encode("latin-1"), v.encode("latin-1")) for k, v in ours.items()),
            ]
        status, labelled = 0, False

        def label() -> None:
            nonlocal labelled
            correlation = scope.get("state", {}).get("correlation_id")
            if not labelled and isinstance(correlation, str):
                span.set_attribute(CORRELATION_ATTRIBUTE, correlation)
                labelled = True

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                label()  # now: the span may end with the response
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            label()  # no answer (a failure): the span is still open
        return status


def _route(path: str) -> str | None:
    """The low-cardinality name of a path answered ahead of routing, if it is one."""
    if path in HOT_PATHS:
        return path
    for prefix, route in _PREFIXES:
        if path.startswith(prefix):
            return route
    return None

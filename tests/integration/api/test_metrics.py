"""``GET /metrics``: decisions counted by effect and enforcement point, the gauges read from
the store and from memory, bounded labels, and the optional bearer token."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tether.api.app import create_app
from tether.api.metrics import MAX_ENFORCEMENT_POINTS, Metrics
from tether.api.services import Services
from tether.audit.log import AuditLog
from tether.audit.records import AuditRecord
from tether.audit.stored import LogEntry
from tether.audit.tiles import TreeNode
from tether.config import Settings
from tether.errors import ConfigError
from tether.monitor.events import Event
from tether.monitor.models import Finding, Severity, opened
from tether.store.memory import MemoryStore

from .conftest import ISSUER
from .decisions import evaluation
from .test_management_api import as_

#: Label names a Tether metric may carry (``le``: a histogram's bucket bound).
BOUNDED_LABELS = {"effect", "enforcement_point", "severity", "subscriber", "le"}
METRICS_TOKEN = "prom-scrape-token-0123456789abcdef"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of a scrape by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


async def scrape(client: httpx.AsyncClient, **headers: str) -> Samples:
    answer = await client.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return samples(answer.text)


async def evaluate(client: httpx.AsyncClient, token: str, tool: str) -> None:
    answer = await client.post("/access/v1/evaluation", json=evaluation(tool), headers=as_(token))
    assert answer.status_code == 200, answer.text


async def test_metrics_count_decisions_by_effect_and_enforcement_point(
    client: httpx.AsyncClient, agent_token: str
) -> None:
    for tool in ("search_faq", "search_faq", "drop_tables", "transfer"):
        await evaluate(client, agent_token, tool)
    await evaluate(client, "not-a-token", "search_faq")  # refused before any policy: a deny
    found = await scrape(client)
    counted = {
        effect: value(found, "tether_decisions_total", effect=effect, enforcement_point="authzen")
        for effect in ("allow", "deny", "approval_required")
    }
    assert counted == {"allow": 2, "deny": 2, "approval_required": 1}
    assert value(found, "tether_decision_duration_seconds_count", enforcement_point="authzen") == 5
    top = value(found, "tether_decision_duration_seconds_bucket", enforcement_point="authzen",
                le="+Inf")  # fmt: skip
    assert top == 5
    assert value(found, "tether_decision_audit_failures_total") is None  # none failed
    assert (value(found, "tether_monitor_events_published_total") or 0) >= 5


async def test_metrics_never_label_with_agent_names(
    client: httpx.AsyncClient, agent_token: str
) -> None:
    await evaluate(client, agent_token, "search_faq")
    answer = await client.get("/metrics")
    assert "faq-bot" not in answer.text
    assert "search_faq" not in answer.text
    names = {label for _, labels in samples(answer.text) for label, _ in labels}
    assert names <= BOUNDED_LABELS


async def test_metrics_bound_the_enforcement_points_they_name(services: Services) -> None:
    metrics = Metrics(services)
    try:
        for n in range(MAX_ENFORCEMENT_POINTS + 5):
            data = {"effect": "allow", "enforcement_point": f"point-{n}", "elapsed": 0.001}
            metrics.observe(Event(type="decision", time=0.0, data=data))
        metrics.observe(Event(type="decision", time=0.0, data={"effect": "maybe", "elapsed": -1}))
        found = samples((await metrics.render()).decode())
    finally:
        metrics.close()
    points = {dict(labels).get("enforcement_point") for name, labels in found
              if name == "tether_decisions_total"}  # fmt: skip
    assert len(points) == MAX_ENFORCEMENT_POINTS + 1  # the first ones, and "other"
    assert value(found, "tether_decisions_total", effect="allow", enforcement_point="other") == 5
    assert value(found, "tether_decisions_total", effect="other", enforcement_point="other") == 1


async def test_metrics_read_the_stores_gauges(client: httpx.AsyncClient) -> None:
    found = await scrape(client)
    assert value(found, "tether_leases_active") == 0
    assert value(found, "tether_approvals_pending") == 0
    for severity in Severity:
        assert value(found, "tether_alerts_open", severity=str(severity)) == 0
    assert value(found, "tether_audit_lag_records") == 0
    assert value(found, "tether_audit_lag_seconds") == 0
    assert value(found, "tether_monitor_queue_depth", subscriber="metrics") == 0
    assert value(found, "tether_monitor_queue_depth", subscriber="monitor") == 0
    assert value(found, "tether_metrics_store_errors_total") == 0


async def test_metrics_read_the_store_at_most_once_per_period(services: Services) -> None:
    """A scrape storm reads the store once per period: what changed in between shows at the
    next reading."""
    now = datetime.now(UTC)
    finding = Finding(kind="denied_burst", severity=Severity.HIGH, key="faq-bot",
                      summary="25 denied requests in 60 s", agent="faq-bot")  # fmt: skip
    cached, fresh = Metrics(services, gauge_ttl=3600), Metrics(services, gauge_ttl=0)
    try:
        before = samples((await cached.render()).decode())
        await services.store.create_alert(opened(finding, id="alr_1", owners=(), now=now))
        again = samples((await cached.render()).decode())
        read = samples((await fresh.render()).decode())
    finally:
        cached.close()
        fresh.close()
    assert value(before, "tether_alerts_open", severity="high") == 0
    assert value(again, "tether_alerts_open", severity="high") == 0
    assert value(read, "tether_alerts_open", severity="high") == 1


class HeldStore(MemoryStore):
    """A store whose audit commits wait until released: a commit under way."""

    def __init__(self) -> None:
        super().__init__()
        self.released = asyncio.Event()

    async def append_audit_entries(
        self, entries: Sequence[LogEntry], nodes: Sequence[TreeNode], *, adopt: bool = False
    ) -> list[int]:
        await self.released.wait()
        return await super().append_audit_entries(entries, nodes, adopt=adopt)


async def test_metrics_show_the_audit_records_not_durable_yet(services: Services) -> None:
    store = HeldStore()
    services.audit = await AuditLog(store=store, origin="testserver/audit/held",
                                    key_name="testserver/audit",
                                    signer=services.keyring.audit_signer,
                                    clock=services.clock).start()  # fmt: skip
    hour_ago = services.clock.now() - timedelta(hours=1)
    records = [AuditRecord.new(type="agent.registered", actor="operator:root", subject=None,
                               time=hour_ago + timedelta(seconds=n)) for n in range(3)]  # fmt: skip
    metrics = Metrics(services)
    appends = [asyncio.create_task(services.audit.append(r)) for r in records]
    try:
        for _ in range(100):
            if services.audit.backlog[0] == 3:
                break
            await asyncio.sleep(0)
        assert services.audit.backlog == (3, hour_ago)
        found = samples((await metrics.render()).decode())
        assert value(found, "tether_audit_lag_records") == 3
        assert (value(found, "tether_audit_lag_seconds") or 0) >= 3600
        store.released.set()
        await asyncio.gather(*appends)
        after: tuple[int, datetime | None] = services.audit.backlog
        assert after == (0, None)
        assert value(samples((await metrics.render()).decode()), "tether_audit_lag_records") == 0
    finally:
        store.released.set()
        metrics.close()
        await services.audit.close()


@pytest.fixture
async def guarded(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings.with_(metrics_token=METRICS_TOKEN)
    services = await Services.open(settings)
    app = create_app(settings, services=services)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=ISSUER
        ) as client:
            yield client
    finally:
        await services.close()


async def test_metrics_token_required_when_configured(guarded: httpx.AsyncClient) -> None:
    for headers in ({}, as_("prom-scrape-token-wrong-0123456789"), as_(METRICS_TOKEN + "x")):
        refused = await guarded.get("/metrics", headers=headers)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert "tether_" not in refused.text
    assert (
        "tether_decisions_total" in (await guarded.get("/metrics", headers=as_(METRICS_TOKEN))).text
    )


async def test_metrics_open_without_a_token(client: httpx.AsyncClient) -> None:
    answer = await client.get("/metrics", headers={"Authorization": ""})
    assert answer.status_code == 200


@pytest.mark.parametrize("token", ["short", "sixteen chars\n..", " " * 3])
def test_metrics_token_too_short_or_unprintable_is_refused(tmp_path: Path, token: str) -> None:
    with pytest.raises(ConfigError, match="TETHER_METRICS_TOKEN"):
        Settings(data_dir=tmp_path, metrics_token=token)


def test_metrics_token_and_tracing_endpoint_come_from_the_environment(tmp_path: Path) -> None:
    settings = Settings.from_environ(
        {"TETHER_DATA_DIR": str(tmp_path), "TETHER_METRICS_TOKEN": METRICS_TOKEN,
         "TETHER_OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector:4318"}
    )  # fmt: skip
    assert settings.metrics_token == METRICS_TOKEN
    assert METRICS_TOKEN not in repr(settings)
    assert settings.otel_exporter_otlp_endpoint == "http://otel-collector:4318"

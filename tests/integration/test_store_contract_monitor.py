"""The ``Store`` contract for the monitor's alerts and observed use (``MonitorStore``).

Run against every implementation (memory, SQLite, SQLite with its audit writer, PostgreSQL)
by the ``store`` fixture (``tests/conftest.py``); ``replica`` is a second store on the same
database where replicas exist. Alerts are built with :mod:`tether.monitor.models`'s
transitions; writes of an existing alert are compare-and-set on ``version``, the caller passing
the new value with its new version. The SQL stores run on migrated databases: these tests hold
the migration to the rule that the database refuses a second active alert of a ``(kind, key)``.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

import pytest
import sqlalchemy as sa

from tether.credentials import lifecycle
from tether.credentials.models import EndKind, Lease
from tether.delegation.models import Approval, ApprovalState
from tether.errors import AlertNotFound, Conflict, NotFound, VersionConflict
from tether.monitor.models import (
    Alert,
    AlertState,
    Finding,
    Severity,
    Usage,
    acknowledged,
    opened,
    repeated,
    resolved,
)
from tether.store.interfaces import AlertMatch, Store
from tether.store.sql import SqlStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
EAST = timezone(timedelta(hours=2))
WEST = timezone(timedelta(hours=-7, minutes=-30))
NAIVE = T0.replace(tzinfo=None)
ACTIVE = (AlertState.OPEN, AlertState.ACKNOWLEDGED)

#: What a detector may put in details: nesting, lists, numbers, booleans, null, non-ASCII and
#: an invisible zero-width space (caller-controlled text).
DETAILS: dict[str, Any] = {
    "denied": 25,
    "window_s": 60.5,
    "sample": [{"action": 'Action::"read"', "resource": 'Doc::"Zoë — 日本語 ✓"'}],
    "flags": {"burst": True, "first": None, "tags": ["a", "b\u200b"]},
}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- factories -------------------------------------------------------------------------------


def finding(**changes: Any) -> Finding:
    """What the denied-burst detector finds of ``crm-bot``, with ``changes``."""
    found = Finding(
        kind="denied_burst",
        severity=Severity.HIGH,
        key="crm-bot",
        summary="25 denied requests in 60 s",
        agent="crm-bot",
        details=DETAILS,
    )
    return replace(found, **changes)


def make_alert(n: int, *, seen: float = 0, **changes: Any) -> Alert:
    """Alert ``n`` of a finding with ``changes``, just opened: every optional field unset."""
    found = finding(**changes)
    owners = () if found.agent is None else ("team:crm", "user:alice")
    return opened(found, id=f"alr_{n:03d}", owners=owners, now=at(seen))


def closed(alert: Alert) -> Alert:
    """``alert`` acknowledged then resolved: every optional field set, two versions on."""
    seen = acknowledged(alert, by="user:bob", now=at(60), note="looking")
    return resolved(seen, by="user:bob", now=at(120), note="key rotated")


async def resolve(store: Store, alert: Alert) -> Alert:
    done = resolved(alert, by="user:bob", now=at(300))
    await store.update_alert(done, expected_version=alert.version)
    return done


def lease(n: int) -> Lease:
    """Lease ``n``, being issued."""
    return lifecycle.new_lease(
        id=f"lea_{n:03d}",
        engine="pg-main",
        role="ro",
        credential=f"tether_{n:03d}",
        agent="crm-bot",
        instance="pod-1",
        now=T0,
        ttl=60,
        max_ttl=7200,
    )


def approval(
    n: int, *, created: float = 0, state: ApprovalState = ApprovalState.PENDING
) -> Approval:
    """Request ``n``, expiring five minutes after it was made."""
    return Approval(
        id=f"apr_{n:03d}",
        auth_req_key=f"{n:064x}",
        client="spiffe://example.org/agent/crm-bot/i-1",
        agent="crm-bot",
        user="alice",
        scope=frozenset({"orders:write"}),
        binding_message=None,
        details=({"type": "orders", "call_digest": "sha256:" + "a" * 64},),
        created_at=at(created),
        expires_at=at(created + 300),
        interval=5,
        state=state,
    )


def use(
    action: str = 'Action::"read"',
    resource: str = 'Doc::"d1"',
    *,
    agent: str = "crm-bot",
    when: float = 0,
    count: int = 1,
) -> Usage:
    return Usage(agent=agent, action=action, resource=resource, last_used=at(when), count=count)


def ids(alerts: list[Alert]) -> list[str]:
    return [alert.id for alert in alerts]


# -- alerts ----------------------------------------------------------------------------------


async def test_an_opened_alert_reads_back_as_written_and_is_the_active_one(store: Store) -> None:
    alert = make_alert(1)
    await store.create_alert(alert)
    stored = await store.get_alert("alr_001")
    assert stored == alert
    assert stored is not None
    assert stored.severity is Severity.HIGH
    assert stored.state is AlertState.OPEN
    assert stored.owners == ("team:crm", "user:alice")
    assert await store.active_alert("denied_burst", "crm-bot") == alert
    assert await store.active_alert("denied_burst", "other") is None
    assert await store.active_alert("impersonation", "crm-bot") is None
    assert await store.get_alert("alr_999") is None


async def test_an_alert_with_no_agent_and_every_optional_field_reads_back_as_written(
    store: Store,
) -> None:
    alert = make_alert(1, kind="tool_shadowing", key="mcp:search", agent=None)
    await store.create_alert(alert)
    done = closed(alert)
    await store.update_alert(done, expected_version=1)
    stored = await store.get_alert("alr_001")
    assert stored == done
    assert stored is not None
    assert stored.agent is None
    assert stored.owners == ()
    assert stored.state is AlertState.RESOLVED
    assert stored.acknowledged_by == stored.resolved_by == "user:bob"
    assert stored.note == "key rotated"
    assert await store.active_alert("tool_shadowing", "mcp:search") is None


async def test_second_active_alert_of_same_kind_and_key_is_a_conflict(store: Store) -> None:
    first = make_alert(1)
    await store.create_alert(first)
    with pytest.raises(Conflict, match="crm-bot") as refused:
        await store.create_alert(make_alert(2, seen=10))
    assert not isinstance(refused.value, VersionConflict)
    # Acknowledged is still active: it blocks another as well.
    seen = acknowledged(first, by="user:bob", now=at(5))
    await store.update_alert(seen, expected_version=1)
    with pytest.raises(Conflict):
        await store.create_alert(make_alert(3, seen=20))
    assert await store.get_alert("alr_002") is None
    assert await store.get_alert("alr_003") is None
    assert await store.active_alert("denied_burst", "crm-bot") == seen
    # Another key, or another kind with the same key, is another alert.
    await store.create_alert(make_alert(4, key="mail-bot", agent="mail-bot"))
    await store.create_alert(make_alert(5, kind="impersonation"))
    assert ids(await store.list_alerts(AlertMatch())) == ["alr_005", "alr_004", "alr_001"]


async def test_a_taken_alert_id_is_a_conflict_and_writes_nothing(store: Store) -> None:
    await store.create_alert(make_alert(1))
    with pytest.raises(Conflict, match="alr_001"):
        await store.create_alert(make_alert(1, key="mail-bot", agent="mail-bot"))
    assert await store.get_alert("alr_001") == make_alert(1)
    assert await store.active_alert("denied_burst", "mail-bot") is None


async def test_resolved_alert_does_not_block_a_new_one(store: Store) -> None:
    first = make_alert(1)
    await store.create_alert(first)
    first_done = await resolve(store, first)
    second = make_alert(2, seen=400)
    await store.create_alert(second)
    assert await store.active_alert("denied_burst", "crm-bot") == second
    second_done = await resolve(store, second)
    await store.create_alert(make_alert(3, seen=500))
    assert await store.get_alert("alr_001") == first_done
    assert await store.get_alert("alr_002") == second_done
    assert ids(await store.list_alerts(AlertMatch())) == ["alr_003", "alr_002", "alr_001"]


async def test_reopening_an_alert_beside_an_active_one_is_a_conflict_and_writes_nothing(
    store: Store,
) -> None:
    await store.create_alert(make_alert(1))
    first = await resolve(store, make_alert(1))
    second = make_alert(2, seen=400)
    await store.create_alert(second)
    reopened = replace(first, state=AlertState.OPEN, version=first.version + 1)
    with pytest.raises(Conflict) as refused:
        await store.update_alert(reopened, expected_version=first.version)
    assert not isinstance(refused.value, VersionConflict)
    assert await store.get_alert("alr_001") == first
    assert await store.active_alert("denied_burst", "crm-bot") == second


async def test_update_alert_writes_the_version_it_is_given(store: Store) -> None:
    alert = make_alert(1, severity=Severity.MEDIUM)
    await store.create_alert(alert)
    again = repeated(alert, finding(severity=Severity.CRITICAL), now=at(30))
    await store.update_alert(again, expected_version=1)
    stored = await store.get_alert("alr_001")
    assert stored == again
    assert stored is not None
    assert (stored.count, stored.severity, stored.last_seen) == (2, Severity.CRITICAL, at(30))
    jumped = replace(again, count=9, version=7)  # the store does not bump
    await store.update_alert(jumped, expected_version=2)
    assert await store.get_alert("alr_001") == jumped


async def test_update_alert_with_stale_version_is_a_version_conflict_and_writes_nothing(
    store: Store,
) -> None:
    alert = make_alert(1)
    await store.create_alert(alert)
    moved = repeated(alert, finding(), now=at(30))
    await store.update_alert(moved, expected_version=1)
    stale = acknowledged(alert, by="user:bob", now=at(40))
    with pytest.raises(VersionConflict, match="version 1"):
        await store.update_alert(stale, expected_version=1)
    assert await store.get_alert("alr_001") == moved


async def test_update_unknown_alert_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match="alr_001") as refused:
        await store.update_alert(closed(make_alert(1)), expected_version=1)
    assert isinstance(refused.value, AlertNotFound)
    assert refused.value.details == {"alert_id": "alr_001"}
    assert await store.get_alert("alr_001") is None
    assert await store.active_alert("denied_burst", "crm-bot") is None


async def test_list_alerts_newest_first_pages_with_after(store: Store) -> None:
    # Two pairs opened at the same instant: the higher id is the newer.
    for n, seen in ((1, 0), (2, 10), (3, 10), (4, 20), (5, 30), (6, 30), (7, 5)):
        await store.create_alert(make_alert(n, key=f"bot-{n}", agent=f"bot-{n}", seen=seen))
    everything = ids(await store.list_alerts(AlertMatch()))
    assert everything == [f"alr_{n:03d}" for n in (6, 5, 4, 3, 2, 7, 1)]
    pages: list[str] = []
    after: str | None = None
    while page := ids(await store.list_alerts(AlertMatch(), limit=2, after=after)):
        assert len(page) <= 2
        pages += page
        after = page[-1]
    assert pages == everything
    page = ids(await store.list_alerts(AlertMatch(), limit=3, after="alr_003"))
    assert page == ["alr_002", "alr_007", "alr_001"]
    assert await store.list_alerts(AlertMatch(), after="alr_001") == []
    assert await store.list_alerts(AlertMatch(), after="alr_999") == []
    assert await store.list_alerts(AlertMatch(), limit=0) == []


async def test_list_alerts_limit_is_capped_at_a_page(store: Store) -> None:
    for n in range(502):
        await store.create_alert(make_alert(n, key=f"k{n}", seen=n))
    assert len(await store.list_alerts(AlertMatch(), limit=10_000)) == 500


async def test_list_alerts_filters_by_state_kind_agent_since(store: Store) -> None:
    crm = make_alert(1, seen=0)
    mail = make_alert(2, key="mail-bot", agent="mail-bot", seen=10)
    shadow = make_alert(3, kind="tool_shadowing", key="mcp:search", agent=None, seen=20)
    for alert in (crm, mail, shadow):
        await store.create_alert(alert)
    await store.update_alert(acknowledged(mail, by="user:bob", now=at(15)), expected_version=1)
    await store.update_alert(repeated(crm, finding(), now=at(100)), expected_version=1)
    await resolve(store, shadow)

    async def listed(**match: Any) -> list[str]:
        return ids(await store.list_alerts(AlertMatch(**match)))

    assert await listed() == ["alr_003", "alr_002", "alr_001"]
    assert await listed(states=(AlertState.OPEN,)) == ["alr_001"]
    assert await listed(states=ACTIVE) == ["alr_002", "alr_001"]
    assert await listed(states=(AlertState.RESOLVED,)) == ["alr_003"]
    assert await listed(kind="denied_burst") == ["alr_002", "alr_001"]
    assert await listed(kind="impersonation") == []
    assert await listed(agent="crm-bot") == ["alr_001"]
    # Since: by last seen, at or after the time given (in any zone).
    assert await listed(since=at(100).astimezone(WEST)) == ["alr_001"]
    assert await listed(since=at(10)) == ["alr_003", "alr_002", "alr_001"]
    assert await listed(since=at(101)) == []
    assert await listed(kind="denied_burst", agent="mail-bot", states=(AlertState.OPEN,)) == []


async def test_count_alerts_by_severity(store: Store) -> None:
    severities = [Severity.HIGH, Severity.HIGH, Severity.LOW, Severity.CRITICAL, Severity.HIGH]
    for n, severity in enumerate(severities, start=1):
        await store.create_alert(make_alert(n, key=f"k{n}", severity=severity))
    await resolve(store, make_alert(4, key="k4", severity=Severity.CRITICAL))
    low = make_alert(3, key="k3", severity=Severity.LOW)
    await store.update_alert(acknowledged(low, by="user:bob", now=at(5)), expected_version=1)
    open_only = await store.count_alerts(states=[AlertState.OPEN])
    assert open_only == {"high": 3}
    active = await store.count_alerts(states=ACTIVE)
    assert active == {"high": 3, "low": 1}
    every = await store.count_alerts(states=list(AlertState))
    assert every == {"high": 3, "low": 1, "critical": 1}
    assert await store.count_alerts(states=()) == {}


async def test_replicas_opening_the_same_alert_at_once_one_wins(
    store: Store, replica: Store
) -> None:
    alerts = [make_alert(n, seen=n) for n in range(1, 9)]
    outcomes = await asyncio.gather(
        *((store, replica)[n % 2].create_alert(alert) for n, alert in enumerate(alerts)),
        return_exceptions=True,
    )
    assert sum(outcome is None for outcome in outcomes) == 1
    assert all(isinstance(o, Conflict) for o in outcomes if o is not None)
    [winner] = await store.list_alerts(AlertMatch())
    assert await replica.active_alert("denied_burst", "crm-bot") == winner


# -- values ----------------------------------------------------------------------------------


async def test_times_come_back_aware_utc(store: Store) -> None:
    alert = closed(make_alert(1))
    assert alert.acknowledged_at is not None
    assert alert.resolved_at is not None
    east = replace(
        make_alert(1),
        first_seen=alert.first_seen.astimezone(EAST),
        last_seen=alert.last_seen.astimezone(WEST),
    )
    await store.create_alert(east)
    west = replace(
        alert,
        acknowledged_at=alert.acknowledged_at.astimezone(WEST),
        resolved_at=alert.resolved_at.astimezone(EAST),
    )
    await store.update_alert(west, expected_version=1)
    await store.record_usage([replace(use(), last_used=at(30).astimezone(WEST))])
    stored = await store.get_alert("alr_001")
    assert stored == alert
    assert stored is not None
    times = [stored.first_seen, stored.last_seen, stored.acknowledged_at, stored.resolved_at]
    assert all(t is not None and t.tzinfo is UTC for t in times)
    [usage] = await store.list_usage()
    assert usage.last_used == at(30)
    assert usage.last_used.tzinfo is UTC


async def test_details_round_trip_unicode_and_nesting(store: Store) -> None:
    await store.create_alert(make_alert(1))
    stored = await store.get_alert("alr_001")
    assert stored is not None
    assert isinstance(stored.details, MappingProxyType)
    assert stored.details == DETAILS
    assert stored.details["sample"][0]["resource"] == 'Doc::"Zoë — 日本語 ✓"'
    assert "\u200b" in stored.details["flags"]["tags"][1]
    assert stored.details["flags"]["first"] is None
    assert stored.details["window_s"] == 60.5
    with pytest.raises(TypeError):
        stored.details["denied"] = 0  # type: ignore[index]
    [listed] = await store.list_alerts(AlertMatch())
    assert listed == stored


async def test_naive_datetimes_are_value_error_and_write_nothing(store: Store) -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        await store.create_alert(replace(make_alert(1), first_seen=NAIVE))
    assert await store.get_alert("alr_001") is None
    await store.create_alert(make_alert(1))
    with pytest.raises(ValueError, match="naive datetime"):
        await store.update_alert(
            replace(closed(make_alert(1)), resolved_at=NAIVE), expected_version=1
        )
    assert await store.get_alert("alr_001") == make_alert(1)
    with pytest.raises(ValueError, match="naive datetime"):
        await store.list_alerts(AlertMatch(since=NAIVE))
    with pytest.raises(ValueError, match="naive datetime"):
        await store.record_usage([use(), replace(use("b"), last_used=NAIVE)])
    assert await store.list_usage() == []
    with pytest.raises(ValueError, match="naive datetime"):
        await store.count_pending_approvals(now=NAIVE)


async def test_owners_and_details_are_stored_as_json_text(store: Store) -> None:
    if not isinstance(store, SqlStore):
        pytest.skip("the memory store has no columns")
    alert = replace(make_alert(1), details={"z": "\u200b", "a": [1, {"b": None}]})
    await store.create_alert(alert)
    query = "SELECT owners, details, severity, state FROM alerts"
    row = await store.run_sync(lambda conn: conn.execute(sa.text(query)).one())
    assert tuple(row) == (
        '["team:crm","user:alice"]',
        '{"a":[1,{"b":null}],"z":"\\u200b"}',
        "high",
        "open",
    )


# -- usage -----------------------------------------------------------------------------------


async def test_usage_counts_add_up_and_keep_the_latest_time(store: Store) -> None:
    await store.record_usage([use(when=10, count=3), use("write", when=5)])
    await store.record_usage([use(when=60, count=2)])
    await store.record_usage([use(when=30, count=4)])  # late news: the time stays at 60
    assert await store.list_usage() == [use(when=60, count=9), use("write", when=5)]


async def test_usage_same_key_twice_in_one_call(store: Store) -> None:
    await store.record_usage([use(when=50, count=2), use("write"), use(when=20, count=5)])
    assert await store.list_usage() == [use(when=50, count=7), use("write")]
    await store.record_usage([use(when=70), use(when=10), use(when=40)])
    assert await store.list_usage() == [use(when=70, count=10), use("write")]


async def test_usage_lists_by_key_byte_by_byte_and_by_agent(store: Store) -> None:
    # Upper case before lower case before non-ASCII, as the bytes of UTF-8 compare.
    keys = [("crm-bot", "read", r) for r in ("ü", "a", "Z")]
    keys += [("mail-bot", "read", "a"), ("crm-bot", "Write", "a"), ("Crm-bot", "read", "a")]
    await store.record_usage(
        [use(action, resource, agent=agent) for agent, action, resource in keys]
    )
    assert [(u.agent, u.action, u.resource) for u in await store.list_usage()] == sorted(keys)
    assert await store.list_usage(agent="mail-bot") == [use("read", "a", agent="mail-bot")]
    assert await store.list_usage(agent="nobody") == []


async def test_recording_no_usage_writes_nothing(store: Store) -> None:
    await store.record_usage([])
    assert await store.list_usage() == []


# -- gauges ----------------------------------------------------------------------------------


async def test_count_live_leases(store: Store) -> None:
    assert await store.count_live_leases() == 0
    issuing, active, ending, ended = lease(1), lease(2), lease(3), lease(4)
    for each in (issuing, active, ending, ended):
        await store.create_lease(each)
    made = lifecycle.activated(active, now=at(1))
    await store.save_lease(made, expected_version=1)
    going, gone = (
        lifecycle.begin_end(each, now=at(2), kind=EndKind.REVOKED, reason=None, claim_until=at(9))
        for each in (ending, ended)
    )
    await store.save_lease(going, expected_version=1)
    await store.save_lease(gone, expected_version=1)
    await store.save_lease(lifecycle.ended(gone, now=at(3)), expected_version=gone.version)
    assert await store.count_live_leases() == 3


async def test_count_pending_approvals(store: Store) -> None:
    assert await store.count_pending_approvals(now=at(0)) == 0
    await store.create_approval(approval(1, created=0))  # expires at 300
    await store.create_approval(approval(2, created=100))  # expires at 400
    await store.create_approval(approval(3, created=100, state=ApprovalState.DENIED))
    await store.create_approval(approval(4, created=200, state=ApprovalState.APPROVED))
    assert await store.count_pending_approvals(now=at(299)) == 2
    # Expired at its expiry itself, and in any zone.
    assert await store.count_pending_approvals(now=at(300).astimezone(EAST)) == 1
    assert await store.count_pending_approvals(now=at(400)) == 0

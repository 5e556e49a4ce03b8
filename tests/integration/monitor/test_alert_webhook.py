"""Alerts reach a signed webhook: a real HTTP receiver on 127.0.0.1 that the tests start, told
of each alert raised, acknowledged and resolved (``TETHER_ALERT_WEBHOOK_URL``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.webhooks import Received, Receiver, serve
from tether.api._notify import SIGNATURE_HEADER, verify_signature
from tether.api.services import Services
from tether.errors import Unauthenticated
from tether.monitor.models import Alert

from .conftest import wait_for_alert

SECRET = "whsec_" + "alerts-0123456789abcdef" * 2


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from serve("/alerts")


@pytest.fixture
def monitor_settings(receiver: Receiver) -> dict[str, object]:
    return {"alert_webhook_url": receiver.url, "alert_webhook_secret": SECRET}


async def _unknown_caller(client: httpx.AsyncClient, services: Services, who: str) -> Alert:
    """A decision asked with a token that is none: an ``unknown_caller`` alert."""
    body = {"action": {"name": "call_tool"}, "resource": {"type": "Tool", "id": "search_faq"}}
    answer = await client.post("/access/v1/evaluation", json=body,
                               headers={"Authorization": f"Bearer {who}"})  # fmt: skip
    assert answer.json()["decision"] is False
    return await wait_for_alert(services, "unknown_caller")


def _verified(request: Received) -> dict[str, Any]:
    """The notice, once its signature verifies (as a receiver must check it)."""
    assert request.headers["content-type"] == "application/json"
    verify_signature(SECRET, request.headers[SIGNATURE_HEADER.lower()], request.body,
                     now=time.time())  # fmt: skip
    return request.notice()


async def test_a_raised_alert_is_posted_signed_with_its_facts(
    client: httpx.AsyncClient, services: Services, receiver: Receiver
) -> None:
    alert = await _unknown_caller(client, services, "not-a-token")
    [request] = await receiver.received(1)
    notice = _verified(request)
    assert request.path == "/alerts"
    assert notice["type"] == "alert.raised"
    sent = notice["alert"]
    assert sent["alert_id"] == alert.id
    assert (sent["kind"], sent["key"], sent["severity"], sent["state"]) == (
        "unknown_caller", alert.key, "medium", "open",
    )  # fmt: skip
    assert (sent["count"], sent["summary"]) == (1, alert.summary)
    assert sent["first_seen"] == alert.first_seen.isoformat()
    # Signed with the secret: under another, or over another body, it does not verify.
    header = request.headers[SIGNATURE_HEADER.lower()]
    with pytest.raises(Unauthenticated):
        verify_signature("whsec_" + "x" * 40, header, request.body, now=time.time())
    with pytest.raises(Unauthenticated):
        verify_signature(SECRET, header, request.body.replace(b"open", b"shut"), now=time.time())


async def test_a_receiver_failing_twice_gets_a_third_try(
    client: httpx.AsyncClient, services: Services, receiver: Receiver
) -> None:
    receiver.script = [500, 500]  # then 200
    alert = await _unknown_caller(client, services, "not-a-token")
    tries = await receiver.received(3)
    assert {t.body for t in tries} == {tries[0].body}  # the same notice each time,
    assert all(_verified(t)["alert"]["alert_id"] == alert.id for t in tries)  # signed anew
    # Taken on the third try: the next notice is the next alert's, not a fourth try.
    acked = await client.post(f"/v1/alerts/{alert.id}/acknowledge", json={})
    assert acked.status_code == 200, acked.text
    fourth = (await receiver.received(4))[3]
    assert _verified(fourth)["type"] == "alert.acknowledged"


async def test_acknowledging_and_resolving_are_posted_too(
    client: httpx.AsyncClient, services: Services, receiver: Receiver
) -> None:
    alert = await _unknown_caller(client, services, "not-a-token")
    await receiver.received(1)
    acked = await client.post(f"/v1/alerts/{alert.id}/acknowledge", json={"note": "on it"})
    assert acked.status_code == 200, acked.text
    resolved = await client.post(f"/v1/alerts/{alert.id}/resolve", json={})
    assert resolved.status_code == 200, resolved.text
    notices = [_verified(r) for r in await receiver.received(3)]
    assert [n["type"] for n in notices] == ["alert.raised", "alert.acknowledged", "alert.resolved"]
    assert {n["alert"]["alert_id"] for n in notices} == {alert.id}
    _, ack, done = (n["alert"] for n in notices)
    assert (ack["state"], ack["acknowledged_by"], ack["note"]) == (
        "acknowledged", acked.json()["acknowledged_by"], "on it",
    )  # fmt: skip
    assert (done["state"], done["resolved_by"]) == ("resolved", resolved.json()["resolved_by"])
    assert done["resolved_by"] is not None

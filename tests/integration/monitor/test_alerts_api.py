"""``/v1/alerts`` over real alerts: raised by the monitor from behaviour injected through the
API, then listed, shown, acknowledged and resolved by operators of each role."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.integration.api.conftest import RegisteredAgent
from tests.integration.api.decisions import evaluation, svid
from tests.integration.api.test_management_api import operator_token
from tether.api.services import Services
from tether.crypto.assertion import generate_agent_key

from .conftest import wait_for_alert
from .test_decision_detectors import GHOST, as_, forged, records


@dataclass
class Seen:
    """Three alerts: faq-bot's (owned by alice) and crm-bot's (owned by bob) undeclared tool
    calls, and an unregistered caller's (no agent, no owner)."""

    faq: str
    crm: str
    ghost: str
    faq_token: str


async def register(client: httpx.AsyncClient, name: str, owner: str) -> RegisteredAgent:
    body = {"name": name, "owners": [owner], "declarations": {"tools": ["search_faq"]}}
    created = await client.post("/v1/agents", json=body)
    assert created.status_code == 201, created.text
    key = generate_agent_key()
    added = await client.post(f"/v1/agents/{name}/keys", json={"jwk": key.public_jwk})
    assert added.status_code == 201, added.text
    return RegisteredAgent(name, created.json()["spiffe_id"], key, added.json()["kid"])


async def undeclared_call(client: httpx.AsyncClient, token: str) -> None:
    answer = await client.post(
        "/access/v1/evaluation", json=evaluation("wire_money"), headers=as_(token)
    )
    assert answer.status_code == 200, answer.text


@pytest.fixture
async def seen(client: httpx.AsyncClient, services: Services, agent_token: str) -> Seen:
    crm_token = await svid(client, await register(client, "crm-bot", "bob"))
    await undeclared_call(client, agent_token)
    await undeclared_call(client, crm_token)
    await client.post("/access/v1/evaluation", json=evaluation(), headers=as_(forged(GHOST)))
    faq = await wait_for_alert(services, "out_of_declaration", where=lambda a: a.agent == "faq-bot")
    crm = await wait_for_alert(services, "out_of_declaration", where=lambda a: a.agent == "crm-bot")
    ghost = await wait_for_alert(services, "unknown_caller")
    return Seen(faq=faq.id, crm=crm.id, ghost=ghost.id, faq_token=agent_token)


async def listed(client: httpx.AsyncClient, token: str | None = None, **params: Any) -> set[str]:
    headers = as_(token) if token else {}
    answer = await client.get("/v1/alerts", params=params, headers=headers)
    assert answer.status_code == 200, answer.text
    return {a["alert_id"] for a in answer.json()["alerts"]}


def error(answer: httpx.Response) -> tuple[int, str]:
    return answer.status_code, answer.json()["error"]["code"]


async def test_alerts_are_listed_and_filtered_by_state_kind_and_agent(
    client: httpx.AsyncClient, seen: Seen
) -> None:
    assert await listed(client) == {seen.faq, seen.crm, seen.ghost}
    assert await listed(client, kind="out_of_declaration") == {seen.faq, seen.crm}
    assert await listed(client, kind="unknown_caller") == {seen.ghost}
    assert await listed(client, agent="crm-bot") == {seen.crm}
    assert await listed(client, state="open") == {seen.faq, seen.crm, seen.ghost}
    assert await listed(client, state="acknowledged") == set()
    acked = await client.post(f"/v1/alerts/{seen.crm}/acknowledge", json={})
    assert acked.status_code == 200, acked.text
    assert await listed(client, state="acknowledged") == {seen.crm}
    assert await listed(client, state="open") == {seen.faq, seen.ghost}
    both = await listed(client, state=["open", "acknowledged"], kind="out_of_declaration")
    assert both == {seen.faq, seen.crm}
    newest = (await client.get("/v1/alerts")).json()["alerts"][0]
    assert newest["alert_id"] == seen.ghost


async def test_an_alert_is_shown_with_its_details_and_an_unknown_one_is_404(
    client: httpx.AsyncClient, seen: Seen
) -> None:
    shown = await client.get(f"/v1/alerts/{seen.faq}")
    assert shown.status_code == 200, shown.text
    alert = shown.json()
    assert alert["alert_id"] == seen.faq
    assert (alert["kind"], alert["severity"], alert["state"]) == (
        "out_of_declaration",
        "medium",
        "open",
    )
    assert (alert["agent"], alert["owners"], alert["count"]) == ("faq-bot", ["alice"], 1)
    assert alert["details"]["resource"] == 'Tool::"wire_money"'
    assert alert["acknowledged_at"] is None
    assert alert["resolved_at"] is None
    for answer in (
        await client.get("/v1/alerts/alr_nosuchalert"),
        await client.post("/v1/alerts/alr_nosuchalert/acknowledge", json={}),
        await client.post("/v1/alerts/alr_nosuchalert/resolve", json={}),
    ):
        assert error(answer) == (404, "alert_not_found")


async def test_acknowledge_then_resolve_changes_the_state_and_is_audited_with_the_actor(
    client: httpx.AsyncClient, seen: Seen
) -> None:
    sam = await operator_token(client, "security-admin", "sam")
    acked = await client.post(
        f"/v1/alerts/{seen.faq}/acknowledge", json={"note": "looking"}, headers=as_(sam)
    )
    assert acked.status_code == 200, acked.text
    assert (acked.json()["state"], acked.json()["acknowledged_by"]) == (
        "acknowledged",
        "operator:sam",
    )
    assert acked.json()["note"] == "looking"
    assert acked.json()["acknowledged_at"] is not None
    done = await client.post(
        f"/v1/alerts/{seen.faq}/resolve", json={"note": "declared it"}, headers=as_(sam)
    )
    assert done.status_code == 200, done.text
    assert (done.json()["state"], done.json()["resolved_by"]) == ("resolved", "operator:sam")
    assert done.json()["note"] == "declared it"
    shown = (await client.get(f"/v1/alerts/{seen.faq}")).json()
    assert shown["state"] == "resolved"
    assert shown["resolved_at"] is not None
    changes = [r for r in await records(client, "alert.") if r["subject"] == f"alert:{seen.faq}"]
    assert [(r["type"], r["actor"]) for r in changes] == [
        ("alert.raised", "system:monitor"),
        ("alert.acknowledged", "operator:sam"),
        ("alert.resolved", "operator:sam"),
    ]
    assert changes[1]["details"]["note"] == "looking"
    assert changes[2]["details"]["state"] == "resolved"


async def test_an_open_alert_can_be_resolved_at_once_but_a_resolved_one_not_acknowledged(
    client: httpx.AsyncClient, seen: Seen
) -> None:
    done = await client.post(f"/v1/alerts/{seen.ghost}/resolve", json={})
    assert done.status_code == 200, done.text
    assert error(await client.post(f"/v1/alerts/{seen.ghost}/acknowledge", json={})) == (
        409,
        "invalid_state_transition",
    )
    assert error(await client.post(f"/v1/alerts/{seen.ghost}/resolve", json={})) == (
        409,
        "invalid_state_transition",
    )
    assert (await client.get(f"/v1/alerts/{seen.ghost}")).json()["state"] == "resolved"


async def test_a_note_is_bounded_and_the_body_takes_nothing_else(
    client: httpx.AsyncClient, seen: Seen
) -> None:
    long = await client.post(f"/v1/alerts/{seen.faq}/acknowledge", json={"note": "x" * 1001})
    assert long.status_code == 400
    extra = await client.post(f"/v1/alerts/{seen.faq}/acknowledge", json={"state": "resolved"})
    assert extra.status_code == 400
    assert (await client.get(f"/v1/alerts/{seen.faq}")).json()["state"] == "open"


async def test_a_developer_sees_and_acts_on_the_alerts_of_their_own_agents_only(
    client: httpx.AsyncClient, seen: Seen
) -> None:
    alice = await operator_token(client, "developer", "alice")  # owns faq-bot, not crm-bot
    assert await listed(client, alice) == {seen.faq}
    assert await listed(client, alice, agent="crm-bot") == set()
    # Someone else's alert is not found, not forbidden: its existence is not told.
    for answer in (
        await client.get(f"/v1/alerts/{seen.crm}", headers=as_(alice)),
        await client.post(f"/v1/alerts/{seen.crm}/acknowledge", json={}, headers=as_(alice)),
        await client.post(f"/v1/alerts/{seen.crm}/resolve", json={}, headers=as_(alice)),
        await client.get(f"/v1/alerts/{seen.ghost}", headers=as_(alice)),
    ):
        assert error(answer) == (404, "alert_not_found")
    acked = await client.post(f"/v1/alerts/{seen.faq}/acknowledge", json={}, headers=as_(alice))
    assert acked.status_code == 200, acked.text
    assert acked.json()["acknowledged_by"] == "operator:alice"
    assert (await client.get(f"/v1/alerts/{seen.crm}")).json()["state"] == "open"
    types = {r["type"] for r in await records(client, "alert.") if r["actor"] == "operator:alice"}
    assert types == {"alert.acknowledged"}


async def test_an_auditor_reads_every_alert_but_acknowledges_none(
    client: httpx.AsyncClient, seen: Seen
) -> None:
    audrey = await operator_token(client, "auditor", "audrey")
    assert await listed(client, audrey) == {seen.faq, seen.crm, seen.ghost}
    assert (await client.get(f"/v1/alerts/{seen.crm}", headers=as_(audrey))).status_code == 200
    for change in ("acknowledge", "resolve"):
        refused = await client.post(f"/v1/alerts/{seen.crm}/{change}", json={}, headers=as_(audrey))
        assert error(refused) == (403, "forbidden")
    assert (await client.get(f"/v1/alerts/{seen.crm}")).json()["state"] == "open"


async def test_alerts_are_for_operators_an_agent_is_refused_even_its_own(
    client: httpx.AsyncClient, seen: Seen
) -> None:
    anonymous = await client.get("/v1/alerts", headers={"Authorization": ""})
    assert anonymous.status_code == 401
    # An agent reads no alert, not even its own.
    agents = await client.get("/v1/alerts", headers=as_(seen.faq_token))
    assert error(agents) == (403, "forbidden")
    own = await client.get(f"/v1/alerts/{seen.faq}", headers=as_(seen.faq_token))
    assert error(own) == (403, "forbidden")
    acked = await client.post(
        f"/v1/alerts/{seen.faq}/acknowledge", json={}, headers=as_(seen.faq_token)
    )
    assert error(acked) == (403, "forbidden")


async def test_a_finding_after_resolve_opens_a_new_alert(
    client: httpx.AsyncClient, services: Services, seen: Seen
) -> None:
    done = await client.post(f"/v1/alerts/{seen.faq}/resolve", json={"note": "ok"})
    assert done.status_code == 200, done.text
    await undeclared_call(client, seen.faq_token)
    new = await wait_for_alert(
        services, "out_of_declaration", where=lambda a: a.agent == "faq-bot" and a.id != seen.faq
    )
    assert (new.state, new.count) == ("open", 1)
    old = (await client.get(f"/v1/alerts/{seen.faq}")).json()
    assert (old["state"], old["count"]) == ("resolved", 1)
    assert await listed(client, agent="faq-bot") == {seen.faq, new.id}
    assert await listed(client, agent="faq-bot", state="open") == {new.id}

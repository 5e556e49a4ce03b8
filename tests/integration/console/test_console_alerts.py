"""The console's alerts in Debian's Chromium: the list, one alert, acknowledging and resolving
it; alerts raised for real by the server's monitor (a token of an agent nobody registered, an
agent calling a tool it did not declare) and checked through ``/v1/alerts``."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.integration.api.decisions import evaluation
from tests.integration.api.forge import forge
from tests.integration.live.conftest import Live
from tests.support.ciba_agent import Agent
from tether.crypto.assertion import generate_agent_key

from .conftest import Console, add_person

#: The monitor's bound: an alert is raised within this many seconds.
WITHIN = 30.0
TD = "acme.org"


def forged(sub: str) -> str:
    """A well-formed token signed by a key Tether never saw, claiming to be ``sub``."""
    now = int(time.time())
    claims = {"iss": "https://elsewhere.example", "sub": sub, "aud": "https://elsewhere.example",
              "iat": now, "exp": now + 300, "jti": f"jti-{sub}-{now}"}  # fmt: skip
    header = {"alg": "ES256", "typ": "JWT", "kid": "not-a-tether-key"}
    return forge(generate_agent_key().private_pem, claims, header=header)


def alert_of(server: Live, kind: str, key: str) -> dict[str, Any]:
    """The alert of ``kind`` about ``key``, once ``/v1/alerts`` lists it."""
    deadline = time.monotonic() + WITHIN
    with server.ops() as ops:
        while True:
            listed = ops.get("/v1/alerts", params={"kind": kind, "limit": 500})
            assert listed.status_code == 200, listed.text
            for alert in listed.json()["alerts"]:
                if alert["key"] == key:
                    return dict(alert)
            assert time.monotonic() < deadline, f"no {kind} alert about {key} in {WITHIN} s"
            time.sleep(0.1)


def raise_unknown_caller(server: Live, name: str) -> dict[str, Any]:
    """A decision asked with the token of an agent nobody registered: an ``unknown_caller``
    alert about ``name``'s instance (or about ``name`` itself when it is no SPIFFE name)."""
    sub = name if not re.fullmatch(r"[a-z0-9-]+", name) else f"spiffe://{TD}/agent/{name}/i/1"
    asked = httpx.post(f"{server.addr}/access/v1/evaluation", json=evaluation(),
                       headers={"Authorization": f"Bearer {forged(sub)}"})  # fmt: skip
    assert asked.status_code == 200, asked.text
    assert asked.json()["decision"] is False
    return alert_of(server, "unknown_caller", sub)


def agent_with_key(server: Live, name: str, owners: list[str], tools: list[str]) -> Agent:
    """A registered agent with a key of its own, as a raw-HTTP client of the server."""
    key = generate_agent_key()
    with server.ops() as ops:
        body = {"name": name, "owners": owners, "declarations": {"tools": tools}}
        created = ops.post("/v1/agents", json=body)
        assert created.status_code == 201, created.text
        added = ops.post(f"/v1/agents/{name}/keys", json={"jwk": key.public_jwk})
        assert added.status_code == 201, added.text
    private = serialization.load_pem_private_key(key.private_pem, password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    return Agent(server.addr, str(created.json()["spiffe_id"]), private)


def raise_out_of_declaration(server: Live, name: str, owner: str) -> dict[str, Any]:
    """``name`` (owned by ``owner``, declaring only ``search_faq``) calls ``transfer``."""
    agent = agent_with_key(server, name, [owner], ["search_faq"])
    with agent.http:
        agent.decide(agent.svid(), 100)
    return alert_of(server, "out_of_declaration", name)


def alert_state(server: Live, alert_id: str) -> dict[str, Any]:
    with server.ops() as ops:
        shown = ops.get(f"/v1/alerts/{alert_id}")
        assert shown.status_code == 200, shown.text
        return dict(shown.json())


def session_of(console: Console) -> httpx.Client:
    """An HTTP client with the browser's console session (and no JavaScript)."""
    cookies = {c["name"]: c["value"] for c in console.page.context.cookies()}
    return httpx.Client(base_url=console.server.addr, cookies=cookies)


def csrf_of(console: Console) -> str:
    token = console.page.locator("input[name=csrf]").first.get_attribute("value")
    assert token
    return token


def test_a_security_admin_acknowledges_then_resolves_an_alert_from_its_page(
    console: Console, server: Live
) -> None:
    raised = raise_unknown_caller(server, "ghost-ack")
    add_person(server, "alma", "security-admin")
    console.sign_in("alma")
    page = console.open("/console/alerts")
    row = page.locator("#alerts tr", has_text="ghost-ack")
    assert row.get_by_text("open", exact=True).is_visible()
    assert row.get_by_text("medium", exact=True).is_visible()
    console.shot("alerts")
    row.get_by_role("link", name="unknown_caller").click()
    page.wait_for_url(re.compile(rf".*/console/alerts/{raised['alert_id']}$"))
    assert page.get_by_role("heading", name="History").is_visible()
    assert page.locator("#history").get_by_text("Raised by the monitor").is_visible()
    console.shot("alert-detail")

    page.get_by_label("Note (optional)").fill("looking into the ghost")
    page.get_by_role("button", name="Acknowledge").click()
    page.wait_for_url(re.compile(rf".*/console/alerts/{raised['alert_id']}$"))
    acked = alert_state(server, raised["alert_id"])
    assert (acked["state"], acked["acknowledged_by"], acked["note"]) == (
        "acknowledged", "operator:alma", "looking into the ghost",
    )  # fmt: skip
    assert page.locator("#history").get_by_text("Acknowledged").is_visible()
    assert page.get_by_role("button", name="Acknowledge").count() == 0, "acknowledged once"

    page.get_by_role("button", name="Resolve").click()
    page.wait_for_url(re.compile(rf".*/console/alerts/{raised['alert_id']}$"))
    done = alert_state(server, raised["alert_id"])
    assert (done["state"], done["resolved_by"]) == ("resolved", "operator:alma")
    assert page.get_by_role("button", name="Resolve").count() == 0
    # Resolved: off the default list, on the resolved one.
    console.open("/console/alerts")
    assert page.locator("#alerts tr", has_text="ghost-ack").count() == 0
    page.get_by_label("Show").select_option("resolved")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*/console/alerts\?state=resolved$"))
    assert page.locator("#alerts tr", has_text="ghost-ack").count() == 1


def test_an_alert_change_without_the_csrf_token_changes_nothing(
    console: Console, server: Live
) -> None:
    raised = raise_unknown_caller(server, "ghost-csrf")
    add_person(server, "bruno", "security-admin")
    console.sign_in("bruno")
    with session_of(console) as forged_form:
        answer = forged_form.post(
            f"/console/alerts/{raised['alert_id']}/resolve", data={"note": "gone"}
        )
        assert answer.status_code == 403
        assert "csrf_refused" in answer.text
    assert alert_state(server, raised["alert_id"])["state"] == "open"


def test_an_auditor_reads_an_alert_but_may_not_change_it(console: Console, server: Live) -> None:
    raised = raise_unknown_caller(server, "ghost-audit")
    add_person(server, "cora", "auditor")
    console.sign_in("cora")
    page = console.open(f"/console/alerts/{raised['alert_id']}")
    assert page.get_by_text(raised["summary"]).first.is_visible()
    assert page.get_by_role("button", name="Acknowledge").count() == 0, "no form offered"
    # Sent all the same, with the session's own token: the monitor refuses it.
    with session_of(console) as session:
        answer = session.post(
            f"/console/alerts/{raised['alert_id']}/acknowledge", data={"csrf": csrf_of(console)}
        )
    assert answer.status_code == 403
    assert "forbidden" in answer.text
    assert alert_state(server, raised["alert_id"])["state"] == "open"


def test_a_developer_sees_and_acknowledges_only_the_alerts_of_agents_they_own(
    console: Console, server: Live
) -> None:
    add_person(server, "dora", "developer")
    theirs = raise_out_of_declaration(server, "dora-bot", "dora")
    stranger = raise_unknown_caller(server, "ghost-dev")
    console.sign_in("dora")
    page = console.open("/console/alerts")
    assert page.locator("#alerts tr", has_text="dora-bot").count() == 1
    assert page.locator("#alerts tr", has_text="ghost-dev").count() == 0
    with session_of(console) as session:
        unseen = session.get(f"/console/alerts/{stranger['alert_id']}")
    assert unseen.status_code == 404, "another's alert is not even shown to exist"
    console.open(f"/console/alerts/{theirs['alert_id']}")
    page.get_by_role("button", name="Acknowledge").click()
    page.wait_for_url(re.compile(rf".*/console/alerts/{theirs['alert_id']}$"))
    assert alert_state(server, theirs["alert_id"])["acknowledged_by"] == "operator:dora"


def test_an_end_user_has_no_alerts_section(console: Console, server: Live) -> None:
    raised = raise_unknown_caller(server, "ghost-user")
    add_person(server, "emil")
    console.sign_in("emil")
    assert console.page.get_by_role("navigation").get_by_role("link", name="Alerts").count() == 0
    with session_of(console) as session:
        assert session.get("/console/alerts").status_code == 403
        assert session.get(f"/console/alerts/{raised['alert_id']}").status_code == 403


def test_a_hostile_caller_name_quoted_by_an_alert_renders_as_text(
    console: Console, server: Live
) -> None:
    hostile = "<script>alert(1)</script>"
    raised = raise_unknown_caller(server, hostile)
    add_person(server, "fynn", "security-admin")
    console.sign_in("fynn")
    page = console.open("/console/alerts")
    assert page.locator("#alerts").get_by_text(hostile).first.is_visible()
    page = console.open(f"/console/alerts/{raised['alert_id']}")
    assert page.get_by_text(hostile, exact=True).is_visible()
    assert page.locator("script:not([src])").count() == 0

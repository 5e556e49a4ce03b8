"""The console's overview in Debian's Chromium: the fleet's figures, open alerts, approvals
waiting, decision rates and the standing privileges (loaded by htmx after the page), each
shown only to whom may see it; an end user sees their own figures only."""

from __future__ import annotations

from collections import Counter
from typing import Any

from tests.integration.live.conftest import Live

from .conftest import Console, add_person
from .test_console_alerts import agent_with_key, raise_unknown_caller, session_of

#: Every call of ``transfer`` needs the user's approval (the agents below may ask for one).
POLICY = """
@id("transfers-with-approval")
@obligation("approval")
permit (principal, action == Tether::Action::"call_tool", resource == Tether::Tool::"transfer");
"""


def agents(server: Live) -> list[dict[str, Any]]:
    with server.ops() as ops:
        listed = ops.get("/v1/agents", params={"limit": 500})
        assert listed.status_code == 200, listed.text
        return list(listed.json()["agents"])


def ask_approval(server: Live, agent_name: str, person: str) -> None:
    """``agent_name`` (owned by ``person``) asks ``person`` to approve a transfer (CIBA)."""
    with server.ops() as ops:
        assert ops.post("/v1/policies", json={"text": POLICY}).status_code == 201
    agent = agent_with_key(server, agent_name, [person], ["transfer"])
    with agent.http:
        svid = agent.svid()
        first = agent.decide(svid, 100)
        assert first["context"]["effect"] == "approval_required", first
        agent.ask(person, first["context"]["call_digest"], 100, False)


def figure(console: Console, tile: str) -> str:
    return console.page.locator(f"{tile} .figure").first.inner_text().strip()


def test_the_overview_shows_the_fleet_by_tier_and_state_and_an_open_alert(
    console: Console, server: Live
) -> None:
    with server.ops() as ops:
        for name, tools in (("ov-faq", ["search_faq"]), ("ov-mail", ["send_mail", "read_mail"])):
            body = {"name": name, "owners": ["team"], "declarations": {"tools": tools}}
            assert ops.post("/v1/agents", json=body).status_code == 201
    raised = raise_unknown_caller(server, "ghost-overview")
    add_person(server, "gina", "security-admin")
    console.sign_in("gina")
    page = console.page
    fleet = agents(server)
    assert figure(console, "#fleet") == str(len(fleet))
    tiers = Counter(str(a["risk"]["tier"]) for a in fleet)
    states = Counter(str(a["state"]) for a in fleet)
    for tier in ("low", "medium", "high", "critical"):
        row = page.locator("#fleet table", has_text="By risk tier").locator("tr", has_text=tier)
        assert row.locator("td").nth(1).inner_text() == str(tiers[tier])
    state_table = page.locator("#fleet table", has_text="By state")
    assert state_table.locator("tr", has_text="active").locator("td").nth(1).inner_text() == str(
        states["active"]
    )
    newest = page.locator("#newest-alerts tr", has_text="ghost-overview")
    assert newest.get_by_role("link", name="unknown_caller").get_attribute("href") == (
        f"/console/alerts/{raised['alert_id']}"
    )
    assert int(figure(console, "#alert-counts")) >= 1
    assert page.locator("#rates .tile", has_text="deny").locator(".figure").inner_text() != "0.0"
    # The standing privileges come after the page, through htmx.
    page.locator("#standing").wait_for()
    assert page.locator("#posture").get_by_text("Leases beyond their role's max TTL").is_visible()
    console.shot("overview-security")


def test_an_end_user_sees_their_own_approvals_and_no_fleet_figures(
    console: Console, server: Live
) -> None:
    add_person(server, "hana")
    ask_approval(server, "ov-bank", "hana")
    raise_unknown_caller(server, "ghost-hana")
    console.sign_in("hana")
    page = console.page
    assert figure(console, "#my-approvals") == "1"
    inbox = page.locator("#my-approvals").get_by_role("link")
    assert inbox.get_attribute("href") == "/console/me/approvals"
    assert figure(console, "#my-grants") == "0"
    for fleet_only in ("#fleet", "#alert-counts", "#rates", "#posture", "#all-approvals"):
        assert page.locator(fleet_only).count() == 0, fleet_only
    nav = page.get_by_role("navigation", name="Console")
    assert nav.get_by_role("link", name="Alerts").count() == 0
    assert nav.get_by_role("link", name="Agents").count() == 0
    assert "ghost-hana" not in page.content()
    console.shot("overview-user")
    with session_of(console) as session:
        assert session.get("/console/overview/posture").status_code == 403


def test_security_sees_every_persons_pending_approvals(console: Console, server: Live) -> None:
    add_person(server, "ines")
    ask_approval(server, "ov-pay", "ines")
    add_person(server, "jana", "security-admin")
    console.sign_in("jana")
    assert int(figure(console, "#all-approvals")) >= 1
    assert figure(console, "#my-approvals") == "0", "none asked of jana herself"


def test_the_standing_privileges_are_a_page_without_htmx_and_a_fragment_with_it(
    console: Console, server: Live
) -> None:
    add_person(server, "kai", "auditor")
    console.sign_in("kai")
    with session_of(console) as session:
        whole = session.get("/console/overview/posture")
        fragment = session.get("/console/overview/posture", headers={"HX-Request": "true"})
    assert whole.status_code == fragment.status_code == 200
    assert "<h1>Standing privileges</h1>" in whole.text
    assert 'id="standing"' in fragment.text
    assert "<html" not in fragment.text
    assert fragment.headers["content-security-policy"].startswith("default-src 'none'")

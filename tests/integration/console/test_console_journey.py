"""The issue's proof, as one journey through the console in Debian's Chromium: three people
sign in through Tether's provider — a developer registers an agent, the person it acts for
approves its transfer (CIBA) in the inbox, a security admin opens the trace of that call and
quarantines the agent. Every page on the way is checked for JavaScript errors and
photographed; each outcome is checked through the API, not only on the page."""

from __future__ import annotations

import re

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from playwright.sync_api import Browser, expect

from tests.integration.live.conftest import Live
from tests.support.ciba_agent import Agent
from tether.crypto.assertion import generate_agent_key

from .conftest import DESKTOP, PHONE, add_person, open_console

POLICY = """
@id("journey-bot-transfers-with-approval")
@obligation("approval")
permit (principal == Tether::Agent::"journey-bot", action == Tether::Action::"call_tool",
        resource == Tether::Tool::"transfer");
"""
CORRELATION = "journey-transfer-1"


def _agent_with_key(server: Live, name: str) -> Agent:
    """The agent's key, added by the platform (the console registers, the API adds keys)."""
    key = generate_agent_key()
    with server.ops() as ops:
        added = ops.post(f"/v1/agents/{name}/keys", json={"jwk": key.public_jwk})
        assert added.status_code == 201, added.text
        spiffe_id = ops.get(f"/v1/agents/{name}").json()["spiffe_id"]
        assert ops.post("/v1/policies", json={"text": POLICY}).status_code == 201
    private = serialization.load_pem_private_key(key.private_pem, password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    agent = Agent(server.addr, str(spiffe_id), private)
    agent.http.headers["X-Correlation-Id"] = CORRELATION
    return agent


def _register(browser: Browser, server: Live) -> None:
    """A developer registers journey-bot for alice in the console."""
    for dev in open_console(browser, server, DESKTOP):
        dev.sign_in("dana")
        dev.page.get_by_role("navigation").get_by_role("link", name="Agents", exact=True).click()
        dev.page.get_by_role("link", name="Register an agent").click()
        dev.page.get_by_label("Name", exact=True).fill("journey-bot")
        dev.page.get_by_label("Description").fill("pays alice's bills")
        dev.page.get_by_label("Owners").fill("dana, alice")
        dev.shot("journey-register")
        dev.page.get_by_role("button", name="Register").click()
        dev.page.wait_for_url(re.compile(r".*/console/agents/journey-bot$"))
        expect(dev.page.get_by_role("heading", name="journey-bot")).to_be_visible()


def _approve_on_phone(browser: Browser, server: Live) -> None:
    """alice approves the transfer from her phone."""
    for alice in open_console(browser, server, PHONE):
        alice.sign_in("alice")
        alice.open("/console/me/approvals")
        request = alice.page.get_by_role("article", name=re.compile("journey-bot asks you"))
        expect(request).to_contain_text("PAY-100")
        alice.shot("journey-approve-phone")
        request.get_by_role("button", name="Approve", exact=True).click()
        alice.page.wait_for_url(re.compile(r".*\?done=approved$"))


def _trace_and_quarantine(browser: Browser, server: Live) -> None:
    """The security admin reads the call's trace, downloads its proof, quarantines the agent."""
    for sec in open_console(browser, server, DESKTOP):
        sec.sign_in("sven")
        sec.open(f"/console/audit?correlation_id={CORRELATION}")
        trace = sec.page.locator("ol.trace")
        expect(trace).to_contain_text("journey-bot")
        expect(trace).to_contain_text("journey-bot-transfers-with-approval")
        expect(trace).to_contain_text("alice")  # the approver
        sec.shot("journey-trace")
        with sec.page.expect_download() as download:
            sec.page.get_by_role("link", name="Download proof bundle").click()
        assert download.value.suggested_filename.startswith("tether-proof-")
        sec.open("/console/agents/journey-bot")
        sec.page.get_by_role("button", name="Quarantine").click()
        sec.page.wait_for_url(re.compile(r".*/console/agents/journey-bot$"))
        expect(sec.page.locator("main")).to_contain_text("quarantined")
        sec.shot("journey-quarantined")


def test_sign_in_register_approve_trace_and_quarantine_through_the_console(
    browser: Browser, server: Live
) -> None:
    add_person(server, "dana", "developer")
    add_person(server, "alice")
    add_person(server, "sven", "security-admin")
    _register(browser, server)
    bot = _agent_with_key(server, "journey-bot")
    try:
        svid = bot.svid()
        first = bot.decide(svid, 100)
        assert first["context"]["effect"] == "approval_required"
        auth_req_id = bot.ask("alice", first["context"]["call_digest"], 100, ping=False)
        _approve_on_phone(browser, server)
        token, _ = bot.approval(auth_req_id, ping=False)
        assert bot.decide(svid, 100, token)["decision"] is True, "the approved call goes through"
        _trace_and_quarantine(browser, server)
        with server.ops() as ops:
            agent = ops.get("/v1/agents/journey-bot").json()
        assert agent["state"] == "quarantined"
        renewed = bot.http.post(
            "/oauth2/token", data={"grant_type": "client_credentials", **bot.auth()}
        )
        assert renewed.status_code in (400, 401), "a quarantined agent gets no new token"
    finally:
        bot.http.close()

"""The console's decisions page in Debian's Chromium: the latest decisions from the audit log,
then new ones as they are made (server-sent events), filtered; only for ``audit.read``."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

import httpx
from playwright.sync_api import expect

from tests.integration.live.conftest import TD, Live
from tests.support.tokens import client_credentials
from tether.crypto.assertion import AgentKeyPair, generate_agent_key, sign_client_assertion

from .conftest import Console, add_person

#: Agents may read the orders API; nothing else is permitted (so anything else is denied).
POLICY = """
@id("console-agents-read-orders")
permit (principal, action == Tether::Action::"read", resource == Tether::Api::"orders");
"""
#: What the feed may send of a decision: the table's columns, nothing more.
SHOWN = {"time", "agent", "user", "action", "resource", "effect", "decision_id", "trace"}
MARKUP = "<script>alert(1)</script>"


@dataclass
class Bot:
    """An agent with a key, deciding through ``POST /access/v1/evaluation`` as itself."""

    server: Live
    name: str
    key: AgentKeyPair

    @classmethod
    def register(cls, server: Live, name: str) -> Bot:
        key = generate_agent_key()
        with server.ops() as ops:
            agent = {"name": name, "owners": ["sam"], "declarations": {"resources": ["orders"]}}
            assert ops.post("/v1/agents", json=agent).status_code == 201
            added = ops.post(f"/v1/agents/{name}/keys", json={"jwk": key.public_jwk})
            assert added.status_code == 201, added.text
            active = ops.get("/v1/policies/active")
            if active.status_code != 200 or active.json().get("text") != POLICY:
                applied = ops.post("/v1/policies", json={"text": POLICY})
                assert applied.status_code == 201, applied.text
        return cls(server=server, name=name, key=key)

    @property
    def spiffe_id(self) -> str:
        return f"spiffe://{TD}/agent/{self.name}"

    def assertion(self) -> str:
        """A ``private_key_jwt`` client assertion for the token endpoint."""
        audience = f"{self.server.addr}/oauth2/token"
        return sign_client_assertion(
            self.key.private_pem, client_id=self.spiffe_id, audience=audience, now=int(time.time())
        )

    def svid(self) -> str:
        form = client_credentials(
            self.key.private_pem,
            client_id=self.spiffe_id,
            audience=f"{self.server.addr}/oauth2/token",
            now=int(time.time()),
        )
        issued = httpx.post(f"{self.server.addr}/oauth2/token", data=form)
        assert issued.status_code == 200, issued.text
        token: str = issued.json()["access_token"]
        return token

    def decide(
        self, resource: str, *, token: str | None = None, correlation_id: str | None = None
    ) -> str:
        """Read ``resource`` (an API): allowed for ``orders`` only. Its decision id."""
        headers = {"Authorization": f"Bearer {token or self.svid()}"}
        if correlation_id:
            headers["X-Correlation-Id"] = correlation_id
        api = {"name": resource, "data_class": "internal"}
        body = {"action": {"name": "read"},
                "resource": {"type": "Api", "id": resource, "properties": api}}  # fmt: skip
        answer = httpx.post(f"{self.server.addr}/access/v1/evaluation", json=body, headers=headers)
        assert answer.status_code == 200, answer.text
        decision_id: str = answer.json()["context"]["id"]
        return decision_id


def session_cookies(console: Console) -> dict[str, str]:
    return {c["name"]: c["value"] for c in console.page.context.cookies()}


def _live(console: Console) -> None:
    """Until the page's feed is connected (so a decision made now reaches it)."""
    expect(console.page.locator("#feed-status")).to_have_text(re.compile(r"Live feed: on"))


def test_a_decision_made_through_the_api_is_listed_with_a_link_to_its_trace(
    console: Console, server: Live
) -> None:
    add_person(server, "dora", "auditor")
    bot = Bot.register(server, "list-bot")
    decision = bot.decide("orders")
    denied = bot.decide("payroll")
    console.sign_in("dora")
    page = console.open("/console/decisions")
    row = page.get_by_role("row").filter(has_text=decision)
    expect(row).to_contain_text("list-bot")
    expect(row).to_contain_text('Api::"orders"')
    expect(row.locator(".badge")).to_have_text("allow")
    trace = row.get_by_role("link", name=f"Trace of {decision}")
    expect(trace).to_have_attribute("href", re.compile(r"^/console/audit\?correlation_id="))
    expect(page.get_by_role("row").filter(has_text=denied).locator(".badge")).to_have_text("deny")
    _live(console)
    console.shot("decisions")


def test_the_live_feed_shows_a_new_decision_without_a_reload(
    console: Console, server: Live
) -> None:
    add_person(server, "emil", "security-admin")
    bot = Bot.register(server, "feed-bot")
    console.sign_in("emil")
    page = console.open("/console/decisions")
    _live(console)
    page.evaluate("window.sameDocument = true")
    decision = bot.decide("orders")
    row = page.get_by_role("row").filter(has_text=decision)
    expect(row).to_be_visible(timeout=10_000)
    expect(row).to_contain_text("feed-bot")
    expect(row.locator(".badge")).to_have_text("allow")
    expect(row.get_by_role("link", name=f"Trace of {decision}")).to_have_attribute(
        "href", re.compile(r"^/console/audit\?correlation_id=")
    )
    assert page.evaluate("window.sameDocument") is True, "the page was not reloaded"
    first = page.locator("#decisions tbody tr").first
    expect(first).to_contain_text(decision)  # the newest on top


def test_the_effect_filter_keeps_other_effects_out_of_the_table_and_the_feed(
    console: Console, server: Live
) -> None:
    add_person(server, "fay", "auditor")
    bot = Bot.register(server, "filter-bot")
    earlier_allow = bot.decide("orders")
    console.sign_in("fay")
    page = console.open("/console/decisions")
    page.get_by_label("Effect").select_option("deny")
    page.get_by_label("Agent").fill("filter-bot")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*/console/decisions\?agent=filter-bot&user=&effect=deny$"))
    expect(page.get_by_text(earlier_allow)).to_have_count(0)
    _live(console)
    token = bot.svid()
    allowed = bot.decide("orders", token=token)
    denied = bot.decide("payroll", token=token)
    row = page.get_by_role("row").filter(has_text=denied)
    expect(row).to_be_visible(timeout=10_000)
    expect(row.locator(".badge")).to_have_text("deny")
    expect(page.get_by_text(allowed)).to_have_count(0)  # published before the deny: left out
    for badge in page.locator("#decisions tbody .badge").all_inner_texts():
        assert badge == "deny"


def test_a_resource_named_like_markup_shows_as_text_in_the_feed_and_the_table(
    console: Console, server: Live
) -> None:
    add_person(server, "gil", "auditor")
    bot = Bot.register(server, "markup-bot")
    console.sign_in("gil")
    page = console.open("/console/decisions?agent=markup-bot")
    _live(console)
    decision = bot.decide(MARKUP)
    row = page.get_by_role("row").filter(has_text=decision)
    expect(row).to_contain_text(f'Api::"{MARKUP}"', timeout=10_000)
    assert page.locator("#decisions script").count() == 0
    page.reload()
    expect(page.get_by_role("row").filter(has_text=decision)).to_contain_text(MARKUP)
    assert page.locator("#decisions script").count() == 0


def test_the_feed_sends_only_the_shown_fields_of_a_decision(console: Console, server: Live) -> None:
    add_person(server, "hana", "auditor")
    bot = Bot.register(server, "fields-bot")
    console.sign_in("hana")
    token = bot.svid()
    with (
        httpx.Client(base_url=server.addr, cookies=session_cookies(console), timeout=20) as http,
        http.stream("GET", "/console/decisions/stream", params={"agent": "fields-bot"}) as feed,
    ):
        assert feed.status_code == 200
        assert feed.headers["content-type"].startswith("text/event-stream")
        decision = bot.decide("orders", token=token)
        data = next(line for line in feed.iter_lines() if line.startswith("data:"))
    sent = json.loads(data.removeprefix("data:"))
    assert set(sent) == SHOWN
    assert sent["decision_id"] == decision
    assert sent["agent"] == "fields-bot"
    assert token not in data
    assert "presented" not in data


def test_an_end_user_or_a_developer_is_refused_the_decisions_and_their_feed(
    console: Console, server: Live
) -> None:
    add_person(server, "ivo")
    add_person(server, "jun", "developer")
    for person in ("ivo", "jun"):
        console.page.context.clear_cookies()
        console.sign_in(person)
        expect(console.page.get_by_role("link", name="Decisions")).to_have_count(0)
        with httpx.Client(base_url=server.addr, cookies=session_cookies(console)) as http:
            for path in ("/console/decisions", "/console/decisions/stream?effect=deny"):
                answer = http.get(path)
                assert answer.status_code == 403, (person, path, answer.text)
                assert "audit.read" in answer.text
                assert answer.headers["content-type"].startswith("text/html")

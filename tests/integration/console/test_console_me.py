"""My access in the console: a person's own grants and their approvals inbox (CIBA), in
Debian's Chromium against a real ``tether serve``. The agent asks through
``/oauth2/bc-authorize`` and redeems at ``/oauth2/token`` by raw HTTP with its own key
(:class:`tests.support.ciba_agent.Agent`); the person answers in the browser."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from playwright.sync_api import Locator, expect

from tests.integration.live.conftest import Live
from tests.support.calls import FEE, FEE_CALL, TRANSFER, TRANSFER_CALL, item
from tests.support.ciba_agent import CIBA, Agent
from tests.support.ciba_user import sign_in
from tether.crypto.assertion import generate_agent_key
from tether.crypto.jwt import UnverifiedToken

from .conftest import PASSWORD, Console, add_person

XSS = "<script>alert(1)</script>"


AgentMaker = Callable[..., Agent]


@pytest.fixture
def make_agent(server: Live) -> Iterator[AgentMaker]:
    """Agents owned by the people named (so they may ask them), each with a key it
    authenticates with; their HTTP clients closed afterwards."""
    made: list[Agent] = []

    def make(name: str, *owners: str) -> Agent:
        key = generate_agent_key()
        with server.ops() as ops:
            created = ops.post("/v1/agents", json={"name": name, "owners": list(owners)})
            assert created.status_code == 201, created.text
            added = ops.post(f"/v1/agents/{name}/keys", json={"jwk": key.public_jwk})
            assert added.status_code == 201, added.text
        private = serialization.load_pem_private_key(key.private_pem, password=None)
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        made.append(Agent(server.addr, str(created.json()["spiffe_id"]), private))
        return made[-1]

    try:
        yield make
    finally:
        for agent in made:
            agent.http.close()


def _ask(agent: Agent, user: str, *items: dict[str, Any], message: str = "PAY-100") -> str:
    """A backchannel authentication request to ``user``: its ``auth_req_id``."""
    form = {"login_hint": user, "scope": "openid", "binding_message": message,
            "authorization_details": json.dumps(list(items)), **agent.auth()}  # fmt: skip
    asked = agent.http.post("/oauth2/bc-authorize", data=form)
    assert asked.status_code == 200, asked.text
    return str(asked.json()["auth_req_id"])


def _redeem(agent: Agent, auth_req_id: str) -> httpx.Response:
    return agent.http.post(
        "/oauth2/token", data={"grant_type": CIBA, "auth_req_id": auth_req_id, **agent.auth()}
    )


def _approvals(server: Live, user: str) -> list[dict[str, Any]]:
    with server.ops() as ops:
        found = ops.get("/v1/approvals", params={"user": user})
        assert found.status_code == 200, found.text
        approvals: list[dict[str, Any]] = found.json()["approvals"]
        return approvals


def _request(console: Console, agent: str) -> Locator:
    """The pending request of ``agent`` on the inbox."""
    return console.page.get_by_role("article", name=re.compile(f"{agent} asks you"))


def _cookies(console: Console) -> dict[str, str]:
    return {c["name"]: c["value"] for c in console.page.context.cookies()}


def test_a_person_approves_a_request_in_the_inbox_and_the_agent_redeems_it(
    console: Console, server: Live, make_agent: AgentMaker
) -> None:
    add_person(server, "amara")
    bot = make_agent("amara-bot", "amara")
    auth_req_id = _ask(bot, "amara", item(TRANSFER_CALL, amount="100.00", creditor="bob"))
    console.sign_in("amara")
    console.open("/console/me/approvals")
    request = _request(console, "amara-bot")
    expect(request).to_contain_text("PAY-100")
    expect(request).to_contain_text("creditor")
    expect(request).to_contain_text('Tool "transfer"')
    request.get_by_role("button", name="Approve", exact=True).click()
    console.page.wait_for_url(re.compile(r".*/console/me/approvals\?done=approved$"))
    expect(console.page.get_by_role("status")).to_contain_text("approval was recorded")
    expect(console.page.locator("table").get_by_text("approved", exact=True)).to_be_visible()
    console.shot("approvals-answered")
    redeemed = _redeem(bot, auth_req_id)
    assert redeemed.status_code == 200, redeemed.text
    claims = UnverifiedToken.parse(redeemed.json()["access_token"]).claims
    assert claims["approver"] == "amara"
    assert [d["call_digest"] for d in claims["authorization_details"]] == [TRANSFER]


def test_approving_one_item_of_two_gives_a_token_carrying_only_that_item(
    console: Console, server: Live, make_agent: AgentMaker
) -> None:
    add_person(server, "bilal")
    bot = make_agent("bilal-bot", "bilal")
    transfer = item(TRANSFER_CALL, amount="100.00", creditor="bob")
    auth_req_id = _ask(bot, "bilal", transfer, item(FEE_CALL, amount="2.00"), message="PAY-102")
    console.sign_in("bilal")
    console.open("/console/me/approvals")
    request = _request(console, "bilal-bot")
    expect(request.get_by_role("checkbox")).to_have_count(2)
    console.shot("approvals")
    request.get_by_label("Approve operation 2").check()
    request.get_by_role("button", name="Approve selected").click()
    console.page.wait_for_url(re.compile(r".*\?done=approved$"))
    redeemed = _redeem(bot, auth_req_id)
    assert redeemed.status_code == 200, redeemed.text
    items = UnverifiedToken.parse(redeemed.json()["access_token"]).claims["authorization_details"]
    assert [d["call_digest"] for d in items] == [FEE], "the fee only, not the transfer"


def test_a_refusal_in_the_inbox_gives_the_agent_access_denied(
    console: Console, server: Live, make_agent: AgentMaker
) -> None:
    add_person(server, "chidi")
    bot = make_agent("chidi-bot", "chidi")
    auth_req_id = _ask(bot, "chidi", item(TRANSFER_CALL, amount="100.00"))
    console.sign_in("chidi")
    console.open("/console/me/approvals")
    _request(console, "chidi-bot").get_by_role("button", name="Refuse").click()
    console.page.wait_for_url(re.compile(r".*\?done=refused$"))
    refused = _redeem(bot, auth_req_id)
    assert refused.status_code == 400
    assert refused.json()["error"] == "access_denied"
    [answered] = _approvals(server, "chidi")
    assert answered["state"] == "denied"
    assert answered["decided_by"] == "chidi"


def test_approve_selected_with_nothing_ticked_is_refused_and_not_taken_for_a_refusal(
    console: Console, server: Live, make_agent: AgentMaker
) -> None:
    add_person(server, "dara")
    bot = make_agent("dara-bot", "dara")
    _ask(bot, "dara", item(TRANSFER_CALL, amount="1.00"), item(FEE_CALL, amount="2.00"))
    console.sign_in("dara")
    console.open("/console/me/approvals")
    csrf = console.page.locator("input[name=csrf]").first.get_attribute("value")
    [pending] = _approvals(server, "dara")
    with httpx.Client(base_url=server.addr, cookies=_cookies(console)) as browser:
        sent = browser.post(
            f"/console/me/approvals/{pending['id']}/answer",
            data={"csrf": csrf, "answer": "selected"},
        )
    assert sent.status_code == 400
    assert "tick the items to approve" in sent.text
    [still] = _approvals(server, "dara")
    assert still["state"] == "pending"


def test_a_person_revokes_a_grant_from_the_page_and_the_grant_is_revoked(
    console: Console, server: Live, make_agent: AgentMaker
) -> None:
    add_person(server, "esme")
    make_agent("esme-bot", "sam")
    with httpx.Client(base_url=server.addr, timeout=10) as http:
        esme = {"Authorization": f"Bearer {sign_in(http, 'esme', PASSWORD)}"}
        grant = {"agent": "esme-bot", "scopes": ["calendar:read", "mail:send"],
                 "purpose": "Book my travel", "purpose_code": "travel.booking"}  # fmt: skip
        created = http.post("/v1/grants", json=grant, headers=esme)
        assert created.status_code == 201, created.text
    grant_id = created.json()["id"]
    console.sign_in("esme")
    console.open("/console/me")
    row = console.page.get_by_role("row", name=re.compile("esme-bot"))
    expect(row).to_contain_text("Book my travel")
    expect(row).to_contain_text("travel.booking")
    expect(row).to_contain_text("mail:send")
    console.shot("me")
    row.get_by_role("button", name=re.compile("^Revoke")).click()
    console.page.wait_for_url(re.compile(r".*/console/me\?done=revoked$"))
    expect(row).to_contain_text("revoked")
    expect(row.get_by_role("button")).to_have_count(0)
    with server.ops() as ops:
        shown = ops.get(f"/v1/grants/{grant_id}").json()
    assert shown["state"] == "revoked"
    assert shown["revoked_by"] == "user:esme"


def test_a_person_never_sees_nor_answers_another_persons_requests(
    console: Console, server: Live, make_agent: AgentMaker
) -> None:
    add_person(server, "farah")
    add_person(server, "gus")
    bot = make_agent("farah-bot", "farah", "gus")
    _ask(bot, "farah", item(TRANSFER_CALL, amount="9.00"), message="FARAH-ONLY")
    [farahs] = _approvals(server, "farah")
    console.sign_in("gus")
    console.open("/console/me/approvals")
    expect(console.page.get_by_text("No request is waiting for your answer")).to_be_visible()
    assert "FARAH-ONLY" not in console.page.content()
    csrf = console.page.locator("input[name=csrf]").first.get_attribute("value")
    with httpx.Client(base_url=server.addr, cookies=_cookies(console)) as browser:
        sent = browser.post(
            f"/console/me/approvals/{farahs['id']}/answer", data={"csrf": csrf, "answer": "all"}
        )
    assert sent.status_code == 404
    assert "approval_not_found" in sent.text
    [still] = _approvals(server, "farah")
    assert still["state"] == "pending"


def test_the_inbox_at_phone_width_stacks_without_scrolling_the_page(
    phone: Console, server: Live, make_agent: AgentMaker
) -> None:
    add_person(server, "hana")
    bot = make_agent("hana-bot", "hana")
    long_note = "a-reference-without-any-space-" * 4
    _ask(bot, "hana", item(TRANSFER_CALL, amount="100.00", creditor="bob", note=long_note),
         item(FEE_CALL, amount="2.00"), message="PAY-102")  # fmt: skip
    phone.sign_in("hana")
    phone.open("/console/me/approvals")
    request = _request(phone, "hana-bot")
    expect(request).to_be_visible()
    phone.shot("approvals-phone")
    width = phone.page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways ({width} px)"
    for button in request.get_by_role("button").all():
        box = button.bounding_box()
        assert box is not None
        assert box["height"] >= 24, "a target a thumb can hit (WCAG 2.2, 2.5.8)"
        assert box["x"] >= 0
        assert box["x"] + box["width"] <= 390
    request.get_by_role("button", name="Approve all").click()
    phone.page.wait_for_url(re.compile(r".*\?done=approved$"))
    [answered] = _approvals(server, "hana")
    assert answered["approved"] == [0, 1]


def test_a_new_request_appears_without_a_reload_and_keeps_what_was_ticked(
    console: Console, server: Live, make_agent: AgentMaker
) -> None:
    add_person(server, "ines")
    bot = make_agent("ines-bot", "ines")
    _ask(bot, "ines", item(TRANSFER_CALL, amount="1.00"), item(FEE_CALL, amount="2.00"))
    console.sign_in("ines")
    console.open("/console/me/approvals")
    first = _request(console, "ines-bot")
    first.get_by_label("Approve operation 2").check()
    _ask(bot, "ines", item(TRANSFER_CALL, amount="3.00"), message="PAY-3")
    later = console.page.get_by_role("article").filter(has_text="PAY-3")
    expect(later).to_be_visible(timeout=12_000)
    expect(console.page.get_by_role("heading", name="Waiting for you (2)")).to_be_visible()
    expect(first.get_by_label("Approve operation 2")).to_be_checked()
    expect(first.get_by_label("Approve operation 1")).not_to_be_checked()


def test_what_an_agent_writes_in_a_request_or_a_grant_renders_as_text(
    console: Console, server: Live, make_agent: AgentMaker
) -> None:
    add_person(server, "jon")
    bot = make_agent("jon-bot", "jon")
    _ask(bot, "jon", item(TRANSFER_CALL, amount=XSS, creditor=XSS), message=XSS)
    with httpx.Client(base_url=server.addr, timeout=10) as http:
        jon = {"Authorization": f"Bearer {sign_in(http, 'jon', PASSWORD)}"}
        grant = {"agent": "jon-bot", "scopes": ["mail:send"], "purpose": XSS,
                 "purpose_code": "mail.send"}  # fmt: skip
        assert http.post("/v1/grants", json=grant, headers=jon).status_code == 201
    console.sign_in("jon")
    for path in ("/console/me/approvals", "/console/me"):
        console.open(path)
        expect(console.page.get_by_text(XSS).first).to_be_visible()
        assert console.page.locator("main script").count() == 0

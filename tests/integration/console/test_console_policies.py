"""The policies page in Debian's Chromium: a proposed set validated (problems placed on their
line), compared with the active one, replayed against recorded decisions and applied — and
refused to anyone without ``policy.apply``, whatever the form says."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
from playwright.sync_api import expect

from tests.integration.live.conftest import Live
from tests.support.tokens import client_credentials
from tether.crypto.assertion import generate_agent_key

from .conftest import Console, add_person


def permit(agent: str, tool: str) -> str:
    return f"""
@id("{agent}-calls-{tool}")
permit (
  principal == Tether::Agent::"{agent}",
  action == Tether::Action::"call_tool",
  resource == Tether::Tool::"{tool}"
);
"""


def agent_svid(server: Live, name: str) -> str:
    """A registered agent ``name`` with a key of its own, and its JWT-SVID (instance pod-1)."""
    key = generate_agent_key()
    with server.ops() as ops:
        created = ops.post("/v1/agents", json={"name": name, "owners": ["sam"]})
        assert created.status_code == 201, created.text
        added = ops.post(f"/v1/agents/{name}/keys", json={"jwk": key.public_jwk})
        assert added.status_code == 201, added.text
    form = client_credentials(
        key.private_pem,
        client_id=created.json()["spiffe_id"],
        audience=f"{server.addr}/oauth2/token",
        now=int(time.time()),
    )
    issued = httpx.post(f"{server.addr}/oauth2/token", data=form)
    assert issued.status_code == 200, issued.text
    token: str = issued.json()["access_token"]
    return token


def decide(server: Live, token: str, tool: str) -> str:
    """The effect Tether answers the agent asking to call ``tool``."""
    body = {
        "action": {"name": "call_tool"},
        "resource": {"type": "Tool", "id": tool,
                     "properties": {"name": tool, "data_class": "public",
                                    "state_changing": False}},
    }  # fmt: skip
    answer = httpx.post(
        f"{server.addr}/access/v1/evaluation",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 200, answer.text
    return "allow" if answer.json()["decision"] else "deny"


def apply(server: Live, text: str, comment: str | None = None) -> dict[str, Any]:
    with server.ops() as ops:
        applied = ops.post("/v1/policies", json={"text": text, "comment": comment})
        assert applied.status_code == 201, applied.text
        body: dict[str, Any] = applied.json()
        return body


def active_version(server: Live) -> int:
    with server.ops() as ops:
        version: int = ops.get("/v1/policies").json()["active"]
        return version


def session_of(console: Console) -> tuple[dict[str, str], str]:
    """The browser's console cookies and the CSRF token its pages carry."""
    cookies = {c["name"]: c["value"] for c in console.page.context.cookies()}
    token = console.page.locator("input[name=csrf]").first.get_attribute("value")
    assert token
    return cookies, token


def propose(console: Console, text: str, button: str) -> None:
    console.page.get_by_label("Cedar policies").fill(text)
    console.page.get_by_role("button", name=button, exact=True).click()


def test_an_invalid_policy_set_is_shown_with_the_line_of_each_problem(
    console: Console, server: Live
) -> None:
    add_person(server, "vera", "security-admin")
    console.sign_in("vera")
    console.open("/console/policies")
    broken = (
        permit("faq-bot", "search_faq")
        + '\n@id("bad")\npermit (principal, action,\n  resource) whn { true };\n'
    )
    propose(console, broken, "Validate")
    result = console.page.locator("#result")
    expect(result).to_contain_text("line 9, column 1")
    expect(result).to_contain_text("parse error")
    unknown = (
        '// a comment; with a semicolon\n@id("x")\npermit (principal, action, resource)\n'
        "  when { principal.nosuch == 1 };"
    )
    propose(console, unknown, "Validate")
    expect(result).to_contain_text("line 2, column 1")
    expect(result).to_contain_text("nosuch")
    propose(console, permit("faq-bot", "search_faq"), "Validate")
    expect(result.locator(".badge.allow")).to_have_text("valid")
    expect(result.locator(".error")).to_have_count(0)


def test_a_security_admin_diffs_replays_and_applies_a_policy_set(
    console: Console, server: Live
) -> None:
    token = agent_svid(server, "replay-bot")
    old = permit("replay-bot", "search_faq") + permit("replay-bot", "read_docs")
    before = apply(server, old, comment="<script>alert(1)</script>")["version"]
    assert [decide(server, token, t) for t in ("search_faq", "read_docs", "read_docs")] == [
        "allow", "allow", "allow",
    ]  # fmt: skip
    add_person(server, "wren", "security-admin")
    console.sign_in("wren")
    page = console.open("/console/policies")
    expect(page.get_by_text("<script>alert(1)</script>").first).to_be_visible()
    expect(page.locator("pre").first).to_contain_text("replay-bot-calls-read_docs")
    # search_faq now needs a purpose, read_docs is gone, summarise is new
    narrowed = permit("replay-bot", "search_faq").replace(");", ") when { context has purpose };")
    proposed = narrowed + permit("replay-bot", "summarise")
    propose(console, proposed, "Diff")
    result = page.locator("#result")
    expect(result).to_contain_text("Changes from v")
    expect(result.locator("dd").nth(0)).to_have_text("replay-bot-calls-summarise")
    expect(result.locator("dd").nth(1)).to_have_text("replay-bot-calls-read_docs")
    expect(result.locator("dd").nth(2)).to_have_text("replay-bot-calls-search_faq")
    expect(result.locator("pre")).to_contain_text('-@id("replay-bot-calls-read_docs")')
    page.get_by_label("Replay the decisions of the last").select_option(label="hour")
    propose(console, proposed, "Replay")
    expect(result).to_contain_text("would change effect")
    flips = result.locator("tbody tr")
    expect(flips.filter(has_text="read_docs")).to_have_count(2)
    expect(flips.first.locator(".badge.deny")).to_have_text("deny")
    console.shot("policy-replay")
    page.get_by_label("Why (kept with the version").fill("summaries, not docs")
    page.get_by_role("button", name="Apply", exact=True).click()
    page.wait_for_url(re.compile(r".*/console/policies\?applied=\d+$"))
    after = active_version(server)
    assert after == before + 1
    expect(
        page.get_by_role("status").filter(has_text=f"Version {after} is in force")
    ).to_be_visible()
    with server.ops() as ops:
        active = ops.get("/v1/policies/active").json()
    assert active["text"] == proposed.replace("\r\n", "\n")
    assert "wren" in active["created_by"]
    assert active["comment"] == "summaries, not docs"
    assert decide(server, token, "read_docs") == "deny"
    console.shot("policies")


def test_a_developer_sees_no_apply_button_and_a_forged_apply_is_refused(
    console: Console, server: Live
) -> None:
    add_person(server, "xavi", "developer")
    console.sign_in("xavi")
    page = console.open("/console/policies")
    expect(page.get_by_role("button", name="Validate", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Apply", exact=True)).to_have_count(0)
    expect(page.get_by_role("button", name="Replay", exact=True)).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile("back in force"))).to_have_count(0)
    cookies, csrf = session_of(console)
    before = active_version(server)
    with httpx.Client(base_url=server.addr, cookies=cookies) as forged:
        answer = forged.post(
            "/console/policies/apply",
            data={"csrf": csrf, "text": permit("xavi-bot", "anything")},
        )
        assert answer.status_code == 403
        assert "forbidden" in answer.text
        back = forged.post(f"/console/policies/{before}/activate", data={"csrf": csrf})
        assert back.status_code == 403
    assert active_version(server) == before


def test_an_auditor_compares_versions_and_may_replay_but_not_apply(
    console: Console, server: Live
) -> None:
    first = apply(server, permit("yara-bot", "one"))["version"]
    apply(server, permit("yara-bot", "two"))
    add_person(server, "yara", "auditor")
    console.sign_in("yara")
    page = console.open("/console/policies")
    page.locator("tr", has_text=f"v{first}").get_by_role("link", name="Compare").click()
    compared = page.locator("#compared + pre")
    expect(compared).to_contain_text('-@id("yara-bot-calls-one")')
    expect(compared).to_contain_text('+@id("yara-bot-calls-two")')
    expect(page.get_by_role("button", name="Replay", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Apply", exact=True)).to_have_count(0)
    cookies, csrf = session_of(console)
    with httpx.Client(base_url=server.addr, cookies=cookies) as forged:
        answer = forged.post(
            "/console/policies/apply", data={"csrf": csrf, "text": permit("yara-bot", "x")}
        )
        assert answer.status_code == 403


def test_an_invalid_set_is_not_applied_and_comes_back_with_its_problems(
    console: Console, server: Live
) -> None:
    add_person(server, "zeno", "security-admin")
    console.sign_in("zeno")
    console.open("/console/policies")
    cookies, csrf = session_of(console)
    before = active_version(server)
    text = '@id("zeno")\npermit (principal, action, resource) when { nonsense };'
    with httpx.Client(base_url=server.addr, cookies=cookies) as client:
        answer = client.post(
            "/console/policies/apply", data={"csrf": csrf, "text": text, "comment": "why not"}
        )
    assert answer.status_code == 400
    assert 'value="why not"' in answer.text
    assert "Not applied" in answer.text
    assert "line 1, column 1" in answer.text
    assert "when { nonsense }" in answer.text, "the text typed is kept"
    assert active_version(server) == before


def test_validate_works_as_a_plain_form_and_without_its_token_is_refused(
    console: Console, server: Live
) -> None:
    add_person(server, "abel", "security-admin")
    console.sign_in("abel")
    console.open("/console/policies")
    cookies, csrf = session_of(console)
    with httpx.Client(base_url=server.addr, cookies=cookies) as client:
        text = permit("abel-bot", "search_faq")
        plain = client.post("/console/policies/validate", data={"csrf": csrf, "text": text})
        assert plain.status_code == 200
        assert "<h1>Policies</h1>" in plain.text, "the whole page, with the result"
        assert "badge allow" in plain.text
        fragment = client.post(
            "/console/policies/diff",
            data={"text": text},
            headers={"HX-Request": "true", "X-CSRF-Token": csrf},
        )
        assert fragment.status_code == 200
        assert "<h1>" not in fragment.text
        assert "abel-bot-calls-search_faq" in fragment.text
        stale = client.post("/console/policies/validate", data={"csrf": "x", "text": text})
        assert stale.status_code == 403
        assert "csrf_refused" in stale.text


def test_a_security_admin_puts_an_earlier_version_back_in_force(
    console: Console, server: Live
) -> None:
    earlier = apply(server, permit("carl-bot", "earlier"))["version"]
    apply(server, permit("carl-bot", "later"))
    add_person(server, "carl", "security-admin")
    console.sign_in("carl")
    page = console.open("/console/policies")
    page.get_by_role("button", name=f"Put v{earlier} back in force").click()
    page.wait_for_url(re.compile(rf".*/console/policies\?applied={earlier}$"))
    assert active_version(server) == earlier
    expect(page.locator("tr", has_text=f"v{earlier}").locator(".badge")).to_have_text("active")


def test_the_policies_page_fits_a_phone_screen(phone: Console, server: Live) -> None:
    add_person(server, "dina", "security-admin")
    phone.sign_in("dina")
    page = phone.open("/console/policies")
    propose(phone, permit("dina-bot", "search_faq"), "Diff")
    expect(page.locator("#result")).to_contain_text("dina-bot-calls-search_faq")
    wide = page.evaluate("document.documentElement.scrollWidth")
    assert wide <= 390, "only tables and text blocks scroll sideways, never the page"
    phone.shot("policies-phone")

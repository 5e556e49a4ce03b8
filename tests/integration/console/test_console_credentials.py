"""The credentials page in Debian's Chromium: engines without their secrets, the leases in
force, and revoking one lease or every lease of an agent — by those who may, only.

The engine is a secrets vault (no PostgreSQL needed): its values are looked for in every page
the tests open."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.integration.live.conftest import Live

from .conftest import Console, add_person
from .test_console_policies import agent_svid, session_of

CRM_KEY = "crm-key-8d1f0c2b9a7e6d5c"
REFRESH = "gh-refresh-4e3d2c1b0a99"
VAULT: dict[str, Any] = {
    "kind": "vault",
    "roles": [
        {"name": "crm", "resource": "crm", "options": {"secret": "crm-api-key"}},
        {"name": "github", "resource": "github",
         "options": {"secret": "gh-refresh", "handout": "lease"}},
    ],
    "secret": json.dumps({"crm-api-key": CRM_KEY, "gh-refresh": REFRESH}),
}  # fmt: skip
AGENTS = ("crm-bot", "gh-bot", "both-bot", "audit-bot")


def _permits() -> str:
    return "".join(
        f'@id("{agent}-uses-{secret}")\npermit (principal == Tether::Agent::"{agent}", '
        f'action == Tether::Action::"use_credential", resource == Tether::Secret::"{secret}");\n'
        for agent in AGENTS
        for secret in ("crm", "github")
    )


@pytest.fixture(scope="module")
def tokens(server: Live) -> dict[str, str]:
    """vault-main configured, policies letting each agent use its secrets, their JWT-SVIDs."""
    with server.ops() as ops:
        configured = ops.put("/v1/engines/vault-main", json=VAULT)
        assert configured.status_code == 200, configured.text
        applied = ops.post("/v1/policies", json={"text": _permits()})
        assert applied.status_code == 201, applied.text
    return {agent: agent_svid(server, agent) for agent in AGENTS}


def lease(server: Live, token: str, role: str = "crm") -> dict[str, Any]:
    answer = httpx.post(
        f"{server.addr}/v1/leases",
        json={"engine": "vault-main", "role": role, "ttl": 600},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 201, answer.text
    issued: dict[str, Any] = answer.json()
    return issued


def state_of(server: Live, lease_id: str) -> str:
    with server.ops() as ops:
        state: str = ops.get(f"/v1/leases/{lease_id}").json()["state"]
        return state


def test_the_page_lists_engines_and_leases_and_no_secret_value_of_an_engine(
    console: Console, server: Live, tokens: dict[str, str]
) -> None:
    issued = lease(server, tokens["gh-bot"], role="github")
    assert issued["credential"]["secret"] == REFRESH, "handed out once, in the issuing answer"
    add_person(server, "gale", "platform-admin")
    console.sign_in("gale")
    page = console.open("/console/credentials")
    engines = page.locator("table").first
    expect(engines).to_contain_text("vault-main")
    expect(engines).to_contain_text("secrets sealed (values never shown)")
    expect(engines).to_contain_text("crm-api-key")
    row = page.locator("tr", has_text=issued["lease"]["id"])
    expect(row).to_contain_text("gh-bot")
    expect(row).to_contain_text("github")
    expect(row).to_contain_text("pod-1")
    expect(row.locator(".badge")).to_have_text("active")
    console.shot("credentials")
    for html in (page.content(), console.open("/console/credentials?state=all").content()):
        assert CRM_KEY not in html
        assert REFRESH not in html


def test_revoking_a_lease_from_the_page_revokes_it(
    console: Console, server: Live, tokens: dict[str, str]
) -> None:
    issued = lease(server, tokens["crm-bot"])["lease"]
    add_person(server, "hana", "security-admin")
    console.sign_in("hana")
    page = console.open("/console/credentials?agent=crm-bot")
    page.get_by_role("button", name=f"Revoke lease {issued['id']}").click()
    page.wait_for_url(re.compile(r".*/console/credentials\?agent=crm-bot&revoked=1$"))
    expect(page.get_by_role("status").filter(has_text="1 lease revoked")).to_be_visible()
    expect(page.locator("tr", has_text=issued["id"])).to_have_count(0)
    assert state_of(server, issued["id"]) == "revoked"
    with server.ops() as ops:
        records = ops.get("/v1/audit", params={"type_prefix": "lease.revoked"}).json()
    [revoked] = [r for r in records["records"] if r["details"]["lease_id"] == issued["id"]]
    assert "hana" in revoked["actor"]


def test_revoke_all_of_an_agent_ends_its_leases_and_no_other_agents(
    console: Console, server: Live, tokens: dict[str, str]
) -> None:
    mine = [lease(server, tokens["both-bot"])["lease"]["id"] for _ in range(2)]
    other = lease(server, tokens["crm-bot"])["lease"]["id"]
    add_person(server, "ines", "platform-admin")
    console.sign_in("ines")
    page = console.open("/console/credentials")
    page.get_by_label("Agent").fill("both-bot")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*agent=both-bot.*"))
    expect(page.locator("tbody tr", has_text="both-bot")).to_have_count(2)
    page.get_by_role("button", name="Revoke all leases of both-bot").click()
    page.wait_for_url(re.compile(r".*revoked=2$"))
    assert [state_of(server, i) for i in mine] == ["revoked", "revoked"]
    assert state_of(server, other) == "active"


def test_an_auditor_sees_no_revoke_button_and_a_forged_revoke_is_refused(
    console: Console, server: Live, tokens: dict[str, str]
) -> None:
    issued = lease(server, tokens["audit-bot"])["lease"]["id"]
    add_person(server, "jude", "auditor")
    console.sign_in("jude")
    page = console.open("/console/credentials?agent=audit-bot")
    expect(page.locator("tr", has_text=issued)).to_have_count(1)
    expect(page.get_by_role("button", name=re.compile("Revoke"))).to_have_count(0)
    cookies, csrf = session_of(console)
    with httpx.Client(base_url=server.addr, cookies=cookies) as forged:
        one = forged.post(f"/console/credentials/leases/{issued}/revoke", data={"csrf": csrf})
        assert one.status_code == 403
        every = forged.post(
            "/console/credentials/revoke-agent", data={"csrf": csrf, "revoke_agent": "audit-bot"}
        )
        assert every.status_code == 403
        stale = forged.post(f"/console/credentials/leases/{issued}/revoke", data={"csrf": "x"})
        assert stale.status_code == 403
        assert "csrf_refused" in stale.text
    assert state_of(server, issued) == "active"


def test_a_person_without_lease_or_engine_rights_is_refused_and_a_filter_stays_text(
    console: Console, server: Live
) -> None:
    add_person(server, "kit", "developer")
    console.sign_in("kit")
    expect(console.page.get_by_role("link", name="Credentials")).to_have_count(0)
    cookies, _ = session_of(console)
    with httpx.Client(base_url=server.addr, cookies=cookies) as client:
        refused = client.get("/console/credentials")
        assert refused.status_code == 403
    console.page.get_by_role("button", name="Sign out").click()
    console.page.wait_for_url(re.compile(r".*/console/signed-out$"))
    add_person(server, "lale", "auditor")
    console.sign_in("lale")
    cookies, _ = session_of(console)
    with httpx.Client(base_url=server.addr, cookies=cookies) as client:
        shown = client.get("/console/credentials", params={"agent": "<script>alert(1)</script>"})
    assert shown.status_code == 200
    assert "<script>alert(1)</script>" not in shown.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown.text

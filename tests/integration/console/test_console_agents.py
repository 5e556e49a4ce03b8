"""The console's agents pages in Debian's Chromium: developers register their own agents,
security reviews and quarantines them, auditors only look; names and descriptions stay text."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx
from playwright.sync_api import Dialog, Page

from tests.integration.live.conftest import Live
from tests.support.tokens import client_credentials
from tether.crypto.assertion import generate_agent_key

from .conftest import Console, add_person

#: The layout's own script elements (htmx and console.js): a page must have no others.
LAYOUT_SCRIPTS = 2
VAULT: dict[str, Any] = {
    "kind": "vault",
    "roles": [{"name": "crm", "resource": "crm", "default_ttl": 300, "max_ttl": 600,
               "options": {"secret": "crm-api-key", "handout": "lease"}}],
    "secret": json.dumps({"crm-api-key": "crm-key-console-0123456789"}),
}  # fmt: skip


def _register(server: Live, name: str, **body: Any) -> dict[str, Any]:
    with server.ops() as ops:
        created = ops.post("/v1/agents", json={"name": name, "owners": ["ops"], **body})
    assert created.status_code == 201, created.text
    agent: dict[str, Any] = created.json()
    return agent


def _agent(server: Live, name: str) -> dict[str, Any]:
    with server.ops() as ops:
        shown = ops.get(f"/v1/agents/{name}")
    assert shown.status_code == 200, shown.text
    agent: dict[str, Any] = shown.json()
    return agent


def _buttons(page: Page, *names: str) -> int:
    return sum(page.get_by_role("button", name=n, exact=True).count() for n in names)


def _agent_with_a_lease(server: Live, name: str, correlation_id: str) -> tuple[str, str]:
    """``name`` registered with a key, allowed the vault's ``crm`` secret, holding a lease
    taken with its own JWT-SVID: (its token, the lease id)."""
    agent = _register(server, name, declarations={"resources": ["crm"]})
    key = generate_agent_key()
    policy = f"""
@id("{name}-uses-crm")
permit (
  principal == Tether::Agent::"{name}",
  action == Tether::Action::"use_credential",
  resource == Tether::Secret::"crm"
);
"""
    with server.ops() as ops:
        assert ops.put("/v1/engines/vault-main", json=VAULT).status_code == 200
        assert ops.post("/v1/policies", json={"text": policy}).status_code == 201
        added = ops.post(f"/v1/agents/{name}/keys", json={"jwk": key.public_jwk})
        assert added.status_code == 201, added.text
        form = client_credentials(
            key.private_pem,
            client_id=agent["spiffe_id"],
            audience=f"{server.addr}/oauth2/token",
            now=int(time.time()),
        )
        issued = ops.post("/oauth2/token", data=form)
        assert issued.status_code == 200, issued.text
        token = str(issued.json()["access_token"])
        lease = httpx.post(
            f"{server.addr}/v1/leases",
            json={"engine": "vault-main", "role": "crm"},
            headers={"Authorization": f"Bearer {token}", "X-Correlation-Id": correlation_id},
        )
    assert lease.status_code == 201, lease.text
    return token, str(lease.json()["lease"]["id"])


def test_a_developer_registers_an_agent_through_the_form_and_sees_it_listed(
    console: Console, server: Live
) -> None:
    add_person(server, "devi", "developer")
    console.sign_in("devi")
    page = console.open("/console/agents")
    page.get_by_role("link", name="Register an agent").click()
    page.get_by_label("Name").fill("faq-helper")
    page.get_by_label("Description").fill("answers questions from the FAQ")
    assert page.get_by_label("Owners").input_value() == "devi", "the developer is an owner"
    page.get_by_label("Tools").fill("search_faq, read_faq")
    page.get_by_label("internal").check()
    console.shot("agent-register")
    page.get_by_role("button", name="Register").click()
    page.wait_for_url(re.compile(r".*/console/agents/faq-helper$"))
    assert page.get_by_role("heading", name="Agent faq-helper").is_visible()
    assert page.locator(".badge.active").first.is_visible()
    assert page.get_by_text("spiffe://acme.org/agent/faq-helper").is_visible()
    # An owner's rights: suspend and retire, but only security quarantines.
    assert _buttons(page, "Suspend") == 1
    assert page.get_by_text("Retire this agent…").is_visible()
    assert _buttons(page, "Quarantine", "Approve", "Resume") == 0
    agent = _agent(server, "faq-helper")
    assert agent["owners"] == ["devi"]
    assert agent["created_by"] == "operator:devi"
    assert agent["declarations"]["tools"] == ["read_faq", "search_faq"]
    assert agent["declarations"]["data_classes"] == ["public", "internal"]
    console.open("/console/agents")
    assert page.get_by_role("link", name="faq-helper").is_visible()
    console.shot("agents")


def test_a_registration_the_registry_refuses_is_shown_again_with_the_rule(
    console: Console, server: Live
) -> None:
    add_person(server, "dora", "developer")
    console.sign_in("dora")
    page = console.open("/console/agents/-/register")
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    form = {"csrf": csrf, "name": "Bad Name", "owners": "dora", "description": "<b>kept</b>",
            "data_classes": "internal"}  # fmt: skip
    with httpx.Client(base_url=server.addr, cookies=cookies) as plain:
        bad_name = plain.post("/console/agents", data=form)
        for_others = plain.post("/console/agents", data=form | {"name": "not-mine", "owners": "x"})
    assert bad_name.status_code == 400
    assert "lowercase letters, digits and &#39;-&#39;" in bad_name.text
    assert 'value="Bad Name"' in bad_name.text, "what was typed is kept"
    assert "&lt;b&gt;kept&lt;/b&gt;" in bad_name.text
    assert re.search(r'value="internal"\s+checked', bad_name.text)
    assert for_others.status_code == 403, "a developer registers agents they own"
    assert "list yourself in owners" in for_others.text
    with server.ops() as ops:
        assert ops.get("/v1/agents/not-mine").status_code == 404


def test_an_owner_retires_their_agent_only_with_a_reason(console: Console, server: Live) -> None:
    _register(server, "old-bot", owners=["ottilie"])
    add_person(server, "ottilie", "developer")
    console.sign_in("ottilie")
    page = console.open("/console/agents/old-bot")
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    with httpx.Client(base_url=server.addr, cookies=cookies) as plain:
        unexplained = plain.post(
            "/console/agents/old-bot/state", data={"csrf": csrf, "action": "retire", "reason": " "}
        )
    assert unexplained.status_code == 400
    assert _agent(server, "old-bot")["state"] == "active"
    page.get_by_text("Retire this agent…").click()
    page.get_by_label("Why retire it (required)").fill("replaced by faq-helper")
    page.get_by_role("button", name="Retire").click()
    page.wait_for_url(re.compile(r".*/console/agents/old-bot$"))
    assert page.locator(".badge.retired").first.is_visible()
    assert page.get_by_text("Retire this agent…").count() == 0, "retiring is final"
    agent = _agent(server, "old-bot")
    assert (agent["state"], agent["state_reason"]) == ("retired", "replaced by faq-helper")


def test_a_critical_registration_waits_for_review_until_a_security_admin_approves_it(
    console: Console, server: Live
) -> None:
    add_person(server, "dario", "developer")
    add_person(server, "sekou", "security-admin")
    console.sign_in("dario")
    page = console.open("/console/agents/-/register")
    page.get_by_label("Name").fill("wire-bot")
    page.get_by_label("Tools").fill("transfer_funds")
    page.get_by_label("restricted").check()
    page.get_by_label("External connections").select_option("internet")
    page.get_by_label("Autonomy").select_option("autonomous")
    page.get_by_label("May call other agents").check()
    page.get_by_role("button", name="Register").click()
    page.wait_for_url(re.compile(r".*/console/agents/wire-bot$"))
    assert page.get_by_text("waits for security review").first.is_visible()
    assert page.locator(".badge.critical").first.is_visible()
    assert _buttons(page, "Approve") == 0, "a developer does not approve their own agent"
    page.get_by_role("button", name="Sign out").click()
    console.sign_in("sekou")
    page = console.open("/console/agents?state=pending_review")
    page.get_by_role("link", name="wire-bot").click()
    page.get_by_label("Reason (recorded in the audit log)").fill("reviewed the transfer limits")
    page.get_by_role("button", name="Approve").click()
    page.wait_for_url(re.compile(r".*/console/agents/wire-bot$"))
    assert page.locator(".badge.active").first.is_visible()
    assert _agent(server, "wire-bot")["state"] == "active"
    assert page.get_by_role("cell", name="agent.approved").is_visible(), "in its history"


def test_an_agent_described_with_markup_renders_it_as_text(console: Console, server: Live) -> None:
    description = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    owner = "<script>alert(3)</script>"
    _register(server, "markup-bot", description=description, owners=[owner])
    add_person(server, "selma", "security-admin")
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    console.page.on("dialog", on_dialog)
    console.sign_in("selma")
    for path in ("/console/agents", "/console/agents/markup-bot"):
        page = console.open(path)
        assert page.locator("script").count() == LAYOUT_SCRIPTS, f"no new script on {path}"
        assert page.locator("main img").count() == 0
        assert page.get_by_text(owner).first.is_visible()
    assert page.get_by_text(description).is_visible()
    assert dialogs == []


def test_a_security_admin_quarantines_an_agent_and_its_lease_and_tokens_are_revoked(
    console: Console, server: Live
) -> None:
    token, lease_id = _agent_with_a_lease(server, "crm-bot", "corr-crm-bot-1")
    add_person(server, "quentin", "security-admin")
    console.sign_in("quentin")
    page = console.open("/console/agents/crm-bot")
    assert page.get_by_role("cell", name=lease_id, exact=True).is_visible(), "the lease it holds"
    assert page.get_by_role("cell", name="pod-1", exact=True).first.is_visible(), "its instance"
    trace = page.get_by_role("link", name="corr-crm-bot-1").first
    assert trace.get_attribute("href") == "/console/audit?correlation_id=corr-crm-bot-1"
    console.shot("agent-detail")
    page.get_by_label("Reason (recorded in the audit log)").fill("exfiltration suspected")
    page.get_by_role("button", name="Quarantine").click()
    page.wait_for_url(re.compile(r".*/console/agents/crm-bot$"))
    assert page.locator(".badge.quarantined").first.is_visible()
    assert page.get_by_text("Reason: exfiltration suspected").is_visible()
    assert page.get_by_text("Holds no live lease.").is_visible()
    agent = _agent(server, "crm-bot")
    assert (agent["state"], agent["state_reason"]) == ("quarantined", "exfiltration suspected")
    with server.ops() as ops:
        assert ops.get(f"/v1/leases/{lease_id}").json()["state"] == "revoked"
    refused = httpx.post(
        f"{server.addr}/v1/leases",
        json={"engine": "vault-main", "role": "crm"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert refused.status_code == 401, "the agent's token is revoked with it"


def test_an_auditor_sees_no_actions_and_a_forged_quarantine_is_refused_by_the_domain(
    console: Console, server: Live
) -> None:
    _register(server, "watched-bot")
    add_person(server, "audra", "auditor")
    console.sign_in("audra")
    page = console.open("/console/agents/watched-bot")
    assert page.get_by_role("heading", name="History").is_visible()
    assert page.get_by_role("cell", name="agent.registered").is_visible(), "auditors read it"
    actions = ("Approve", "Suspend", "Resume", "Quarantine", "Retire")
    assert _buttons(page, *actions) == 0
    assert page.get_by_text("Retire this agent…").count() == 0
    assert page.get_by_role("link", name="Register an agent").count() == 0
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    with httpx.Client(base_url=server.addr, cookies=cookies) as forged:
        answer = forged.post(
            "/console/agents/watched-bot/state", data={"csrf": csrf, "action": "quarantine"}
        )
    assert answer.status_code == 403
    assert "auditor may not agent.quarantine" in answer.text
    assert "csrf_refused" not in answer.text, "refused by the registry, not by the form check"
    assert _agent(server, "watched-bot")["state"] == "active"

"""The console's audit trace in Debian's Chromium: the records of one correlation id drawn as
who acted for whom on what, and the proof bundle downloaded and checked offline; only for
``audit.read``."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from playwright.sync_api import expect

from tests.integration.live.conftest import Live, run_cli
from tether.identity.client_auth import ASSERTION_TYPE

from .conftest import PASSWORD, Console, add_person
from .test_console_decisions import Bot, session_cookies

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
REDIRECT = "https://shop.example/callback"


def _consented_token(server: Live, client_id: str, person: str) -> str:
    """``person``'s access token for the web app ``client_id``, with their consent to its agent
    reading their orders (a grant): the authorization code flow, as a browser plays it."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    query = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
             "scope": "openid orders:read", "state": secrets.token_urlsafe(8),
             "code_challenge": challenge.rstrip(b"=").decode(), "code_challenge_method": "S256",
             "purpose": "track my orders", "purpose_code": "order-tracking"}  # fmt: skip
    with httpx.Client(base_url=server.addr) as browser:
        page = browser.get(
            f"/oauth2/authorize?{urlencode(query)}", headers={"Accept": "application/json"}
        )
        signed_in = {"handle": page.json()["handle"], "username": person, "password": PASSWORD}
        answer = browser.post("/oauth2/authorize/login", data=signed_in)
        if answer.status_code == 200:  # the consent page
            found = re.search(r'name="handle" value="([^"]+)"', answer.text)
            assert found, answer.text
            consent = {"handle": found.group(1), "decision": "approve"}
            answer = browser.post("/oauth2/authorize/consent", data=consent)
        assert answer.status_code == 303, answer.text
        code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
        redeemed = browser.post("/oauth2/token", data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "client_id": client_id, "code_verifier": verifier,
        })  # fmt: skip
    assert redeemed.status_code == 200, redeemed.text
    token: str = redeemed.json()["access_token"]
    return token


def delegated_decision(server: Live, *, agent: str, person: str, correlation_id: str) -> str:
    """``agent`` reads ``person``'s orders for them (a token exchange of their token, on
    instance pod-7) under ``correlation_id``: the decision's id."""
    bot = Bot.register(server, agent)
    add_person(server, person)
    with server.ops() as ops:
        app = {"client_id": f"{agent}-web", "name": "Shop", "redirect_uris": [REDIRECT],
               "agent": agent}  # fmt: skip
        assert ops.post("/v1/clients", json=app).status_code == 201
    user_token = _consented_token(server, f"{agent}-web", person)
    exchanged = httpx.post(f"{server.addr}/oauth2/token", data={
        "grant_type": TOKEN_EXCHANGE, "subject_token": user_token,
        "subject_token_type": ACCESS_TOKEN, "instance_id": "pod-7",
        "client_assertion_type": ASSERTION_TYPE, "client_assertion": bot.assertion(),
    })  # fmt: skip
    assert exchanged.status_code == 200, exchanged.text
    return bot.decide(
        "orders", token=exchanged.json()["access_token"], correlation_id=correlation_id
    )


def _record_of(server: Live, correlation_id: str) -> str:
    """The correlation's decision record, once a signed checkpoint covers it (≤ 1 s)."""
    with server.ops() as ops:
        [step] = ops.get(f"/v1/audit/trace/{correlation_id}").json()["steps"]
        record_id: str = step["record_id"]
        deadline = time.monotonic() + 10
        while ops.get(f"/v1/audit/records/{record_id}/proof").status_code != 200:
            assert time.monotonic() < deadline, "no checkpoint covers the record"
            time.sleep(0.2)
    return record_id


def test_a_delegated_trace_goes_from_the_user_through_the_app_and_agent_to_the_resource(
    console: Console, server: Live
) -> None:
    correlation_id = f"corr-{secrets.token_hex(6)}"
    decision = delegated_decision(
        server, agent="trace-bot", person="tara", correlation_id=correlation_id
    )
    add_person(server, "kai", "auditor")
    console.sign_in("kai")
    page = console.open("/console/audit")
    page.get_by_label("Correlation id").fill(correlation_id)
    page.get_by_role("button", name="Show the trace").click()
    page.wait_for_url(re.compile(rf".*/console/audit\?correlation_id={correlation_id}&"))
    [step] = page.locator("ol.trace > li").all()
    expect(step.get_by_role("heading", level=3)).to_have_text("decision allow")
    hops = step.locator("ol.chain > li").all_inner_texts()
    order = [
        next(i for i, hop in enumerate(hops) if hop.startswith(name))
        for name in ("User tara", "Through the app trace-bot-web", "Agent trace-bot",
                     "Instance pod-7", "Action read", 'Resource Api::"orders"')
    ]  # fmt: skip
    assert order == sorted(order), hops
    assert any(h.startswith("Delegated to spiffe://") for h in hops), hops
    expect(step).to_contain_text("console-agents-read-orders")  # the determining policy
    expect(step).to_contain_text("On the grant")
    console.shot("trace")
    # The decision id leads to the same trace.
    page = console.open(f"/console/audit?decision_id={decision}")
    page.wait_for_url(re.compile(rf".*/console/audit\?correlation_id={correlation_id}$"))


def test_the_proof_bundle_downloads_and_verifies_offline_with_the_log_key(
    console: Console, server: Live, tmp_path: Path
) -> None:
    correlation_id = f"corr-{secrets.token_hex(6)}"
    delegated_decision(server, agent="proof-bot", person="uma", correlation_id=correlation_id)
    record_id = _record_of(server, correlation_id)
    add_person(server, "lea", "security-admin")
    console.sign_in("lea")
    page = console.open(f"/console/audit?correlation_id={correlation_id}")
    with page.expect_download() as downloading:
        page.get_by_role("link", name="Download proof bundle").click()
    download = downloading.value
    assert download.suggested_filename == f"tether-proof-{record_id}.json"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    with server.ops() as ops:
        key = ops.get("/v1/audit/key").json()["verifier_key"]
    checked = run_cli(server.addr, "audit", "verify-bundle", str(saved), "--key", key, token=None)
    assert checked.returncode == 0, checked.stderr
    saved.write_text(saved.read_text().replace("console-agents-read-orders", "forged"))
    forged = run_cli(server.addr, "audit", "verify-bundle", str(saved), "--key", key, token=None)
    assert forged.returncode != 0, "an edited bundle proves nothing"


def test_an_unknown_correlation_id_is_said_on_the_trace_page(
    console: Console, server: Live
) -> None:
    add_person(server, "max", "auditor")
    console.sign_in("max")
    with httpx.Client(base_url=server.addr, cookies=session_cookies(console)) as http:
        missing = http.get("/console/audit", params={"correlation_id": "corr-nothing-here"})
        assert missing.status_code == 404
        assert "no audit record has correlation id" in missing.text
        assert 'value="corr-nothing-here"' in missing.text  # the form keeps what was typed
        odd = http.get("/console/audit", params={"correlation_id": "<script>"})
        assert odd.status_code == 400
        assert "<script>" not in odd.text


def test_an_end_user_or_a_developer_is_refused_the_trace_and_the_proof_bundle(
    console: Console, server: Live
) -> None:
    add_person(server, "nia")
    add_person(server, "oto", "developer")
    for person in ("nia", "oto"):
        console.page.context.clear_cookies()
        console.sign_in(person)
        expect(console.page.get_by_role("link", name="Audit")).to_have_count(0)
        with httpx.Client(base_url=server.addr, cookies=session_cookies(console)) as http:
            for path in ("/console/audit?correlation_id=x", "/console/audit/bundle?record_id=x"):
                answer = http.get(path)
                assert answer.status_code == 403, (person, path, answer.text)
                assert "audit.read" in answer.text
                assert "content-disposition" not in answer.headers

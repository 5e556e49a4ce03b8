"""``tether alert`` against a real ``tether serve`` on loopback (each command a process of its
own), over alerts its monitor raised from behaviour injected through the API.

One server for the module: the alerts are made once; each test acts on alerts no other test
changes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.integration.api.decisions import evaluation
from tests.integration.live.conftest import ROOT, Live, _start, run_cli
from tests.support.tokens import client_credentials
from tether.cli import exit_codes
from tether.crypto.assertion import generate_agent_key

from .conftest import WITHIN
from .test_decision_detectors import as_, forged

GHOSTS = ("spiffe://acme.org/agent/ghost/i/1", "spiffe://acme.org/agent/phantom/i/1")
POLICY = """
@id("faq-bot-searches")
permit (principal == Tether::Agent::"faq-bot", action == Tether::Action::"call_tool",
        resource == Tether::Tool::"search_faq");
"""


@dataclass
class Served:
    live: Live
    #: faq-bot's undeclared call (owned by alice), and two unregistered callers'.
    faq: str
    ghost: str
    phantom: str


def _faq_bot_token(ops: httpx.Client, addr: str) -> str:
    body = {"name": "faq-bot", "owners": ["alice"], "declarations": {"tools": ["search_faq"]}}
    assert ops.post("/v1/agents", json=body).status_code == 201
    key = generate_agent_key()
    assert ops.post("/v1/agents/faq-bot/keys", json={"jwk": key.public_jwk}).status_code == 201
    assert ops.post("/v1/policies", json={"text": POLICY}).status_code == 201
    form = client_credentials(
        key.private_pem,
        client_id="spiffe://acme.org/agent/faq-bot",
        audience=f"{addr}/oauth2/token",
        now=int(time.time()),
    )
    issued = httpx.post(f"{addr}/oauth2/token", data=form)
    assert issued.status_code == 200, issued.text
    token: str = issued.json()["access_token"]
    return token


def _alert(ops: httpx.Client, kind: str, key: str) -> str:
    """The id of the alert of ``kind`` and ``key`` once the server lists it."""
    deadline = time.monotonic() + WITHIN
    while True:
        found = ops.get("/v1/alerts", params={"kind": kind}).json()["alerts"]
        for alert in found:
            if alert["key"] == key:
                alert_id: str = alert["alert_id"]
                return alert_id
        assert time.monotonic() < deadline, f"no {kind} alert for {key} within {WITHIN} s"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    server = _start(tmp_path_factory.mktemp("alert-cli"))
    live = next(server)
    try:
        with live.ops() as ops:
            token = _faq_bot_token(ops, live.addr)
            evaluate = f"{live.addr}/access/v1/evaluation"
            undeclared = httpx.post(evaluate, json=evaluation("wire_money"), headers=as_(token))
            assert undeclared.status_code == 200, undeclared.text
            for ghost in GHOSTS:
                httpx.post(evaluate, json=evaluation(), headers=as_(forged(ghost)))
            made = Served(
                live=live,
                faq=_alert(ops, "out_of_declaration", "faq-bot"),
                ghost=_alert(ops, "unknown_caller", GHOSTS[0]),
                phantom=_alert(ops, "unknown_caller", GHOSTS[1]),
            )
        yield made
    finally:
        next(server, None)  # past its yield: the server process is stopped


def tether(served: Served, *args: str, token: str | None = None) -> Any:
    """``tether ARGS -o json`` as root (or ``token``): its parsed output."""
    done = run_cli(served.live.addr, *args, "-o", "json", token=token or ROOT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def ids(rows: list[dict[str, Any]]) -> set[str]:
    return {row["id"] for row in rows}


def test_alert_list_filters_and_its_json_parses(served: Served) -> None:
    every = tether(served, "alert", "list")
    assert ids(every) == {served.faq, served.ghost, served.phantom}
    assert all(row["id"] == row["alert_id"] for row in every)
    assert ids(tether(served, "alert", "list", "--kind", "unknown_caller")) == {
        served.ghost,
        served.phantom,
    }
    [faq] = tether(served, "alert", "list", "--agent", "faq-bot")
    assert (faq["id"], faq["kind"], faq["severity"]) == (served.faq, "out_of_declaration", "medium")
    assert ids(tether(served, "alert", "list", "--state", "open")) >= {served.faq, served.ghost}
    assert len(tether(served, "alert", "list", "--limit", "1")) == 1


def test_alert_show_ack_and_resolve(served: Served) -> None:
    shown = tether(served, "alert", "show", served.phantom)
    assert (shown["alert_id"], shown["state"], shown["key"]) == (
        served.phantom,
        "open",
        GHOSTS[1],
    )
    acked = tether(served, "alert", "ack", served.phantom, "--note", "looking into it")
    assert (acked["state"], acked["acknowledged_by"], acked["note"]) == (
        "acknowledged",
        "operator:root",
        "looking into it",
    )
    assert served.phantom in ids(tether(served, "alert", "list", "--state", "acknowledged"))
    done = tether(served, "alert", "resolve", served.phantom, "--note", "a scanner, blocked")
    assert (done["state"], done["resolved_by"]) == ("resolved", "operator:root")
    assert tether(served, "alert", "show", served.phantom)["state"] == "resolved"
    again = run_cli(served.live.addr, "alert", "ack", served.phantom)
    assert again.returncode == exit_codes.CONFLICT, again.stderr
    with served.live.ops() as ops:
        page = ops.get("/v1/audit", params={"type_prefix": "alert.", "limit": 1000}).json()
    mine = [r["type"] for r in page["records"] if r["subject"] == f"alert:{served.phantom}"]
    assert mine == ["alert.raised", "alert.acknowledged", "alert.resolved"]


def test_alert_table_output_and_an_unknown_alert(served: Served) -> None:
    table = run_cli(served.live.addr, "alert", "list", "--kind", "out_of_declaration")
    assert table.returncode == 0, table.stderr
    assert served.faq in table.stdout
    assert "faq-bot" in table.stdout
    missing = run_cli(served.live.addr, "alert", "show", "alr_nosuchalert")
    assert missing.returncode == exit_codes.NOT_FOUND


def test_alert_commands_follow_the_operators_role(served: Served) -> None:
    with served.live.ops() as ops:
        made = {
            role: ops.post("/v1/tokens", json={"role": role, "display_name": name}).json()["token"]
            for role, name in (("developer", "alice"), ("auditor", "audrey"))
        }
    alice, audrey = made["developer"], made["auditor"]
    assert ids(tether(served, "alert", "list", token=alice)) == {served.faq}
    hidden = run_cli(served.live.addr, "alert", "show", served.ghost, token=alice)
    assert hidden.returncode == exit_codes.NOT_FOUND
    assert ids(tether(served, "alert", "list", token=audrey)) >= {served.faq, served.ghost}
    refused = run_cli(served.live.addr, "alert", "ack", served.ghost, token=audrey)
    assert refused.returncode == exit_codes.AUTH
    assert tether(served, "alert", "show", served.ghost)["state"] == "open"

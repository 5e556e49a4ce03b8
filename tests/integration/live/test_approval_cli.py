"""``tether approval`` against a real ``tether serve --dev`` on loopback.

One server per module (each CLI call is a subprocess). ``bank-bot`` has a key; it asks a
person to approve exact calls (``POST /oauth2/bc-authorize`` with ``private_key_jwt``, as an
agent's SDK would). The person signs in with ``tether login --username … --password-stdin``
and answers with the stored sign-in; the server's state is then read through the API, and the
agent redeems what was approved. Each person is asked in one test only (requests to a person
are rate-limited).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.calls import CALLS, FEE, TRANSFER, item
from tether.cli import exit_codes
from tether.crypto.assertion import generate_agent_key, sign_client_assertion
from tether.crypto.jwt import UnverifiedToken
from tether.delegation.ciba import GRANT_TYPE as CIBA
from tether.identity.client_auth import ASSERTION_TYPE

from .conftest import Live, _start
from .test_cli import tether
from .test_delegation_live import PASSWORD, _tether
from .test_user_grant_cli import ok

AGENT = "bank-bot"
#: The people of the tests: the agent's owners, so it may ask them (an agent asks its owners
#: and the people who gave it a grant, no one else).
PEOPLE = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy")


@dataclass
class Bank:
    """The server and the agent that asks its people for approvals."""

    live: Live
    spiffe_id: str
    private_pem: bytes

    def auth(self) -> dict[str, str]:
        """Client authentication of instance pod-1 (private_key_jwt)."""
        assertion = sign_client_assertion(
            self.private_pem, client_id=self.spiffe_id, audience=self.live.addr,
            now=int(time.time()),
        )  # fmt: skip
        return {
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
            "instance_id": "pod-1",
        }

    def ask(self, user: str, *digests: str) -> str:
        """Ask ``user`` to approve a payment per digest; the ``auth_req_id``."""
        items = [item(CALLS[d], amount=f"{100 + n}.00") for n, d in enumerate(digests)]
        form = {
            "login_hint": user,
            "scope": "openid",
            "binding_message": f"TX-{user}",
            "authorization_details": json.dumps(items),
            **self.auth(),
        }
        asked = httpx.post(f"{self.live.addr}/oauth2/bc-authorize", data=form)
        assert asked.status_code == 200, asked.text
        auth_req_id: str = asked.json()["auth_req_id"]
        return auth_req_id

    def poll(self, auth_req_id: str) -> httpx.Response:
        form = {"grant_type": CIBA, "auth_req_id": auth_req_id, **self.auth()}
        return httpx.post(f"{self.live.addr}/oauth2/token", data=form)

    def state(self, approval_id: str) -> dict[str, Any]:
        """The request as the server holds it (read as root)."""
        with self.live.ops() as ops:
            found = ops.get(f"/v1/approvals/{approval_id}")
        assert found.status_code == 200, found.text
        approval: dict[str, Any] = found.json()
        return approval


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    yield from _start(tmp_path_factory.mktemp("approval-cli"), "--dev")


@pytest.fixture(scope="module")
def bank(live: Live) -> Bank:
    key = generate_agent_key()
    with live.ops() as ops:
        agent = ops.post("/v1/agents", json={"name": AGENT, "owners": ["sam", *PEOPLE]})
        assert agent.status_code == 201, agent.text
        added = ops.post(f"/v1/agents/{AGENT}/keys", json={"jwk": key.public_jwk})
        assert added.status_code == 201, added.text
    return Bank(live=live, spiffe_id=agent.json()["spiffe_id"], private_pem=key.private_pem)


@pytest.fixture(autouse=True)
def wide_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wide enough that no table cell is cut short (the CLI runs with this environment)."""
    monkeypatch.setenv("COLUMNS", "240")


def _person(bank: Bank, name: str, home: Path) -> Path:
    """Add ``name`` and sign them in with ``tether login``; where their sign-in is stored."""
    with bank.live.ops() as ops:
        added = ops.post("/v1/users", json={"name": name, "password": PASSWORD})
        assert added.status_code == 201, added.text
    credentials = home / f"{name}.json"
    login = ("login", "--username", name, "--password-stdin", "-o", "json")
    assert ok(_tether(bank.live, credentials, *login, stdin=PASSWORD + "\n"))["user"] == name
    return credentials


def _pending(bank: Bank, credentials: Path) -> dict[str, Any]:
    """The one pending request in a person's inbox, as ``tether approval list`` shows it."""
    listed = ("approval", "list", "--state", "pending", "-o", "json")
    [pending] = ok(_tether(bank.live, credentials, *listed))
    found: dict[str, Any] = pending
    return found


def test_approval_cli_lists_only_the_persons_own_requests_with_what_they_ask(
    bank: Bank, tmp_path: Path
) -> None:
    alice, bob = _person(bank, "alice", tmp_path), _person(bank, "bob", tmp_path)
    bank.ask("alice", TRANSFER, FEE)
    bank.ask("bob", TRANSFER)
    mine = _pending(bank, alice)
    assert (mine["user"], mine["agent"], mine["binding_message"]) == ("alice", AGENT, "TX-alice")
    assert [d["call_digest"] for d in mine["authorization_details"]] == [TRANSFER, FEE]
    assert _pending(bank, bob)["user"] == "bob"
    table = _tether(bank.live, alice, "approval", "list")
    assert table.returncode == exit_codes.OK, table.stderr
    assert "TX-alice" in table.stdout
    assert "0: payment_initiation amount=100.00" in table.stdout
    assert "1: payment_initiation amount=101.00" in table.stdout
    assert "TX-bob" not in table.stdout
    everyone = ok(tether(bank.live, "approval", "list", "--agent", AGENT, "-o", "json"))
    assert {"alice", "bob"} <= {a["user"] for a in everyone}  # security reads all
    only_bob = ok(tether(bank.live, "approval", "list", "--user", "bob", "-o", "json"))
    assert [a["user"] for a in only_bob] == ["bob"]
    denied = ("approval", "list", "--state", "denied", "-o", "json")
    assert ok(_tether(bank.live, alice, *denied)) == []


def test_approval_cli_show_numbers_every_item_and_hides_nothing_the_api_shows(
    bank: Bank, tmp_path: Path
) -> None:
    carol = _person(bank, "carol", tmp_path)
    bank.ask("carol", TRANSFER, FEE)
    approval_id = _pending(bank, carol)["id"]
    shown = ok(_tether(bank.live, carol, "approval", "show", approval_id, "-o", "json"))
    assert shown == bank.state(approval_id)
    table = _tether(bank.live, carol, "approval", "show", approval_id)
    assert table.returncode == exit_codes.OK, table.stderr
    assert "TX-carol" in table.stdout
    assert f"call_digest={TRANSFER}" in table.stdout  # whole, not cut short
    assert f"call_digest={FEE}" in table.stdout
    assert "amount=101.00" in table.stdout
    assert "item" in table.stdout


def test_approval_cli_approves_only_the_items_named(bank: Bank, tmp_path: Path) -> None:
    dave = _person(bank, "dave", tmp_path)
    auth_req_id = bank.ask("dave", TRANSFER, FEE)
    approval_id = _pending(bank, dave)["id"]
    approve = ("approval", "approve", approval_id, "--item", "1", "-o", "json")
    answered = ok(_tether(bank.live, dave, *approve))
    assert (answered["state"], answered["approved"], answered["decided_by"]) == (
        "approved",
        [1],
        "dave",
    )
    held = bank.state(approval_id)
    assert (held["state"], held["approved"]) == ("approved", [1])
    redeemed = bank.poll(auth_req_id)
    assert redeemed.status_code == 200, redeemed.text
    claims = UnverifiedToken.parse(redeemed.json()["access_token"]).claims
    assert [d["call_digest"] for d in claims["authorization_details"]] == [FEE]
    assert claims["approver"] == "dave"


def test_approval_cli_approves_every_item_when_none_is_named(bank: Bank, tmp_path: Path) -> None:
    erin = _person(bank, "erin", tmp_path)
    bank.ask("erin", TRANSFER, FEE)
    approval_id = _pending(bank, erin)["id"]
    table = _tether(bank.live, erin, "approval", "approve", approval_id)
    assert table.returncode == exit_codes.OK, table.stderr
    assert "approved" in table.stdout
    assert bank.state(approval_id)["approved"] == [0, 1]


def test_approval_cli_deny_refuses_the_request_and_it_is_answered_once(
    bank: Bank, tmp_path: Path
) -> None:
    frank = _person(bank, "frank", tmp_path)
    auth_req_id = bank.ask("frank", TRANSFER)
    approval_id = _pending(bank, frank)["id"]
    denied = ok(_tether(bank.live, frank, "approval", "deny", approval_id, "-o", "json"))
    assert (denied["state"], denied["approved"]) == ("denied", [])
    assert bank.state(approval_id)["state"] == "denied"
    assert bank.poll(auth_req_id).json()["error"] == "access_denied"
    again = _tether(bank.live, frank, "approval", "approve", approval_id)
    assert again.returncode == exit_codes.CONFLICT, again.stdout + again.stderr
    assert bank.state(approval_id)["state"] == "denied"


def test_approval_cli_an_operator_cannot_answer_for_a_person(bank: Bank, tmp_path: Path) -> None:
    grace = _person(bank, "grace", tmp_path)
    bank.ask("grace", TRANSFER)
    approval_id = _pending(bank, grace)["id"]
    for answer in ("approve", "deny"):
        refused = tether(bank.live, "approval", answer, approval_id)
        assert refused.returncode == exit_codes.AUTH, refused.stdout + refused.stderr
    assert bank.state(approval_id)["state"] == "pending"


def test_approval_cli_another_person_cannot_see_or_answer_a_request(
    bank: Bank, tmp_path: Path
) -> None:
    heidi, ivan = _person(bank, "heidi", tmp_path), _person(bank, "ivan", tmp_path)
    bank.ask("heidi", TRANSFER)
    approval_id = _pending(bank, heidi)["id"]
    for command in ("show", "approve", "deny"):
        hidden = _tether(bank.live, ivan, "approval", command, approval_id)
        assert hidden.returncode == exit_codes.NOT_FOUND, hidden.stdout + hidden.stderr
    assert bank.state(approval_id)["state"] == "pending"


def test_approval_cli_an_item_the_request_does_not_hold_is_refused(
    bank: Bank, tmp_path: Path
) -> None:
    judy = _person(bank, "judy", tmp_path)
    bank.ask("judy", TRANSFER, FEE)
    approval_id = _pending(bank, judy)["id"]
    beyond = _tether(bank.live, judy, "approval", "approve", approval_id, "--item", "2")
    assert beyond.returncode == exit_codes.INVALID_INPUT, beyond.stdout + beyond.stderr
    assert "items 0 to 1" in beyond.stderr
    negative = _tether(bank.live, judy, "approval", "approve", approval_id, "--item", "-1")
    assert negative.returncode == exit_codes.USAGE
    bad_state = _tether(bank.live, judy, "approval", "list", "--state", "maybe")
    assert bad_state.returncode == exit_codes.USAGE
    assert bank.state(approval_id)["state"] == "pending"
    unknown = _tether(bank.live, judy, "approval", "show", "apr_" + "a" * 26)
    assert unknown.returncode == exit_codes.NOT_FOUND

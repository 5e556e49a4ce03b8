"""The issue's "done when" for approvals: against ``tether serve --dev``, a script acting as the
agent and another acting as the person complete the poll and the ping flows with raw HTTP only
(``tests/support/ciba_agent.py``, ``tests/support/ciba_user.py``: no Tether library), and a
substituted call is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tether.crypto.assertion import generate_agent_key

from .conftest import Live, _start, free_port

SUPPORT = Path(__file__).parents[2] / "support"
PASSWORD = "correct horse battery staple"
POLICY = """
@id("bank-bot-transfers-with-approval")
@obligation("approval")
permit (principal == Tether::Agent::"bank-bot", action == Tether::Action::"call_tool",
        resource == Tether::Tool::"transfer");
"""


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Live]:
    yield from _start(tmp_path, "--dev")


def _setup(server: Live, tmp_path: Path, **declarations: object) -> tuple[str, Path]:
    """bank-bot with a key (and ``declarations``), alice, the policy: the agent's SPIFFE ID
    and its private key's file."""
    key = generate_agent_key()
    with server.ops() as ops:
        # alice owns it: for its own calls (no delegated token), its owners approve.
        agent = {"name": "bank-bot", "owners": ["sam", "alice"], "declarations": declarations}
        created = ops.post("/v1/agents", json=agent)
        assert created.status_code == 201, created.text
        added = ops.post("/v1/agents/bank-bot/keys", json={"jwk": key.public_jwk})
        assert added.status_code == 201, added.text
        assert ops.post("/v1/users", json={"name": "alice", "password": PASSWORD}).is_success
        assert ops.post("/v1/policies", json={"text": POLICY}).status_code == 201
    key_file = tmp_path / "bank-bot.pem"
    key_file.write_bytes(key.private_pem)
    return str(created.json()["spiffe_id"]), key_file


def _run_both(
    server: Live, spiffe_id: str, key_file: Path, *mode: str
) -> tuple[dict[str, Any], list[str]]:
    """The person's script and the agent's script at once; what each printed."""
    person = subprocess.Popen(
        [sys.executable, str(SUPPORT / "ciba_user.py"), server.addr, "alice", "2"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert person.stdin is not None
        assert person.stdout is not None
        person.stdin.write(PASSWORD + "\n")
        person.stdin.close()
        agent = subprocess.run(
            [sys.executable, str(SUPPORT / "ciba_agent.py"), server.addr, spiffe_id,
             str(key_file), "alice", *mode],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert agent.returncode == 0, agent.stderr
        answered = person.stdout.read()
        assert person.wait(timeout=60) == 0
    finally:
        if person.poll() is None:
            person.kill()
            person.wait()
        if person.stdout is not None:
            person.stdout.close()
    return json.loads(agent.stdout), json.loads(answered)


def test_ciba_poll_flow_by_raw_http_scripts_and_a_substituted_call_refused(
    dev: Live, tmp_path: Path
) -> None:
    spiffe_id, key_file = _setup(dev, tmp_path)
    agent, approved = _run_both(dev, spiffe_id, key_file, "poll")
    assert len(approved) == 2
    assert agent["first"] == "approval_required"
    assert "authorization_pending" in agent["polled"]
    assert agent["allowed"] is True
    assert agent["again"] is False, "an approval lets one call through"
    assert agent["substituted"] is False, "a substituted amount is refused"
    assert agent["fresh_still_good"] is True, "the refused call did not spend the approval"


def test_ciba_ping_flow_by_raw_http_scripts(dev: Live, tmp_path: Path) -> None:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}/ciba"
    spiffe_id, key_file = _setup(dev, tmp_path, notification_endpoint=endpoint)
    agent, approved = _run_both(dev, spiffe_id, key_file, "ping", str(port))
    assert len(approved) == 2
    assert agent["pinged"] == 2
    assert agent["polled"] == [], "told by ping, it never polled before the answer"
    assert agent["allowed"] is True
    assert agent["again"] is False
    assert agent["substituted"] is False

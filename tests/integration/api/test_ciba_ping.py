"""Approvals in ping mode (OpenID CIBA Core §10.2) over HTTP: the agent declared where it is
told, a real HTTP receiver on loopback stands for it, and the ``auth_req_id`` it is told is
the one it redeems — kept sealed in the database, never in the clear."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tether.api._notify import NotifyFailed, ping_agent
from tether.api.services import Services

from .conftest import AgentFactory
from .test_ciba_api import (
    TRANSFER,
    World,
    _error,
    make_world,
    settings,  # noqa: F401 - the fixture: the CIBA tests' settings
)

PING_TOKEN = "ping-token-of-the-agent-0123456789abcdef"


class Receiver:
    """The agent's notification endpoint: a real HTTP server on loopback that records what
    it is told and answers ``status``."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.status = 204
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.received.append((dict(self.headers), json.loads(body or b"{}")))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ciba/notify"

    def __enter__(self) -> Receiver:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
async def pinged(
    client: httpx.AsyncClient, services: Services, make_agent: AgentFactory, receiver: Receiver
) -> World:
    """The CIBA world, its bank agent having declared the receiver as where it is told."""
    return await make_world(client, services, make_agent, notification_endpoint=receiver.url)


@pytest.fixture
async def polling(client: httpx.AsyncClient, services: Services, make_agent: AgentFactory) -> World:
    return await make_world(client, services, make_agent)


async def _approve_pending(world: World) -> None:
    [pending] = await world.inbox(world.alice, state="pending")
    answered = await world.client.post(
        f"/v1/approvals/{pending['id']}/approve", json={}, headers=world.alice
    )
    assert answered.status_code == 200, answered.text


async def test_ciba_ping_tells_the_agent_with_its_token_and_the_id_it_redeems(
    pinged: World, receiver: Receiver
) -> None:
    asked = await pinged.ask(TRANSFER, client_notification_token=PING_TOKEN)
    assert asked.status_code == 200, asked.text
    auth_req_id = asked.json()["auth_req_id"]
    assert receiver.received == []
    await _approve_pending(pinged)
    [(headers, body)] = receiver.received
    assert headers["Authorization"] == f"Bearer {PING_TOKEN}"
    assert body == {"auth_req_id": auth_req_id}
    redeemed = await pinged.poll(body["auth_req_id"])
    assert redeemed.status_code == 200, redeemed.text


async def test_ciba_ping_mode_requires_the_client_notification_token(pinged: World) -> None:
    assert _error(await pinged.ask(TRANSFER)) == "invalid_request"


async def test_ciba_a_polling_agent_sending_a_notification_token_is_refused(
    polling: World,
) -> None:
    asked = await polling.ask(TRANSFER, client_notification_token=PING_TOKEN)
    assert _error(asked) == "invalid_request"


async def test_ciba_a_refusal_is_pinged_too(pinged: World, receiver: Receiver) -> None:
    auth_req_id = (await pinged.ask(TRANSFER, client_notification_token=PING_TOKEN)).json()[
        "auth_req_id"
    ]
    [pending] = await pinged.inbox(pinged.alice)
    await pinged.client.post(f"/v1/approvals/{pending['id']}/deny", headers=pinged.alice)
    assert [body for _, body in receiver.received] == [{"auth_req_id": auth_req_id}]
    assert _error(await pinged.poll(auth_req_id)) == "access_denied"


async def test_ciba_a_failed_ping_leaves_the_answer_and_polling_intact(
    pinged: World, receiver: Receiver
) -> None:
    receiver.status = 500
    auth_req_id = (await pinged.ask(TRANSFER, client_notification_token=PING_TOKEN)).json()[
        "auth_req_id"
    ]
    await _approve_pending(pinged)
    assert len(receiver.received) == 1
    assert (await pinged.poll(auth_req_id)).status_code == 200


async def test_ciba_the_database_holds_neither_the_auth_req_id_nor_the_ping_token(
    pinged: World, services: Services, tmp_path: Path
) -> None:
    auth_req_id = (await pinged.ask(TRANSFER, client_notification_token=PING_TOKEN)).json()[
        "auth_req_id"
    ]
    stored = b"".join(p.read_bytes() for p in (tmp_path / "data").rglob("*.db*") if p.is_file())
    [request] = await pinged.inbox(pinged.alice)
    assert request["id"].encode() in stored, "the request itself is on disk"
    assert auth_req_id.encode() not in stored
    assert PING_TOKEN.encode() not in stored


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://example.com/notify",
        "ftp://127.0.0.1/notify",
        "https://user:pw@example.com/notify",
        "https://example.com/notify#frag",
        "not a url",
    ],
)
async def test_ciba_a_notification_endpoint_tether_must_not_post_to_is_refused(
    client: httpx.AsyncClient, endpoint: str
) -> None:
    body = {"name": "odd-bot", "owners": ["alice"],
            "declarations": {"notification_endpoint": endpoint}}  # fmt: skip
    created = await client.post("/v1/agents", json=body)
    assert created.status_code == 400, created.text
    assert created.json()["error"]["code"] == "invalid_declaration"


async def test_ciba_a_ping_into_the_servers_own_network_is_refused_outside_dev_mode(
    receiver: Receiver,
) -> None:
    # The endpoint resolves to loopback: outside --dev, Tether does not post there.
    with pytest.raises(NotifyFailed, match="not a public address"):
        await ping_agent(receiver.url, PING_TOKEN, "req-1")
    assert receiver.received == []
    await ping_agent(receiver.url, PING_TOKEN, "req-1", private_ok=True)
    assert [body for _, body in receiver.received] == [{"auth_req_id": "req-1"}]

"""The clock jumping, forwards and backwards, under the server's injected clock (in process:
the same services ``tether serve`` runs, over SQLite, the clock a
:class:`~tether._internal.clock.FixedClock` the test moves).

The rules (issue 13 §4): a jump past a token's expiry refuses the token at once; a jump past
a lease's expiry has the reaper end it in its next round, never before the expiry; a jump
backwards ends nothing early — a token is refused only once it is outside its validity with
the documented 30 s leeway (``nbf``/``iat`` in the future count like ``exp``: refused, never
allowed), and it is accepted again when the clock is back.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.support.tokens import client_credentials
from tether._internal.clock import FixedClock
from tether.api.services import Services
from tether.crypto.assertion import generate_agent_key

from .conftest import ISSUER, SVID_TTL, agent_token, decide

#: The checkpoint's leeway on ``exp``/``nbf`` (tether.checkpoint, step 1).
LEEWAY = 30


async def test_clock_jump_past_token_expiry_refuses_the_token(
    client: httpx.AsyncClient, clock: FixedClock
) -> None:
    token = await agent_token(client, clock)
    assert await decide(client, token) == 200
    clock.advance(-(LEEWAY - 5))  # back, within the leeway: still valid
    assert await decide(client, token) == 200
    clock.advance(LEEWAY - 5 + SVID_TTL - 10)  # forward, before exp + leeway
    assert await decide(client, token) == 200
    clock.advance(LEEWAY + 15)  # past exp + leeway
    assert await decide(client, token) == 401
    fresh = await _token_again(client, clock)
    assert await decide(client, fresh) == 200, "a token issued at the new time is good"


async def test_clock_jump_backwards_refuses_a_token_not_yet_valid_then_accepts_it_again(
    client: httpx.AsyncClient, clock: FixedClock
) -> None:
    token = await agent_token(client, clock)  # never presented before the jump
    clock.advance(-3600)  # an hour back: issued "in the future", refused, never allowed
    assert await decide(client, token) == 401
    clock.advance(3600)  # the clock is back: accepted again by itself
    assert await decide(client, token) == 200


async def test_clock_jump_backwards_refuses_a_token_verified_before_the_jump(
    client: httpx.AsyncClient, clock: FixedClock
) -> None:
    token = await agent_token(client, clock)
    assert await decide(client, token) == 200  # verified, and cached
    clock.advance(-3600)
    assert await decide(client, token) == 401, "as a token not verified before is"


async def _token_again(client: httpx.AsyncClient, clock: FixedClock) -> str:
    """A new key and token for ``faq-bot`` at the clock's time."""
    key = generate_agent_key()
    assert (await client.post("/v1/agents/faq-bot/keys", json={"jwk": key.public_jwk})).is_success
    agent = (await client.get("/v1/agents/faq-bot")).json()
    form = client_credentials(key.private_pem, client_id=agent["spiffe_id"],
                              audience=f"{ISSUER}/oauth2/token", now=clock.timestamp())  # fmt: skip
    issued = await client.post("/oauth2/token", data=form)
    assert issued.status_code == 200, issued.text
    token: str = issued.json()["access_token"]
    return token


async def _lease(client: httpx.AsyncClient, token: str, lease_id: str | None = None) -> Any:
    if lease_id is None:
        body = {"engine": "orders-api", "role": "orders", "ttl": 60}
        headers = {"Authorization": f"Bearer {token}"}
        answer = await client.post("/v1/leases", headers=headers, json=body)
        assert answer.status_code == 201, answer.text
        return answer.json()["lease"]
    return (await client.get(f"/v1/leases/{lease_id}")).json()


async def test_clock_jump_past_lease_expiry_reaps_it_and_backwards_never_early(
    client: httpx.AsyncClient, clock: FixedClock, services: Services
) -> None:
    token = await agent_token(client, clock)
    lease = await _lease(client, token)
    clock.advance(-3600)  # backwards: nothing ends
    assert await services.revoker.reap() == 0
    clock.advance(3600 + 59)  # a second before the expiry: nothing ends
    assert await services.revoker.reap() == 0
    assert (await _lease(client, token, lease["id"]))["state"] == "active"
    clock.advance(3600)  # far past it: the next round ends it
    assert await services.revoker.reap() == 1
    assert (await _lease(client, token, lease["id"]))["state"] == "expired"
    assert time.monotonic() > 0  # the wall clock never entered into it

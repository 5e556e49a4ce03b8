"""The SDK's approval flow (sans-I/O, :func:`tether.delegation.flows.approval_flow`) driven
against the server in process: ask, wait a bounded time, get the approval or the pending
request to poll later. The test's driver sends each request over HTTP and, at each pause,
lets the person act and the poll interval pass on the server (instead of sleeping)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import httpx
import pytest

from tests.support.calls import TRANSFER, TRANSFER_CALL, item
from tether.api.services import Services
from tether.crypto.assertion import sign_client_assertion
from tether.delegation.flows import (
    ApprovalFlow,
    ApprovalPending,
    Approved,
    FlowError,
    HttpRequest,
    HttpResponse,
    Pause,
    approval_flow,
    approval_poll_flow,
)
from tether.identity.client_auth import ASSERTION_TYPE

from .conftest import ISSUER, AgentFactory
from .test_ciba_api import (
    World,
    _wait_interval,
    make_world,
    settings,  # noqa: F401 - the fixture: the CIBA tests' settings
)

Person = Callable[[], Awaitable[None]]


@pytest.fixture
async def ciba(client: httpx.AsyncClient, services: Services, make_agent: AgentFactory) -> World:
    """bank-bot, alice and bob (the CIBA tests' world)."""
    return await make_world(client, services, make_agent)


def _authenticate(ciba: World) -> Callable[[], dict[str, str]]:
    def fields() -> dict[str, str]:
        assertion = sign_client_assertion(
            ciba.bank.key.private_pem, client_id=ciba.bank.spiffe_id, audience=ISSUER,
            now=int(time.time()),
        )  # fmt: skip
        return {"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion,
                "instance_id": "pod-1"}  # fmt: skip

    return fields


async def _drive(
    flow: ApprovalFlow, ciba: World, person: Person | None = None
) -> tuple[Approved | ApprovalPending, list[float]]:
    """Run ``flow``; at each pause the person acts (once), then the interval passes."""
    pauses: list[float] = []
    step: HttpRequest | Pause = next(flow)
    while True:
        reply: HttpResponse | None = None
        if isinstance(step, Pause):
            pauses.append(step.seconds)
            if person is not None:
                await person()
                person = None
            await _wait_interval(ciba)
        else:
            sent = await ciba.client.post(step.url, data=dict(step.form or {}))
            reply = HttpResponse(status=sent.status_code, headers=sent.headers, body=sent.json())
        try:
            step = flow.send(reply)
        except StopIteration as done:
            return done.value, pauses


def _flow(ciba: World, *, wait: float) -> ApprovalFlow:
    return approval_flow(
        issuer=ISSUER, authenticate=_authenticate(ciba), hint=("login_hint", "alice"),
        details=[item(TRANSFER_CALL, amount="100.00")], binding_message="TX-7", wait=wait,
    )  # fmt: skip


def _answers(ciba: World, path: str, body: dict[str, object] | None = None) -> Person:
    async def act() -> None:
        [pending] = await ciba.inbox(ciba.alice, state="pending")
        answered = await ciba.client.post(
            f"/v1/approvals/{pending['id']}/{path}", json=body or {}, headers=ciba.alice
        )
        assert answered.status_code == 200, answered.text

    return act


async def test_approval_flow_returns_the_approval_when_the_person_answers_in_time(
    ciba: World,
) -> None:
    result, pauses = await _drive(_flow(ciba, wait=60), ciba, _answers(ciba, "approve"))
    assert isinstance(result, Approved)
    assert [d["call_digest"] for d in result.authorization_details] == [TRANSFER]
    assert pauses == [5]


async def test_approval_flow_hands_back_the_pending_request_after_its_bounded_wait(
    ciba: World,
) -> None:
    pending, pauses = await _drive(_flow(ciba, wait=12), ciba)
    assert isinstance(pending, ApprovalPending)
    assert pauses == [5, 5], "it waited what it was given, not a poll more"
    # Later, the agent polls for it again, and the person has answered meanwhile.
    await _answers(ciba, "approve")()
    await _wait_interval(ciba)
    again = approval_poll_flow(issuer=ISSUER, authenticate=_authenticate(ciba),
                               pending=pending, wait=0)  # fmt: skip
    result, _ = await _drive(again, ciba)
    assert isinstance(result, Approved)


async def test_approval_flow_raises_the_refusal(ciba: World) -> None:
    with pytest.raises(FlowError) as refused:
        await _drive(_flow(ciba, wait=60), ciba, _answers(ciba, "deny"))
    assert refused.value.error == "access_denied"


async def test_approval_flow_slows_down_when_told_to(ciba: World) -> None:
    flow = _flow(ciba, wait=60)
    step = next(flow)
    seen: list[HttpRequest | Pause] = []
    while len(seen) < 4:  # bc-authorize, poll (pending), pause, poll at once (slow_down)
        seen.append(step)
        reply = None
        if isinstance(step, HttpRequest):  # no time passes at the pause: polled too soon
            sent = await ciba.client.post(step.url, data=dict(step.form or {}))
            reply = HttpResponse(status=sent.status_code, headers=sent.headers, body=sent.json())
        step = flow.send(reply)
    assert seen[2] == Pause(5)
    assert step == Pause(10), "after slow_down the interval grows by 5 s"

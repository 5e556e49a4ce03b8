"""The upstream's own messages through the gateway — log notices, progress and resource
updates — reach the caller who asked for them, at its level, and never another caller; and how
each request is answered: with one JSON body when nothing tied to it can need a stream, on a
stream of its own otherwise.

A caller that declared no capability to be asked for input is answered with JSON bodies, so
its log notices and progress come on its session's GET stream and may arrive after the call's
answer: those tests wait for them (bounded)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from tether.enforcement.mcp._listeners import NOT_ASKABLE

from .conftest import Gateway, HttpUpstream, upstream_process

#: ``logging/setLevel`` and ``resources/subscribe`` are the handshake era's, deprecated by the
#: SDK as of 2026-07-28; this era's clients use them.
pytestmark = pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")

#: The MCP conformance suite's server: a 2026-07-28 server that asks for input as rounds.
CONFORMANCE = Path(__file__).resolve().parents[2] / "support" / "mcp_conformance_server.py"

POLICY = """
@id("shop-bot-reads-the-hours")
permit (principal == Tether::Agent::"shop-bot", action == Tether::Action::"read_resource",
        resource == Tether::McpResource::"tools/kb://hours");
"""


@pytest.fixture
def chatty_upstream(tmp_path: Path) -> Iterator[HttpUpstream]:
    """The test upstream with its notice tools (``chatty``, ``touch``) and handlers."""
    env = {**os.environ, "NOTICES": "1"}
    with upstream_process(env) as url:
        yield HttpUpstream(url=url, calls=tmp_path / "none", mutate=tmp_path / "none")


@pytest.fixture
async def token(gateway: Gateway, chatty_upstream: HttpUpstream) -> str:
    await gateway.add_server("tools", url=chatty_upstream.url)
    await gateway.add_policies(POLICY)
    return await gateway.token(await gateway.agent("shop-bot"), gateway.resource("tools"))


class Inbox:
    """What one client was told unasked."""

    def __init__(self) -> None:
        self.logs: list[str] = []
        self.updated: list[str] = []
        self.changed = asyncio.Event()

    async def log(self, params: types.LoggingMessageNotificationParams) -> None:
        self.logs.append(str(params.data))

    async def until_logged(self, count: int) -> list[str]:
        """The log notices, once ``count`` have come, and any stray after."""
        await _until(lambda: len(self.logs) >= count)
        await asyncio.sleep(0.2)  # room for a stray notice to arrive
        return self.logs

    async def message(self, message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            self.updated.append(str(message.params.uri))
            self.changed.set()

    def options(self) -> dict[str, Any]:
        return {"logging_callback": self.log, "message_handler": self.message}


def _text(result: types.CallToolResult) -> str:
    assert not result.is_error, result
    return result.content[0].text  # type: ignore[union-attr]


async def test_a_callers_log_notices_reach_it_at_the_level_it_set(
    gateway: Gateway, token: str
) -> None:
    inbox = Inbox()
    async with gateway.client("tools", token, mode="legacy", **inbox.options()) as client:
        await client.set_logging_level("info")
        done = await client.call_tool("chatty", {"tag": "a"})
        logged = await inbox.until_logged(2)
    assert _text(done) == "a done"
    assert logged == ["a: info", "a: warning"]  # the upstream filtered debug: level sent


async def test_one_callers_log_notices_never_reach_another_caller(
    gateway: Gateway, token: str
) -> None:
    first, second = Inbox(), Inbox()
    other = await gateway.token(await gateway.agent("crm-bot"), gateway.resource("tools"))
    permit = """
@id("crm-bot-uses-the-tools")
permit (principal == Tether::Agent::"crm-bot", action == Tether::Action::"call_tool",
        resource in Tether::McpServer::"tools");
"""
    await gateway.add_policies(permit)
    async with (
        gateway.client("tools", token, mode="legacy", **first.options()) as one,
        gateway.client("tools", other, mode="legacy", **second.options()) as two,
    ):
        await one.set_logging_level("debug")
        await two.set_logging_level("debug")
        # both calls run at once, each logging three times on the gateway's upstream side
        results = await asyncio.gather(
            one.call_tool("chatty", {"tag": "first"}), two.call_tool("chatty", {"tag": "second"})
        )
        await first.until_logged(3)
        await second.until_logged(3)
    assert [_text(r) for r in results] == ["first done", "second done"]
    assert first.logs == ["first: debug", "first: info", "first: warning"]
    assert second.logs == ["second: debug", "second: info", "second: warning"]


async def test_a_subscriber_is_told_of_a_change_and_no_one_else(
    gateway: Gateway, token: str
) -> None:
    watcher, bystander = Inbox(), Inbox()
    async with (
        gateway.client("tools", token, mode="legacy", **watcher.options()) as watching,
        gateway.client("tools", token, mode="legacy", **bystander.options()) as other,
    ):
        await watching.subscribe_resource("kb://hours")
        told = await other.call_tool("touch", {"uri": "kb://hours"})
        await asyncio.wait_for(watcher.changed.wait(), timeout=10)
        await watching.unsubscribe_resource("kb://hours")
        after = await other.call_tool("touch", {"uri": "kb://hours"})
        await asyncio.sleep(0.3)  # room for a stray notice to arrive
    assert _text(told) == "1"  # one upstream session subscribed: the watcher's own
    assert watcher.updated == ["kb://hours"]
    assert bystander.updated == []
    assert _text(after) == "0"  # the unsubscription reached the upstream


async def test_subscribing_to_a_resource_the_agent_may_not_read_is_refused_and_recorded(
    gateway: Gateway, token: str
) -> None:
    async with gateway.client("tools", token, mode="legacy") as client:
        with pytest.raises(MCPError, match="refused by Tether") as refused:
            await client.subscribe_resource("kb://payroll")
        told = await client.call_tool("touch", {"uri": "kb://payroll"})
    assert refused.value.error.code == -32001
    assert _text(told) == "0"  # nothing was subscribed upstream
    reads = [r["details"] for r in await gateway.records("decision")
             if r["details"]["action"] == "read_resource"]  # fmt: skip
    assert [(d["resource"], d["effect"]) for d in reads] == [
        ('McpResource::"tools/kb://payroll"', "deny")
    ]


async def test_a_listening_session_that_ends_closes_its_upstream_session(
    gateway: Gateway, token: str
) -> None:
    pool = gateway.services.mcp.pool
    async with gateway.client("tools", token, mode="legacy") as client:
        await client.set_logging_level("info")
        during = pool.listening("tools")
    for _ in range(100):  # the client's DELETE is answered as it leaves
        if pool.listening("tools") == 0:
            break
        await asyncio.sleep(0.05)
    assert during == 1
    assert pool.listening("tools") == 0


async def test_a_listening_callers_upstream_asks_it_for_input_on_its_own_call(
    gateway: Gateway, token: str
) -> None:
    questions: list[str] = []

    async def answer(context: object, params: types.ElicitRequestParams) -> types.ElicitResult:
        questions.append(params.message)
        return types.ElicitResult(action="accept", content={"answer": "blue"})

    async with gateway.client("tools", token, mode="legacy", elicitation_callback=answer) as me:
        await me.set_logging_level("info")  # the session listens: its own upstream session
        answered = await me.call_tool("ask", {"question": "Which colour?"})
    assert questions == ["Which colour?"]
    assert _text(answered) == "accept: blue"


class Progress:
    """The progress one call was told."""

    def __init__(self) -> None:
        self.steps: list[tuple[float, float | None, str | None]] = []

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.steps.append((progress, total, message))

    async def until(self, count: int) -> list[tuple[float, float | None, str | None]]:
        await _until(lambda: len(self.steps) >= count)
        return self.steps


async def _until(done: Callable[[], bool]) -> None:
    """Until ``done()``, 10 s at most (a test then fails on what came)."""
    for _ in range(200):
        if done():
            return
        await asyncio.sleep(0.05)


STEPS = [(1.0, 2.0, "step 1"), (2.0, 2.0, "step 2")]


async def test_a_caller_that_cannot_be_asked_for_input_is_answered_with_json_bodies(
    gateway: Gateway, token: str
) -> None:
    answers: list[tuple[str, str]] = []
    async with gateway.client("tools", token, mode="legacy", answers=answers) as client:
        listed = await client.list_tools()
        done = await client.call_tool("chatty", {"tag": "a"})
    assert "chatty" in {tool.name for tool in listed.tools}
    assert _text(done) == "a done"
    assert answers == [("initialize", "application/json"), ("tools/list", "application/json"),
                       ("tools/call", "application/json")]  # fmt: skip


async def test_a_caller_that_can_be_asked_for_input_is_answered_on_streams(
    gateway: Gateway, token: str
) -> None:
    async def answer(context: object, params: types.ElicitRequestParams) -> types.ElicitResult:
        return types.ElicitResult(action="accept", content={"answer": "blue"})

    answers: list[tuple[str, str]] = []
    async with gateway.client("tools", token, mode="legacy", answers=answers,
                              elicitation_callback=answer) as client:  # fmt: skip
        await client.set_logging_level("info")  # the session listens: its own upstream session
        answered = await client.call_tool("ask", {"question": "Which colour?"})
    assert _text(answered) == "accept: blue"  # asked on the call's own stream
    assert {method for method, _ in answers} >= {"initialize", "logging/setLevel", "tools/call"}
    assert {media for _, media in answers} == {"text/event-stream"}


async def test_progress_reaches_a_caller_answered_with_json_by_its_token(
    gateway: Gateway, token: str
) -> None:
    answers: list[tuple[str, str]] = []
    progress = Progress()
    async with gateway.client("tools", token, mode="legacy", answers=answers) as client:
        done = await client.call_tool("steps", progress_callback=progress)
        told = await progress.until(2)
    assert _text(done) == "steps done"
    assert ("tools/call", "application/json") in answers
    assert told == STEPS


async def test_a_stateless_calls_progress_comes_on_its_own_stream_before_its_answer(
    gateway: Gateway, token: str
) -> None:
    answers: list[tuple[str, str]] = []
    progress = Progress()
    async with gateway.client("tools", token, mode="2026-07-28", answers=answers) as client:
        followed = await client.call_tool("steps", progress_callback=progress)
        told = list(progress.steps)  # no waiting: it came before the answer
    assert _text(followed) == "steps done"
    assert ("tools/call", "text/event-stream") in answers
    assert told == STEPS


async def test_a_streamed_callers_log_notices_come_on_its_call_before_the_answer(
    gateway: Gateway, token: str
) -> None:
    async def answer(context: object, params: types.ElicitRequestParams) -> types.ElicitResult:
        return types.ElicitResult(action="decline")

    inbox = Inbox()
    async with gateway.client("tools", token, mode="legacy", elicitation_callback=answer,
                              **inbox.options()) as client:  # fmt: skip
        await client.set_logging_level("info")
        done = await client.call_tool("chatty", {"tag": "s"})
        logged = list(inbox.logs)  # no waiting: they came on the call's stream, before it
    assert _text(done) == "s done"
    assert logged == ["s: info", "s: warning"]


async def test_a_plain_sessions_request_under_the_id_of_one_in_flight_is_refused(
    gateway: Gateway, token: str
) -> None:
    """In a session answered with JSON bodies, a second request under the id of one still in
    flight would leave the first waiting for ever (the SDK keys a request's answer by its id,
    and its JSON answers never see their client go away)."""
    headers = {"Authorization": f"Bearer {token}", "mcp-protocol-version": "2025-11-25",
               "Accept": "application/json, text/event-stream"}  # fmt: skip
    url = gateway.resource("tools")
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "raw", "version": "1"}}}  # fmt: skip
    call = {"jsonrpc": "2.0", "id": 5, "method": "tools/call",
            "params": {"name": "chatty", "arguments": {"tag": "d"}}}  # fmt: skip
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        opened = await http.post(url, json=init)
        assert opened.status_code == 200, opened.text
        assert opened.headers["content-type"].startswith("application/json")
        http.headers["mcp-session-id"] = opened.headers["mcp-session-id"]
        told = await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert told.status_code == 202, told.text
        first = asyncio.create_task(http.post(url, json=call))
        await asyncio.sleep(0.05)  # the first is in flight (chatty takes 150 ms)
        second = await http.post(url, json={**call, "id": "5"})  # the SDK keys both as "5"
        both = [await asyncio.wait_for(first, timeout=10), second]
        again = await http.post(url, json=call)  # once the first has its answer, the id is free
    refused = [r for r in both if r.status_code == 400]
    answered = [r for r in both if r.status_code == 200]
    assert len(refused) == len(answered) == 1, [r.text for r in both]
    assert refused[0].json()["error"]["code"] == -32600
    assert answered[0].json()["result"]["content"][0]["text"] == "d done"
    assert again.status_code == 200
    assert again.json()["id"] == 5


async def test_a_caller_that_cannot_be_asked_for_input_is_never_asked(
    gateway: Gateway, token: str
) -> None:
    inbox = Inbox()
    answers: list[tuple[str, str]] = []
    async with gateway.client("tools", token, mode="legacy", answers=answers,
                              **inbox.options()) as client:  # fmt: skip
        await client.set_logging_level("info")  # the session listens: its own upstream session
        try:
            answered = await client.call_tool("ask", {"question": "Which colour?"})
        except MCPError as exc:  # the upstream's own failure, relayed
            refused = exc.error.message
        else:
            assert answered.is_error, answered
            refused = str(answered.content)
    assert NOT_ASKABLE in refused  # the upstream was told, and failed the call
    assert {media for _, media in answers} == {"application/json"}


async def test_a_plain_caller_whose_upstream_needs_input_is_told_it_cannot_be_asked(
    gateway: Gateway,
) -> None:
    """A 2026-07-28 upstream asks for input as a round of its answer; the gateway would ask a
    handshake-era caller on the call's stream, which a plain session's call does not have."""
    with upstream_process(dict(os.environ), CONFORMANCE) as url:
        await gateway.add_server("asks", url=url)
        permit = """
@id("shop-bot-uses-asks")
permit (principal == Tether::Agent::"shop-bot", action == Tether::Action::"call_tool",
        resource in Tether::McpServer::"asks");
"""
        await gateway.add_policies(permit)
        token = await gateway.token(await gateway.agent("shop-bot"), gateway.resource("asks"))
        answers: list[tuple[str, str]] = []
        async with gateway.client("asks", token, mode="legacy", answers=answers) as client:
            result = await client.call_tool("test_elicitation", {"message": "Who are you?"})
    assert result.is_error
    assert NOT_ASKABLE in str(result.content)
    assert ("tools/call", "application/json") in answers

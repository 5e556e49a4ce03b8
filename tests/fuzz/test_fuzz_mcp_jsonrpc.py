"""Fuzzing the MCP gateway's JSON-RPC decoding: ``POST /mcp/tools`` of a running server, with
a valid agent token and session, on any body — and the SDK's decoder the gateway relies on
(``pydantic_core.from_json`` then ``jsonrpc_message_adapter``) on its own.

The rule: the decoder returns a message or raises ``ValueError`` (pydantic's
``ValidationError`` is one); the gateway answers every body with a JSON-RPC answer or a 4xx,
never a server error, and nothing escapes the app. Tool calls with hostile arguments go the
whole way: the checkpoint decides them with the policy set in force.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pydantic_core
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mcp_types import jsonrpc_message_adapter

from tests.fuzz._profiles import FUZZ
from tests.fuzz._strategies import deep_json, hostile_text, json_bytes, json_values, mutated_bytes
from tests.fuzz._world import World

_ERA = "2025-11-25"
_METHODS = ["initialize", "tools/list", "tools/call", "resources/list", "resources/read",
            "prompts/list", "prompts/get", "completion/complete", "logging/setLevel", "ping",
            "notifications/initialized", "notifications/cancelled", "sampling/createMessage",
            "$/x", ""]  # fmt: skip
_TOOLS = ["add", "whoami", "transfer", "delete_all", "nope", "../add", "tools/add"]


@pytest.fixture(scope="module")
def session(world: World) -> Iterator[dict[str, str]]:
    """Headers of an initialised session of the agent at ``/mcp/tools``."""
    headers = {"Authorization": f"Bearer {world.mcp_token}", "MCP-Protocol-Version": _ERA,
               "Accept": "application/json, text/event-stream"}  # fmt: skip
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": _ERA, "capabilities": {},
                       "clientInfo": {"name": "fuzz", "version": "1"}}}  # fmt: skip
    with httpx.Client(base_url=world.addr, timeout=30) as raw:
        answer = raw.post("/mcp/tools", json=init, headers=headers)
        assert answer.status_code == 200, answer.text
        headers["Mcp-Session-Id"] = answer.headers["mcp-session-id"]
        done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert raw.post("/mcp/tools", json=done, headers=headers).status_code == 202
        yield headers


_ids = st.one_of(st.integers(), hostile_text, st.none(), st.floats(allow_nan=False), json_values(3))


@st.composite
def _message(draw: st.DrawFn) -> Any:
    """JSON-RPC shaped: a real method or not, any id, any params; tool calls with any
    arguments for the real tools."""
    message: dict[str, Any] = {"jsonrpc": draw(st.sampled_from(["2.0", "2.0", "1.0", 2]))}
    if draw(st.booleans()):
        message["id"] = draw(_ids)
    method = draw(st.one_of(st.sampled_from(_METHODS), hostile_text))
    message["method"] = method
    if method == "tools/call" or draw(st.booleans()):
        arguments = draw(st.dictionaries(hostile_text, json_values(), max_size=5))
        params = {"name": draw(st.one_of(st.sampled_from(_TOOLS), hostile_text)),
                  "arguments": arguments}  # fmt: skip
        if draw(st.booleans()):
            params["_meta"] = draw(json_values(5))
        message["params"] = params
    elif draw(st.booleans()):
        message["params"] = draw(json_values())
    return message


def _bytes(value: Any) -> bytes:
    return json_bytes(value)


_bodies = st.one_of(
    _message().map(_bytes),
    st.lists(_message(), min_size=1, max_size=3).map(_bytes),
    json_values().map(_bytes),
    deep_json(max_depth=20_000).map(str.encode),
    st.binary(max_size=256),
    st.builds(lambda m: m, _message().map(_bytes)).flatmap(mutated_bytes),
)


@FUZZ
@given(body=_bodies)
def test_jsonrpc_decoder_refuses_any_body_with_a_value_error_only(body: bytes) -> None:
    with contextlib.suppress(ValueError):
        jsonrpc_message_adapter.validate_python(pydantic_core.from_json(body), by_name=False)


@FUZZ
@given(body=_bodies, in_session=st.booleans())
def test_gateway_answers_any_body_without_a_server_error(
    world: World, session: dict[str, str], body: bytes, in_session: bool
) -> None:
    headers = dict(session)
    if not in_session:
        headers.pop("Mcp-Session-Id")
    answer = world.http.post("/mcp/tools", content=body,
                             headers=headers | {"Content-Type": "application/json"})  # fmt: skip
    assert answer.status_code < 500, answer.text
    assert world.errors == []


@FUZZ
@given(tool=st.sampled_from(_TOOLS),
       arguments=st.dictionaries(hostile_text, json_values(), max_size=6))  # fmt: skip
def test_tool_call_with_any_arguments_is_decided_never_a_server_error(
    world: World, session: dict[str, str], tool: str, arguments: dict[str, Any]
) -> None:
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments}}  # fmt: skip
    answer = world.http.post("/mcp/tools", content=_bytes(call),
                             headers=session | {"Content-Type": "application/json"})  # fmt: skip
    assert answer.status_code < 500, answer.text
    assert world.errors == []
    if tool == "delete_all" and answer.status_code == 200:
        assert b"everything is gone" not in answer.content, "a forbidden call went through"


def test_gateway_refuses_a_body_of_ten_mebibytes_without_a_server_error(
    world: World, session: dict[str, str]
) -> None:
    params = {"name": "add", "arguments": {"a": "x" * (10 << 20)}}
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params})
    answer = world.http.post("/mcp/tools", content=body,
                             headers=session | {"Content-Type": "application/json"})  # fmt: skip
    assert answer.status_code < 500
    assert world.errors == []


def _call(world: World, session: dict[str, str], tool: str, arguments: dict[str, Any]) -> str:
    call = {"jsonrpc": "2.0", "id": 8, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments}}  # fmt: skip
    answer = world.http.post("/mcp/tools", json=call, headers=session)
    assert answer.status_code == 200, answer.text
    return answer.text


def test_the_baseline_call_is_decided_allowed_and_a_forbidden_one_refused(
    world: World, session: dict[str, str]
) -> None:
    """The path the fuzz above takes, unfuzzed: the permitted call reaches the upstream, the
    forbidden ones are refused by the checkpoint (by tool, and by an argument policies read)."""
    assert '"text":"3"' in _call(world, session, "add", {"a": 1, "b": 2}).replace(" ", "")
    assert "refused by Tether" in _call(world, session, "delete_all", {})
    assert "refused by Tether" in _call(world, session, "whoami", {"q": "DROP TABLE x"})

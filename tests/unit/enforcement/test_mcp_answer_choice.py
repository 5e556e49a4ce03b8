"""Which requests outside any session the MCP gateway answers with one JSON body: those that
nothing tied to them can need a stream for. Anything it cannot read goes to the streams, whose
transport answers it as the SDK does."""

from __future__ import annotations

import orjson
import pytest

from tether.enforcement.mcp.asgi import _plain


def _initialize(capabilities: object) -> bytes:
    params = {"protocolVersion": "2025-11-25", "capabilities": capabilities,
              "clientInfo": {"name": "c", "version": "1"}}  # fmt: skip
    return orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params})


def _call(meta: object = None) -> bytes:
    params: dict[str, object] = {"name": "add", "arguments": {"a": 2, "b": 3}}
    if meta is not None:
        params["_meta"] = meta
    return orjson.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": params})


@pytest.mark.parametrize("capabilities", [{}, {"experimental": {}}])
def test_a_session_whose_client_cannot_be_asked_for_input_is_answered_plain(
    capabilities: object,
) -> None:
    assert _plain(_initialize(capabilities))


@pytest.mark.parametrize("askable", ["sampling", "elicitation", "roots"])
def test_a_session_whose_client_can_be_asked_for_input_is_answered_on_streams(
    askable: str,
) -> None:
    assert not _plain(_initialize({askable: {}}))


def test_a_stateless_request_asking_for_progress_is_streamed_and_one_without_is_not() -> None:
    assert _plain(_call())
    assert _plain(_call({"traceparent": "x"}))
    assert not _plain(_call({"progressToken": "p1"}))
    assert not _plain(_call({"progressToken": 0}))


UNREADABLE = [b"", b"{not json", b"[1, 2]", b'"text"', orjson.dumps([orjson.loads(_call())]),
              _initialize(None), _initialize(["sampling"]),
              b'{"jsonrpc": "2.0", "id": 1, "method": "initialize"}']  # fmt: skip


@pytest.mark.parametrize("body", UNREADABLE)
def test_a_request_the_front_cannot_read_goes_to_the_streams(body: bytes) -> None:
    assert not _plain(body)

"""How the MCP gateway's front reads a request before the SDK does: which sessions it answers
with one JSON body (those whose client cannot be asked for input), and the id under which a
plain session's request is in flight. Anything it cannot read goes to the streams, whose
transport answers it as the SDK does."""

from __future__ import annotations

import orjson
import pytest

from tether.enforcement.mcp.asgi import _plain, _request_id


def _initialize(capabilities: object, meta: object = None) -> bytes:
    params = {"protocolVersion": "2025-11-25", "capabilities": capabilities,
              "clientInfo": {"name": "c", "version": "1"}}  # fmt: skip
    if meta is not None:
        params["_meta"] = meta
    return orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params})


def _call(meta: object = None, id_: object = 2) -> bytes:
    params: dict[str, object] = {"name": "add", "arguments": {"a": 2, "b": 3}}
    if meta is not None:
        params["_meta"] = meta
    return orjson.dumps({"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": params})


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


def test_an_initialize_asking_for_progress_opens_a_streamed_session() -> None:
    assert not _plain(_initialize({}, {"progressToken": "p1"}))


@pytest.mark.parametrize("meta", [None, {"progressToken": "p1"}])
def test_a_stateless_request_goes_to_the_streams(meta: object) -> None:
    # the SDK answers a quick, silent one with one JSON body anyway, and watches its client
    assert not _plain(_call(meta))


UNREADABLE = [b"", b"{not json", b"[1, 2]", b'"text"', orjson.dumps([orjson.loads(_call())]),
              _initialize(None), _initialize(["sampling"]),
              b'{"jsonrpc": "2.0", "id": 1, "method": "initialize"}']  # fmt: skip


@pytest.mark.parametrize("body", UNREADABLE)
def test_a_request_the_front_cannot_read_goes_to_the_streams(body: bytes) -> None:
    assert not _plain(body)


def test_a_requests_id_is_keyed_as_the_sdks_transport_keys_it() -> None:
    assert _request_id(_call(id_=7)) == "7"
    assert _request_id(_call(id_="7")) == "7"  # the transport keys both as "7": one in flight


NO_REQUEST = [b'{"jsonrpc": "2.0", "method": "notifications/initialized"}',
              b'{"jsonrpc": "2.0", "id": 3, "result": {}}', b"[1]"]  # fmt: skip


@pytest.mark.parametrize("body", NO_REQUEST)
def test_a_notice_an_answer_or_a_batch_has_no_request_id(body: bytes) -> None:
    assert _request_id(body) is None


#: Bodies the SDK's own parser may read under an id the front could not see, or key as
#: something else: refused before the SDK sees them.
HUGE_ID = b'{"jsonrpc": "2.0", "id": 1180591620717411303424, "method": "ping"}'
NAN = _call({"x": 1})[:-1] + b', "n": NaN}'
UNSEEN = [b"{not json", NAN, HUGE_ID, _call(id_=2.0), _call(id_=True), _call(id_=None),
          _call(id_=[1]), _call(id_="_GET_stream")]  # fmt: skip


@pytest.mark.parametrize("body", UNSEEN)
def test_a_request_whose_id_the_front_cannot_read_as_the_sdk_keys_it_is_refused(
    body: bytes,
) -> None:
    with pytest.raises(ValueError, match=r"JSON|id"):
        _request_id(body)

"""A request's body read ahead of the app (the admission gate, the MCP gateway's front): handed
on whole, once, and then the connection as before; a client gone first is told as gone."""

from __future__ import annotations

from tether._internal.asgi import Message, Receive, read_body


def _receiving(messages: list[Message]) -> Receive:
    async def receive() -> Message:
        return messages.pop(0)

    return receive


async def test_a_body_read_in_chunks_is_handed_on_whole_and_then_the_disconnect() -> None:
    receive = _receiving([
        {"type": "http.request", "body": b'{"a"', "more_body": True},
        {"type": "http.request", "body": b": 1}", "more_body": False},
        {"type": "http.disconnect"},
    ])  # fmt: skip
    whole = await read_body(receive)
    assert whole is not None
    body, again = whole
    assert body == b'{"a": 1}'
    assert await again() == {"type": "http.request", "body": b'{"a": 1}', "more_body": False}
    assert await again() == {"type": "http.disconnect"}


async def test_a_client_gone_before_its_body_is_read_is_told_as_gone() -> None:
    assert await read_body(_receiving([{"type": "http.disconnect"}])) is None

"""Reading an ASGI request's body ahead of the app that will read it again.

The admission gate reads a body whole before it counts the request (a slow sender must not
hold a place), and the MCP gateway's front reads the body of a session's request before the
SDK does (to choose how it is answered). Both hand the app a ``receive`` that gives the body
again as one message, then waits on the connection as before, so the app still sees the
client go away.

The ASGI types are spelled here as plain callables (starlette's are the same aliases), so
this module needs no web framework.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["read_body"]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]


async def read_body(receive: Receive) -> tuple[bytes, Receive] | None:
    """The whole body, read now, and a ``receive`` that hands it on as one message, then
    waits on the connection (for a disconnect). None: the client went away first (or a body
    cap answered 413 and cut it off)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return body, replay

"""A webhook receiver for tests: an HTTP server on 127.0.0.1, in a thread, that records every
POST and answers with the status it is told (each answer also offers a redirect, which a
sender must not follow)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Received", "Receiver", "serve"]


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def notice(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.body)
        return found


@dataclass
class Receiver:
    """Answers the next status of ``script``, then ``status`` once it runs out, each after
    ``delay`` seconds."""

    path: str = "/notices"
    status: int = 200
    script: list[int] = field(default_factory=list)
    delay: float = 0.0
    requests: list[Received] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def answer(self) -> int:
        return self.script.pop(0) if self.script else self.status

    async def received(self, count: int, *, within: float = 30.0) -> list[Received]:
        """The first ``count`` requests, once they are in (fails after ``within`` s)."""
        async with asyncio.timeout(within):
            while True:  # the list is filled by the server's thread: polled
                if len(self.requests) >= count:
                    return self.requests[:count]
                await asyncio.sleep(0.05)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            receiver.requests.append(Received(self.path, headers, body))
            time.sleep(receiver.delay)
            self.send_response(receiver.answer())
            self.send_header("Location", f"{receiver.url}/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            """Quiet."""

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, *_args: object) -> None:
        """A client that gave up (a timeout test) is expected."""


def serve(path: str = "/notices") -> Iterator[Receiver]:
    """A running receiver (for a fixture to ``yield from``), stopped afterwards."""
    receiver = Receiver(path=path)
    server = _Server(("127.0.0.1", 0), _handler(receiver))
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()

"""The server's logs (tether.api.logs): JSON lines, no local variable of a failing frame —
where an admin or issued password would be — and the request's correlation id on every line
logged while serving it (tether.api.middleware.CorrelationId)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from starlette.types import Message, Receive, Scope, Send

from tether.api.logs import configure_logging
from tether.api.middleware import MAX_CORRELATION_ID, CorrelationId, correlation_id_of


@pytest.fixture
def server_logging() -> Iterator[None]:
    configure_logging()
    try:
        yield
    finally:
        structlog.reset_defaults()


def _connect(password: str) -> None:
    raise ConnectionError("the database refused the connection")


def test_traceback_in_the_log_carries_no_local_variable(
    capsys: pytest.CaptureFixture[str], server_logging: None
) -> None:
    secret = "s3cret-admin-password-0123456789"
    try:
        _connect(secret)
    except ConnectionError:
        structlog.get_logger("tether.test").exception("engine_open_failed", engine="pg-main")
    line = capsys.readouterr().err.strip()
    assert secret not in line
    event = json.loads(line)
    assert event["event"] == "engine_open_failed"
    assert event["level"] == "error"
    frames = event["exception"][0]["frames"]
    assert any(frame["name"] == "_connect" for frame in frames)


# -- the correlation id of a request (tether.api.middleware.CorrelationId) -------------------

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


class _Logging:
    """An app that logs twice while serving (across an await) and answers 204."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(dict(scope))
        log = structlog.get_logger("tether.test")
        log.info("request_started")
        await asyncio.sleep(0)
        log.warning("request_answered", status=204)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def _serve(headers: list[tuple[bytes, bytes]]) -> tuple[_Logging, list[Message]]:
    inner, sent = _Logging(), []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/x", "headers": headers}
    await CorrelationId(inner)(scope, receive, send)
    return inner, sent


def _lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines()]


async def test_correlation_id_is_on_every_log_line_of_the_request(
    capsys: pytest.CaptureFixture[str], server_logging: None
) -> None:
    inner, sent = await _serve([(b"x-correlation-id", b"req-42")])
    lines = _lines(capsys)
    assert [line["event"] for line in lines] == ["request_started", "request_answered"]
    assert {line["correlation_id"] for line in lines} == {"req-42"}
    assert (b"x-correlation-id", b"req-42") in sent[0]["headers"]
    assert inner.scopes[0]["state"]["correlation_id"] == "req-42"
    # Cleared after the request: a line logged now carries none.
    structlog.get_logger("tether.test").info("after")
    assert "correlation_id" not in _lines(capsys)[0]


async def test_oversized_correlation_header_is_cut(
    capsys: pytest.CaptureFixture[str], server_logging: None
) -> None:
    _, sent = await _serve([(b"x-correlation-id", b"a" * 10_000)])
    assert {line["correlation_id"] for line in _lines(capsys)} == {"a" * MAX_CORRELATION_ID}
    assert (b"x-correlation-id", b"a" * MAX_CORRELATION_ID) in sent[0]["headers"]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"x-correlation-id", b"c-1"), (b"x-request-id", b"r-1")], "c-1"),
        ([(b"x-request-id", b"r-1"), (b"traceparent", TRACEPARENT.encode())], "r-1"),
        ([(b"x-request-id", b"bad id\nwith a line"), (b"traceparent", TRACEPARENT.encode())],
         TRACE),
        ([(b"x-correlation-id", b"\x1b[2J"), (b"x-request-id", b"r-2")], "r-2"),
        ([(b"x-correlation-id", b"  c-2  ")], "c-2"),
    ],
)  # fmt: skip
def test_correlation_id_comes_from_the_callers_headers_in_order(
    headers: list[tuple[bytes, bytes]], expected: str
) -> None:
    assert correlation_id_of(headers) == expected


@pytest.mark.parametrize(
    "headers",
    [[], [(b"traceparent", b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01")],
     [(b"x-correlation-id", "réf-1".encode())], [(b"x-request-id", b"")]],
)  # fmt: skip
def test_correlation_id_is_new_without_a_usable_header(
    headers: list[tuple[bytes, bytes]],
) -> None:
    made = correlation_id_of(headers)
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    assert made != correlation_id_of(headers)


async def test_routes_read_the_one_correlation_id_whatever_header_they_read(
    capsys: pytest.CaptureFixture[str], server_logging: None
) -> None:
    inner, _ = await _serve([(b"x-correlation-id", b"c-9"), (b"x-request-id", b"r-9"),
                             (b"x-request-id", b"r-10")])  # fmt: skip
    headers = inner.scopes[0]["headers"]
    assert [v for n, v in headers if n in {b"x-correlation-id", b"x-request-id"}] == [b"c-9"] * 2

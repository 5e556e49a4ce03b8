"""The server's logs (tether.api.logs): JSON lines, and no local variable of a failing frame —
where an admin or issued password would be."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import structlog

from tether.api.logs import configure_logging


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

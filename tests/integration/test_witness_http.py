"""An HTTP witness on loopback receives every signed checkpoint; one that fails is an alert."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support.audit import open_log
from tether._internal.clock import FixedClock
from tether.audit.records import AuditRecord
from tether.store.memory import MemoryStore
from tether.store.witness import HttpWitness, witnesses_from

CLOCK = FixedClock()


class Witness(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.notes: list[tuple[str, bytes]] = []
        self.status = 200

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/add-checkpoint"


class _Handler(BaseHTTPRequestHandler):
    server: Witness

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.server.notes.append((self.headers["Content-Type"], self.rfile.read(length)))
        self.send_response(self.server.status)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # quiet
        return


@pytest.fixture
def witness() -> Iterator[Witness]:
    server = Witness()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _record(n: int) -> AuditRecord:
    return AuditRecord.new(type="agent.registered", actor="op", subject=f"a{n}", time=CLOCK.now())


async def test_every_checkpoint_is_posted_as_its_signed_note(witness: Witness) -> None:
    http = HttpWitness(witness.url)
    log = await open_log(MemoryStore(clock=CLOCK), CLOCK, witnesses=[http])
    for n in range(3):
        await log.append(_record(n))
    checkpoint = await log.sign()
    await log.close()
    await http.close()
    assert checkpoint is not None
    media, note = witness.notes[-1]
    assert media.startswith("text/plain")
    assert note == checkpoint.note
    assert log.open_checkpoint(note).size == 3


async def test_a_witness_answering_500_is_an_alert_and_the_log_goes_on(witness: Witness) -> None:
    witness.status = 500
    problems: list[str] = []
    [http] = witnesses_from((witness.url,))
    assert isinstance(http, HttpWitness)
    log = await open_log(
        MemoryStore(clock=CLOCK),
        CLOCK,
        witnesses=[http],
        on_problem=lambda kind, _details: problems.append(kind),
    )
    receipt = await log.append(_record(1))
    await log.sign()
    await log.close()
    await http.close()
    assert receipt.index == 0
    assert "audit.witness_failed" in problems

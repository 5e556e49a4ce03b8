"""An open-loop, constant-rate HTTP/1.1 load generator for loopback servers.

Request ``n`` is due at ``start + n / rate`` and is sent then, whatever happened to the ones
before it: a slow server shows as latency, not as a lower rate. Latency is measured from the
time a request was *due*, not from when a connection was free to send it, so the time a
request spent waiting behind slow ones counts (corrected for coordinated omission, as wrk2
does). Requests go over a pool of kept-alive connections (HTTP/1.1, one request at a time on
each); a request with no free connection waits for one — inside its latency.

The client is a few lines over asyncio streams (on uvloop when installed) rather than a full
HTTP library, so that the generator costs the shared cores little next to the server it
drives. It reads ``Content-Length`` and chunked bodies (an MCP answer is a chunked event
stream). Every answer is judged at once by the caller's ``judge`` (its outcome, a short
label); only the outcome and the latency are kept.

Bounded: :func:`drive` stops scheduling after ``seconds`` and waits at most ``answer_within`` more;
:func:`saturate` stops after ``seconds``.

    records = run(drive(target, rate=300, seconds=30, request=make, judge=judge))
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "Record",
    "Reply",
    "Target",
    "drive",
    "percentile",
    "request_bytes",
    "run",
    "saturate",
]

T = TypeVar("T")

#: Young collections between full ones while :func:`run` drives: in effect, never.
YOUNG_ONLY = 1_000_000_000
#: A request that got no answer (timed out, connection refused or cut).
NO_ANSWER = 0


@dataclass(frozen=True)
class Target:
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer: its status (``NO_ANSWER`` when there was none: then ``failure`` says why,
    ``timeout`` or ``connection``), headers (lowercase names) and body."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    failure: str = ""


@dataclass(frozen=True, slots=True)
class Record:
    """One request: when it was due (seconds since the run began), its latency from then
    (seconds), and what the judge made of its answer."""

    due: float
    latency: float
    outcome: str


#: Request ``n``'s bytes (see :func:`request_bytes`).
Make = Callable[[int], bytes]
#: Request ``n``'s answer, judged: a short label such as ``allow``, ``deny``, ``shed``.
Judge = Callable[[int, Reply], str]


def request_bytes(
    target: Target,
    method: str,
    path: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
) -> bytes:
    """An HTTP/1.1 request, kept alive."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {target.host}:{target.port}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body or method in {"POST", "PUT", "PATCH"}:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank; 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


#: A kept connection idle longer than this is closed rather than reused: servers close idle
#: ones (uvicorn after 5 s), and a request written as the server closes would be lost.
MAX_IDLE = 2.0


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.used = time.monotonic()

    def close(self) -> None:
        self.writer.close()

    async def exchange(self, payload: bytes) -> tuple[Reply, bool]:
        """Send one request, read its answer; whether the connection may be used again."""
        self.writer.write(payload)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        reusable = headers.get("connection", "").lower() != "close"
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._chunked()
        else:
            body, reusable = await self.reader.read(), False
        return Reply(status, headers, body), reusable

    async def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await self.reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailers
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)


class _Pool:
    """At most ``size`` connections; a request waits for a free one (inside its latency)."""

    def __init__(self, target: Target, size: int) -> None:
        self.target = target
        self.free: asyncio.LifoQueue[_Connection | None] = asyncio.LifoQueue()
        for _ in range(size):
            self.free.put_nowait(None)  # a place: connected when first used
        self.open: set[_Connection] = set()

    async def exchange(self, payload: bytes) -> Reply:
        place = await self.free.get()
        connection: _Connection | None = place
        reusable = False
        if connection is not None and time.monotonic() - connection.used > MAX_IDLE:
            connection.close()
            self.open.discard(connection)
            connection = None
        try:
            if connection is None:
                reader, writer = await asyncio.open_connection(self.target.host, self.target.port)
                connection = _Connection(reader, writer)
                self.open.add(connection)
            reply, reusable = await connection.exchange(payload)
            connection.used = time.monotonic()
            return reply
        finally:
            if connection is not None and not reusable:
                connection.close()
                self.open.discard(connection)
                connection = None
            self.free.put_nowait(connection)

    def close(self) -> None:
        for connection in self.open:
            connection.close()
        self.open.clear()


async def _one(pool: _Pool, payload: bytes, deadline: float) -> Reply:
    try:
        async with asyncio.timeout_at(deadline):
            return await pool.exchange(payload)
    except TimeoutError:
        return Reply(NO_ANSWER, failure="timeout")
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
        return Reply(NO_ANSWER, failure="connection")


def _outcome(judge: Judge, n: int, reply: Reply) -> str:
    return judge(n, reply) if reply.status != NO_ANSWER else f"no_answer_{reply.failure}"


async def drive(
    target: Target,
    *,
    rate: float,
    seconds: float,
    request: Make,
    judge: Judge,
    connections: int = 64,
    answer_within: float = 5.0,
) -> list[Record]:
    """Request ``n`` due at ``n / rate`` seconds for ``seconds``; every answer judged."""
    pool = _Pool(target, connections)
    loop = asyncio.get_running_loop()
    records: list[Record] = []
    pending: set[asyncio.Task[None]] = set()

    async def send(n: int, due: float) -> None:
        reply = await _one(pool, request(n), due + answer_within)
        latency = time.monotonic() - due
        records.append(Record(due - start, latency, _outcome(judge, n, reply)))

    start = time.monotonic() + 0.05
    n = 0
    try:
        while (due := start + n / rate) < start + seconds:
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = loop.create_task(send(n, due))
            pending.add(task)
            task.add_done_callback(pending.discard)
            n += 1
        if pending:
            await asyncio.wait(pending, timeout=answer_within + 1)
    finally:
        for task in pending:
            task.cancel()
        pool.close()
    return records


async def saturate(
    target: Target, *, seconds: float, request: Make, judge: Judge, connections: int = 32
) -> list[Record]:
    """Closed loop, to find capacity: ``connections`` clients each sending its next request
    as soon as the last is answered, for ``seconds``."""
    pool = _Pool(target, connections)
    records: list[Record] = []
    start = time.monotonic()
    counter = iter(range(10**12))

    async def client() -> None:
        while (sent := time.monotonic()) < start + seconds:
            n = next(counter)
            reply = await _one(pool, request(n), sent + 5.0)
            outcome = _outcome(judge, n, reply)
            records.append(Record(sent - start, time.monotonic() - sent, outcome))

    try:
        await asyncio.gather(*(client() for _ in range(connections)))
    finally:
        pool.close()
    return records


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when installed (less CPU per request), else on asyncio.

    Meanwhile the collector looks at young objects only: the records pile up (180,000 in
    ten minutes at 300/s), and a full collection walks them all while the generator stands
    still — measured at 42 ms with 18,000 records — which would show as the server's
    latency. Young collections still free the cycles a request leaves behind."""
    thresholds = gc.get_threshold()
    gc.set_threshold(thresholds[0], thresholds[1], YOUNG_ONLY)
    try:
        try:
            import uvloop  # noqa: PLC0415 - optional
        except ImportError:
            return asyncio.run(main)
        return uvloop.run(main)
    finally:
        gc.set_threshold(*thresholds)

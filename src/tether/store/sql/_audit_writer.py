"""The audit writer process: SQLite audit appends on a core of their own.

On SQLite the audit log's writer is bound by one interpreter: the event loop builds each
batch's entries (canonical JSON, leaf and subtree hashes) and the store's worker thread
binds and commits the rows, and the two take turns on the GIL — so a batch cannot be built
while the one before it commits. :class:`AuditWriter` moves the commits to a process of
their own — this interpreter started afresh on :func:`tether.store._sqlite_audit.main`,
which imports the standard library only, its end of a socket pair passed as a descriptor —
with its own connection to the same database file. The event loop sends each batch's rows
and, while the process commits them, builds the next batch
(:class:`~tether.audit.log.AuditLog` keeps two batches in the store's hands for this). The
checkpoints go the same way, so the two writers never wait for each other's lock. Measured
in ``bench/bench_audit_append.py``.

Each request is one transaction in the process (the same statements as the in-process
append), answered in order: nothing is acknowledged before its commit returned. If the
process dies, every request waiting for an answer fails (``StoreUnavailable``; the audit log
then reads the log's end back) and the next starts a new process. If the server dies, the
process reads the end of its socket, finishes the transaction under way and exits.

**A lone record is committed here.** When nothing else is waiting, the hop to the process
and back costs about as much as the commit itself, and a caller waiting alone for its record
pays it all (measured on this project's 2-core VM: a lone append took 0.65 ms through the
process, 0.4 ms committed here, 0.28 ms of it the commit). So a batch of one record, handed
over while the process holds no request, is committed on the caller's thread, on a
connection of its own: the process has answered everything it was sent, so the log's order
is kept. That connection never waits for the write lock (busy timeout 0: while another
connection writes, the batch goes to the process, which waits) and never checkpoints the
WAL, which would hold the event loop for the copy: every ``CHECKPOINT_TURN``-th lone batch
goes to the process, whose connection does. The event loop is held for the commit: when
these commits take more than ``DIRECT_SLOW`` on average (a moving average, so one slow fsync
does not count for much; a slow or busy disk does), lone batches go to the process for the
next ``DIRECT_PAUSE`` seconds, then the disk is tried again.

**A batch may carry other writes of the store's** (``carried``: a lease stored in the commit
of the record of its issuance, or closed in the commit of the records of its revocation;
``SqlStore.lease_create_carried`` and ``lease_save_carried``): each a statement compiled for
SQLite's driver and its parameters (:class:`~tether.store._sqlite_audit.CarriedWrite`), run
after the rows in the same transaction, here or in the process: one commit instead of two,
both or neither. Each write's ``written`` is set once the transaction has committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle  # with tether.store._sqlite_audit only, over a socket pair
import socket
import sqlite3
import subprocess  # this interpreter, on tether.store._sqlite_audit
import sys
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from tether.audit.stored import LogEntry
from tether.audit.tiles import TreeNode
from tether.errors import Conflict, LogPositionTaken, StoreUnavailable
from tether.store._sqlite_audit import HEADER, PRAGMAS, CarriedWrite, answer_unless_busy
from tether.store.sql._audit import entry_rows

__all__ = ["AuditWriter"]

#: What the process runs, with the socket's descriptor and the database's path.
_MAIN = "from tether.store._sqlite_audit import main; main()"
#: How long closing waits for the process to exit before it is killed.
_EXIT_WAIT = 5.0
#: A batch of at most this many records may be committed on the caller's thread; a batch
#: that carries writes of the store's, this many.
DIRECT_ENTRIES = 1
DIRECT_CARRYING = 4
#: When commits on the caller's thread take longer than this on average (seconds), lone
#: batches go to the process for ``DIRECT_PAUSE`` seconds.
DIRECT_SLOW = 0.002
DIRECT_PAUSE = 1.0
#: The weight of the newest commit in that moving average.
DIRECT_WEIGHT = 1 / 8
#: Every this many lone batches, one goes to the process, whose connection checkpoints the
#: WAL (the caller's thread's connection never does).
CHECKPOINT_TURN = 64
#: The connection on the caller's thread: never waits for a lock (from its first statement
#: on), never checkpoints.
_DIRECT_PRAGMAS = (
    "PRAGMA busy_timeout=0",
    *(p for p in PRAGMAS if not p.startswith("PRAGMA busy_timeout")),
    "PRAGMA wal_autocheckpoint=0",
)


class AuditWriter:
    """Audit appends for the SQLite database at ``path``: in a process of their own, a lone
    record on the caller's thread."""

    def __init__(self, path: str, *, direct_slow: float = DIRECT_SLOW) -> None:
        self._path = path
        self._direct: sqlite3.Connection | None = None
        self._direct_slow = direct_slow
        self._direct_turn = 0
        #: The next lone batch goes to the process (every ``CHECKPOINT_TURN``-th).
        self._process_next = False
        #: The moving average of the commits' durations on this thread (seconds).
        self._direct_pace = 0.0
        #: Until then (``time.monotonic``), lone batches go to the process.
        self._direct_after = 0.0
        self._process: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._tasks: list[asyncio.Task[None]] = []
        #: Frames to send and the answers they wait for, in the same order.
        self._outgoing: asyncio.Queue[bytes] = asyncio.Queue()
        self._waiting: deque[asyncio.Future[tuple[str, Any]]] = deque()
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        """Start the process and wait until it has opened the database."""
        async with self._starting:
            if self._sock is not None:
                return
            await self._end()
            mine, theirs = socket.socketpair()
            command = [sys.executable, "-c", _MAIN, str(theirs.fileno()), self._path]
            loop = asyncio.get_running_loop()
            try:
                process = await loop.run_in_executor(None, _spawn, command, theirs.fileno())
            except OSError as exc:
                mine.close()
                raise StoreUnavailable(f"the audit writer process did not start: {exc}") from None
            finally:
                theirs.close()
            mine.setblocking(False)
            self._process = process
            ready = await _receive(loop, mine)
            kind, why = pickle.loads(ready) if ready else ("stopped", "it exited")  # noqa: S301
            if kind != "ready":
                mine.close()
                raise StoreUnavailable(
                    f"the audit writer process could not open the database: {why}"
                )
            self._sock, self._outgoing = mine, asyncio.Queue()
            self._tasks = [
                asyncio.create_task(self._send(mine), name="tether-audit-writer-frames"),
                asyncio.create_task(self._read(mine), name="tether-audit-writer-answers"),
            ]

    async def append(
        self,
        entries: Sequence[LogEntry],
        nodes: Sequence[TreeNode],
        carried: Sequence[CarriedWrite] = (),
    ) -> list[int]:
        """Write ``entries`` and ``nodes`` in one transaction, with the ``carried`` writes
        (see the module docstring); their sequence numbers. :class:`LogPositionTaken`,
        ``Conflict`` or ``StoreUnavailable`` as the in-process append. Batches are written
        in the order this is called."""
        written = self.append_now(entries, nodes, carried=carried)
        if written is not None:
            return written
        answer = await self._ask(_append_request(entries, nodes, carried))
        return _sequences(_result(answer), len(entries), carried)

    def direct(self) -> bool:
        """Whether a lone batch handed over now would be committed on this thread (unless
        another connection holds the write lock): the process is running and holds no
        request, it is not the process's turn, and commits here have not been slow."""
        return (
            self._sock is not None
            and not self._waiting
            and not self._process_next
            and time.monotonic() >= self._direct_after
        )

    def append_now(
        self,
        entries: Sequence[LogEntry],
        nodes: Sequence[TreeNode],
        *,
        carried: Sequence[CarriedWrite] = (),
    ) -> list[int] | None:
        """:meth:`append` committed on this thread before returning, when it would be
        (see the module docstring); None when it would go to the process, with nothing
        written: call :meth:`append` then."""
        most = DIRECT_CARRYING if carried else DIRECT_ENTRIES
        if len(entries) > most or not self.direct():
            return None
        answer = self._here(_append_request(entries, nodes, carried))
        if answer is None:
            return None
        return _sequences(_result(answer), len(entries), carried)

    async def add_checkpoint(self, values: tuple[Any, ...]) -> None:
        """Store a checkpoint (:func:`~tether.store.sql._audit.sqlite_checkpoint_values`)
        after the batches sent before it, on the same connection: never waiting for the
        appends' write lock, nor making them wait for its own."""
        _result(await self._ask(("checkpoint", values)))

    def _here(self, request: tuple[Any, ...]) -> tuple[str, Any] | None:
        """``request`` committed on this thread (see the module docstring), or None: it goes
        to the process. Called only when :meth:`direct`."""
        try:
            if self._direct is None:
                self._direct = _connect(self._path)
        except sqlite3.Error:
            return None
        start = time.perf_counter()
        answers = answer_unless_busy(self._direct, [request])
        self._direct_pace += (time.perf_counter() - start - self._direct_pace) * DIRECT_WEIGHT
        if self._direct_pace > self._direct_slow:
            self._direct_after, self._direct_pace = time.monotonic() + DIRECT_PAUSE, 0.0
        if answers is None:  # another connection writes: the process waits for it
            return None
        self._direct_turn = (self._direct_turn + 1) % CHECKPOINT_TURN
        self._process_next = self._direct_turn == 0
        if answers[0][0] == "error":  # opened afresh for the next one
            self._close_direct()
        return answers[0]

    def _close_direct(self) -> None:
        direct, self._direct = self._direct, None
        if direct is not None:
            direct.close()

    async def _ask(self, request: tuple[Any, ...]) -> tuple[str, Any]:
        if self._sock is None:
            await self.start()
        answer: asyncio.Future[tuple[str, Any]] = asyncio.get_running_loop().create_future()
        self._process_next = False  # its connection checkpoints the WAL
        # Both at once, with no wait between: answers come in the order the frames go.
        self._waiting.append(answer)
        self._outgoing.put_nowait(pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL))
        return await answer

    async def _send(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                frame = await self._outgoing.get()
                await loop.sock_sendall(sock, len(frame).to_bytes(HEADER, "big") + frame)
                if not frame:
                    return  # asked to stop
        except OSError:
            self._stopped(sock)

    async def _read(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            while (frame := await _receive(loop, sock)) is not None:
                answer = self._waiting.popleft()
                if not answer.done():  # its caller gave up; the batch was written all the same
                    answer.set_result(pickle.loads(frame))  # noqa: S301
        except Exception:  # noqa: BLE001, S110 - a broken answer: the process is of no use
            pass
        finally:
            self._stopped(sock)

    def _stopped(self, sock: socket.socket) -> None:
        """The process is gone (or its socket broke): every batch waiting fails, and the
        next append starts a new process."""
        if self._sock is not sock:
            return
        self._sock = None
        sock.close()
        while self._waiting:
            answer = self._waiting.popleft()
            if not answer.done():
                answer.set_exception(StoreUnavailable("the audit writer process stopped"))

    async def close(self) -> None:
        """Ask the process to exit once the batches sent are written; wait for it."""
        if self._sock is not None:
            self._outgoing.put_nowait(b"")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*self._tasks, return_exceptions=True), _EXIT_WAIT
                )
        await self._end()

    async def _end(self) -> None:
        self._close_direct()
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        if self._sock is not None:
            self._stopped(self._sock)
        process, self._process = self._process, None
        if process is not None:
            await asyncio.get_running_loop().run_in_executor(None, _join, process)


def _append_request(
    entries: Sequence[LogEntry], nodes: Sequence[TreeNode], carried: Sequence[CarriedWrite]
) -> tuple[Any, ...]:
    log = entries[0].log
    nodes_of = [(log, *node) for node in nodes]
    request = ("append", log, entries[0].index, entry_rows(entries), nodes_of)
    return (*request, [write.request for write in carried]) if carried else request


def _sequences(value: Any, count: int, carried: Sequence[CarriedWrite]) -> list[int]:
    """The sequence numbers of an append's ``count`` entries from its answer's value; each
    carried write told whether it was written (the transaction has committed)."""
    first = value
    if carried:
        first, outcomes = value
        for write, written in zip(carried, outcomes, strict=True):
            write.written = bool(written)
    return list(range(first, first + count))


def _result(answer: tuple[str, Any]) -> Any:
    """The value of an answer, or the error it stands for."""
    kind, value = answer
    if kind == "ok":
        return value
    if kind == "position":
        raise LogPositionTaken(value)
    if kind == "conflict":
        raise Conflict(value)
    raise StoreUnavailable(f"the audit write failed: {value}")


def _connect(path: str) -> sqlite3.Connection:
    raw = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0)
    try:
        for pragma in _DIRECT_PRAGMAS:
            raw.execute(pragma)
    except sqlite3.Error:
        raw.close()
        raise
    return raw


def _spawn(command: list[str], fd: int) -> subprocess.Popen[bytes]:
    # Tether's own settings stay out of its environment: it needs none (the KEK among them).
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    return subprocess.Popen(command, pass_fds=(fd,), env=env)  # noqa: S603 - fixed args


def _join(process: subprocess.Popen[bytes]) -> None:
    try:
        process.wait(_EXIT_WAIT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def _receive(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes | None:
    """One frame from ``sock``; None at its end (or for the empty frame)."""
    header = await _exactly(loop, sock, HEADER)
    if header is None:
        return None
    size = int.from_bytes(header, "big")
    return await _exactly(loop, sock, size) if size else None


async def _exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int) -> bytes | None:
    parts, got = [], 0
    while got < size:
        part = await loop.sock_recv(sock, min(size - got, 1 << 20))
        if not part:
            return None
        parts.append(part)
        got += len(part)
    return b"".join(parts)

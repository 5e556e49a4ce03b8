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
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle  # with tether.store._sqlite_audit only, over a socket pair
import socket
import subprocess  # this interpreter, on tether.store._sqlite_audit
import sys
from collections import deque
from collections.abc import Sequence
from typing import Any

from tether.audit.stored import LogEntry
from tether.audit.tiles import TreeNode
from tether.errors import Conflict, LogPositionTaken, StoreUnavailable
from tether.store._sqlite_audit import HEADER
from tether.store.sql._audit import entry_rows

__all__ = ["AuditWriter"]

#: What the process runs, with the socket's descriptor and the database's path.
_MAIN = "from tether.store._sqlite_audit import main; main()"
#: How long closing waits for the process to exit before it is killed.
_EXIT_WAIT = 5.0


class AuditWriter:
    """Audit appends for the SQLite database at ``path``, in a process of their own."""

    def __init__(self, path: str) -> None:
        self._path = path
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

    async def append(self, entries: Sequence[LogEntry], nodes: Sequence[TreeNode]) -> list[int]:
        """Write ``entries`` and ``nodes`` in one transaction; their sequence numbers.
        :class:`LogPositionTaken`, ``Conflict`` or ``StoreUnavailable`` as the in-process
        append. Batches are written in the order this is called."""
        log = entries[0].log
        nodes_of = [(log, *node) for node in nodes]
        first = await self._ask(("append", log, entries[0].index, entry_rows(entries), nodes_of))
        return list(range(first, first + len(entries)))

    async def add_checkpoint(self, values: tuple[Any, ...]) -> None:
        """Store a checkpoint (:func:`~tether.store.sql._audit.sqlite_checkpoint_values`)
        after the batches sent before it, on the same connection: never waiting for the
        appends' write lock, nor making them wait for its own."""
        await self._ask(("checkpoint", values))

    async def _ask(self, request: tuple[Any, ...]) -> Any:
        if self._sock is None:
            await self.start()
        answer: asyncio.Future[tuple[str, Any]] = asyncio.get_running_loop().create_future()
        # Both at once, with no wait between: answers come in the order the frames go.
        self._waiting.append(answer)
        self._outgoing.put_nowait(pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL))
        kind, value = await answer
        if kind == "ok":
            return value
        if kind == "position":
            raise LogPositionTaken(value)
        if kind == "conflict":
            raise Conflict(value)
        raise StoreUnavailable(f"the audit writer process failed: {value}")

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
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        if self._sock is not None:
            self._stopped(self._sock)
        process, self._process = self._process, None
        if process is not None:
            await asyncio.get_running_loop().run_in_executor(None, _join, process)


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

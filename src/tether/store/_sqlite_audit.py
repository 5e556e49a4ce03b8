"""The audit log's statements on SQLite's own driver, and the audit writer process.

Standard library and :mod:`tether.errors` only: the writer process
(:mod:`tether.store.sql._audit_writer`) runs :func:`main` in a fresh interpreter, and this
module is all it imports, so it starts in tens of milliseconds, not the seconds the SQL
store's modules take. The server's own SQLite store runs the same statements in its worker
thread (:mod:`tether.store.sql._audit`), so both write exactly alike.

The statements: the log's end and the last sequence number in one SELECT, then the rows in
multi-row INSERTs, each bound in C and run by SQLite without the GIL (executemany takes it
back after every row); through SQLAlchemy's statement handling the same statements cost
about 15% of the append rate (measured alternately).

The process answers requests in the order they came, each in a savepoint of a transaction
(``BEGIN IMMEDIATE`` … ``COMMIT``) that also holds every request already waiting when it
began — group commit across batches, and the checkpoints in the same fsync as a batch. A
refused request rolls back its savepoint only (a batch built on it is then refused too: it
does not start at the log's end). An append may carry other writes of the server's store (a
lease stored with the record of its issuance): each a statement and its parameters, compiled
by the store for this driver (:class:`CarriedWrite`), run after the rows in a savepoint of
its own; whether each changed exactly one row comes back with the answer, and a write that
fails is rolled back alone (the server's store then writes it the usual way, which tells
why). It stops at an empty frame or when the server's end of its
socket closes (after the transaction under way). Frames: a 4-byte
big-endian length, then a pickle — between this module and the server that started it, over
a socket pair no one else holds.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import pickle
import select
import socket
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from tether.errors import Conflict, LogPositionTaken

__all__ = [
    "APPEND_COLUMNS",
    "BUSY_TIMEOUT_MS",
    "CHECKPOINTS",
    "GROUP",
    "HEADER",
    "NODES",
    "PRAGMAS",
    "RECORDS",
    "CarriedWrite",
    "add_checkpoint",
    "answer_unless_busy",
    "append_rows",
    "begin_immediate",
    "check_end",
    "is_busy",
    "main",
    "other_root",
    "read_frame",
    "serve",
    "write_frame",
]

#: How long a SQLite writer waits for another writer's lock before giving up.
BUSY_TIMEOUT_MS = 10_000
#: Every connection to the embedded store runs these first.
PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
)
#: While another connection holds the write lock, :func:`begin_immediate` tries again after
#: these pauses (seconds; the last one repeats).
LOCK_POLL = (0.0001, 0.0002, 0.0005, 0.001)
#: The tables, as ``tether.store.sql.tables`` names them (a test holds the two equal).
RECORDS, NODES, CHECKPOINTS = "audit_records", "audit_tree_nodes", "audit_checkpoints"
#: The columns an appended record fills: the entry is the record; the others index it.
APPEND_COLUMNS = ("sequence", "id", "type", "correlation_id", "log", "log_index", "entry", "chain")
#: Rows per multi-row INSERT at most (8 parameters each; SQLite allows 32,766 a statement).
ROWS_PER_INSERT = 128
HEADER = 4
#: Requests the process commits together at most, when they are waiting already.
GROUP = 8

_ENDS = (
    f"SELECT (SELECT max(log_index) FROM {RECORDS} WHERE log = ?),"  # noqa: S608
    f" (SELECT coalesce(max(sequence), 0) FROM {RECORDS})"
)
_NODE = f"INSERT INTO {NODES} (log, level, idx, hash) VALUES (?, ?, ?, ?)"  # noqa: S608
_CHECKPOINT = f"SELECT root FROM {CHECKPOINTS} WHERE log = ? AND size = ?"  # noqa: S608
_ADD_CHECKPOINT = (
    f"INSERT INTO {CHECKPOINTS} (log, size, root, note, signed_at)"  # noqa: S608
    " VALUES (?, ?, ?, ?, ?)"
)


def check_end(log: str, last: int | None, first: int) -> None:
    """:class:`LogPositionTaken` unless the log ``log`` ends at ``first - 1``."""
    if (-1 if last is None else int(last)) != first - 1:
        raise LogPositionTaken(
            f"audit log {log!r} ends at {last}, not {first - 1}: another writer appends to it",
            details={"log": log},
        )


def _primary_code(exc: BaseException) -> int:
    """SQLite's primary result code of ``exc``, raw or as SQLAlchemy wraps it; 0 for any
    other error. Extended codes (``SQLITE_BUSY_SNAPSHOT``, …) carry it in their low byte."""
    cause = getattr(exc, "orig", exc)
    code = getattr(cause, "sqlite_errorcode", 0) if isinstance(cause, sqlite3.Error) else 0
    return int(code) & 0xFF


def is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite's "another connection holds the lock" (``SQLITE_BUSY`` or
    ``SQLITE_LOCKED``, extended codes included), raw or as SQLAlchemy wraps it."""
    return _primary_code(exc) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def begin_immediate(
    raw: sqlite3.Connection,
    *,
    begin: Callable[[], object] | None = None,
    timeout: float | None = None,
) -> None:
    """``BEGIN IMMEDIATE`` on ``raw`` (run by ``begin`` if given: SQLAlchemy's connection
    runs it for the store, and wraps its errors), waiting for another connection's write
    lock at most ``timeout`` seconds — by default the connection's busy timeout — then
    raising the busy error with no transaction open. Any other error is raised at once.

    SQLite's own busy handler is not told when a lock is released: it sleeps 1, 2, 5, 10,
    15 ms… between tries, so a writer that finds the lock taken waits at least 1 ms, and
    often 8 or 18, for a commit that takes about 0.3 ms here. So the lock is tried after
    each of :data:`LOCK_POLL` instead, with the connection's busy timeout at 0 meanwhile and
    set back after: every other statement still waits as configured (a WAL reader may meet
    a checkpoint). Measured by ``bench/bench_sqlite_write_lock.py`` on this project's 2-core
    VM, a writer beside another committing back to back: its wait's p99 went from 18.4 ms
    to 0.46 ms, and its commits from 578/s to 891/s."""
    (configured,) = raw.execute("PRAGMA busy_timeout").fetchone()
    configured = int(configured)
    deadline = time.monotonic() + (configured / 1000 if timeout is None else timeout)
    run = begin or functools.partial(raw.execute, "BEGIN IMMEDIATE")
    raw.execute("PRAGMA busy_timeout=0")
    try:
        for attempt in itertools.count():
            try:
                run()
            except Exception as exc:
                # SQLITE_BUSY alone: what SQLite's busy handler would wait out.
                if _primary_code(exc) != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                    raise
            else:
                return
            time.sleep(LOCK_POLL[min(attempt, len(LOCK_POLL) - 1)])
    finally:
        try:
            raw.execute(f"PRAGMA busy_timeout={configured}")
        except BaseException:
            # Never leave the write lock held behind an error: every writer would wait.
            if raw.in_transaction:
                raw.execute("ROLLBACK")
            raise


def append_rows(
    raw: sqlite3.Connection,
    log: str,
    first: int,
    rows: Sequence[tuple[Any, ...]],
    nodes: Sequence[tuple[str, int, int, bytes]],
) -> int:
    """Append ``rows`` (``APPEND_COLUMNS`` after ``sequence``: entries ``first`` onwards of
    ``log``) and the subtree ``nodes`` in the transaction the caller holds; the first row's
    sequence number. :class:`LogPositionTaken` if the log does not end before ``first``;
    ``Conflict`` if a record id is taken."""
    last, top = raw.execute(_ENDS, (log,)).fetchone()
    check_end(log, last, first)
    try:
        at = 0
        for size in _sizes(len(rows)):
            numbered = enumerate(rows[at : at + size], top + 1 + at)
            raw.execute(_insert(size), [v for n, row in numbered for v in (n, *row)])
            at += size
        if nodes:
            raw.executemany(_NODE, nodes)
    except sqlite3.IntegrityError:
        raise Conflict("an audit record of the batch was appended already") from None
    return int(top) + 1


def add_checkpoint(raw: sqlite3.Connection, values: Sequence[Any]) -> None:
    """Store the checkpoint ``(log, size, root, note, signed_at)`` in the transaction the
    caller holds; ``Conflict`` if one of that size with another root is stored."""
    log, size, root = values[:3]
    stored = raw.execute(_CHECKPOINT, (log, size)).fetchone()
    if stored is None:
        raw.execute(_ADD_CHECKPOINT, tuple(values))
    elif bytes(stored[0]) != root:
        raise other_root(log, size)


def other_root(log: str, size: int) -> Conflict:
    return Conflict(
        f"a checkpoint of {log!r} at size {size} with another root is stored already",
        details={"log": log, "size": size},
    )


def _sizes(count: int) -> list[int]:
    """``count`` rows as statements of powers of two (at most ``ROWS_PER_INSERT``), so a few
    statement texts serve every batch size and stay in the driver's statement cache."""
    sizes, size = [], ROWS_PER_INSERT
    while count:
        while size > count:
            size //= 2
        sizes.append(size)
        count -= size
    return sizes


@functools.lru_cache(maxsize=16)
def _insert(rows: int) -> str:
    columns = ", ".join(APPEND_COLUMNS)
    values = ", ".join(["(" + ", ".join("?" * len(APPEND_COLUMNS)) + ")"] * rows)
    return f"INSERT INTO {RECORDS} ({columns}) VALUES {values}"  # noqa: S608


# -- the writer process --------------------------------------------------------------------


def main() -> None:
    """The process's entry point: ``<socket descriptor> <database path>``."""
    fd, path = sys.argv[1:3]
    serve(path, socket.socket(fileno=int(fd)))


def serve(path: str, sock: socket.socket) -> None:
    """Open the database, then answer each request, until told to stop or the server's end
    of the socket closes."""
    try:
        raw = sqlite3.connect(path, isolation_level=None, cached_statements=256)
        for pragma in PRAGMAS:
            raw.execute(pragma)
    except sqlite3.Error as exc:
        write_frame(sock, pickle.dumps(("failed", str(exc))))
        return
    write_frame(sock, pickle.dumps(("ready", None)))
    with contextlib.closing(raw), contextlib.closing(sock):
        going = True
        while going:
            group, going = _group(sock)
            for answer in _answer(raw, group) if group else ():
                write_frame(sock, pickle.dumps(answer))


def _group(sock: socket.socket) -> tuple[list[tuple[Any, ...]], bool]:
    """The next request and every other one already waiting (at most ``GROUP``): one
    transaction, one fsync for them all; and False once told to stop or at the socket's
    end (what came before is still answered)."""
    group: list[tuple[Any, ...]] = []
    while len(group) < GROUP and (not group or select.select([sock], [], [], 0)[0]):
        frame = read_frame(sock)
        if not frame:
            return group, False
        group.append(pickle.loads(frame))  # noqa: S301
    return group, True


def _answer(raw: sqlite3.Connection, group: list[tuple[Any, ...]]) -> list[tuple[str, Any]]:
    """Each request (``("append", log, first, rows, nodes)`` or ``("checkpoint", values)``)
    in a savepoint of one transaction: ``("ok", value)``, or its refusal (its savepoint
    rolled back, the others kept). If the transaction fails, every request fails."""
    try:
        begin_immediate(raw)
    except Exception as exc:  # noqa: BLE001 - answered; the server decides
        return [_failed(exc)] * len(group)
    return _commit(raw, group)


def answer_unless_busy(
    raw: sqlite3.Connection, group: list[tuple[Any, ...]]
) -> list[tuple[str, Any]] | None:
    """:func:`_answer`, or None without waiting when another connection holds the write
    lock (``raw``'s busy timeout 0): the caller hands the requests to a writer that may
    wait."""
    try:
        raw.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if is_busy(exc):
            return None
        return [_failed(exc)] * len(group)
    return _commit(raw, group)


def _commit(raw: sqlite3.Connection, group: list[tuple[Any, ...]]) -> list[tuple[str, Any]]:
    """The requests in the transaction just begun, each in a savepoint, then the commit."""
    answers: list[tuple[str, Any]] = []
    try:
        for request in group:
            raw.execute("SAVEPOINT request")
            try:
                answers.append(("ok", _do(raw, request)))
            except LogPositionTaken as exc:
                answers.append(("position", exc.message))
                raw.execute("ROLLBACK TO request")
            except Conflict as exc:
                answers.append(("conflict", exc.message))
                raw.execute("ROLLBACK TO request")
            raw.execute("RELEASE request")
        raw.execute("COMMIT")
    except Exception as exc:  # noqa: BLE001 - answered; the server decides
        if raw.in_transaction:
            raw.execute("ROLLBACK")
        return [_failed(exc)] * len(group)
    return answers


def _failed(exc: Exception) -> tuple[str, str]:
    return ("error", f"{type(exc).__name__}: {exc}")


def _do(raw: sqlite3.Connection, request: tuple[Any, ...]) -> Any:
    """An append's first sequence number (with the carried writes' outcomes, when it carries
    any: ``(first, [written, …])``); None for a checkpoint."""
    if request[0] == "append":
        first = append_rows(raw, *request[1:5])
        if len(request) > 5:
            return first, [_carried(raw, *write) for write in request[5]]
        return first
    add_checkpoint(raw, request[1])
    return None


def _carried(raw: sqlite3.Connection, statement: str, params: Sequence[Any]) -> bool:
    """Whether the carried write changed exactly one row; if it failed, it is rolled back
    alone and the batch commits all the same."""
    raw.execute("SAVEPOINT carried")
    try:
        written = raw.execute(statement, params).rowcount == 1
    except sqlite3.Error:
        raw.execute("ROLLBACK TO carried")
        written = False
    raw.execute("RELEASE carried")
    return written


class CarriedWrite:
    """A write of the server's store that an audit append carries into its transaction:
    ``statement`` and ``params`` as SQLite's driver takes them (the store compiles them). A
    write that changes exactly one row is ``written`` once the transaction has committed; one
    that is not (the row moved, or the write failed and was rolled back alone) is for the
    store to write the usual way, which tells why."""

    __slots__ = ("params", "statement", "written")

    def __init__(self, statement: str, params: tuple[Any, ...]) -> None:
        self.statement, self.params = statement, params
        self.written = False

    @property
    def request(self) -> tuple[str, tuple[Any, ...]]:
        """What the append request carries: the statement and its parameters."""
        return self.statement, self.params


def write_frame(sock: socket.socket, frame: bytes) -> None:
    sock.sendall(len(frame).to_bytes(HEADER, "big") + frame)


def read_frame(sock: socket.socket) -> bytes | None:
    """The next frame; None at the socket's end. An empty frame asks the process to stop."""
    header = _exactly(sock, HEADER)
    if header is None:
        return None
    size = int.from_bytes(header, "big")
    return _exactly(sock, size) if size else b""


def _exactly(sock: socket.socket, size: int) -> bytes | None:
    parts, got = [], 0
    while got < size:
        part = sock.recv(min(size - got, 1 << 20))
        if not part:
            return None
        parts.append(part)
        got += len(part)
    return b"".join(parts)

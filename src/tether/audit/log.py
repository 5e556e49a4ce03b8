"""The tamper-evident audit log: the :class:`AuditSink` every decision and change goes through.

Each replica appends to a log of its own (its *origin*, ``<issuer host>/audit/<replica id>``;
see :mod:`tether.audit.chain` for the entry format, the hash chain and the Merkle tree).
:class:`AuditLog` keeps the log's end in memory — its size, chain head and the Merkle tree's
peaks (:class:`~tether.audit.merkle.CompactTree`) — and for every batch of records it

1. builds each record's entry, leaf, chain head, and the perfect subtrees of 2^8 leaves or
   more that the batch completes (stored, so a proof for one record of a million reads a few
   dozen hashes: :mod:`tether.audit.tiles`);
2. writes them in one transaction (group commit: records that arrive while a commit is under
   way share the next one), and only then answers each caller. With ``depth=2`` (the server
   on SQLite, whose commits run in a process of their own) the next batch is built on top
   of one still committing and handed over behind it; if that one fails, the next is
   refused by the store and its records are written again. A record still alone after one
   turn of the event loop, while the log is idle, is written by its caller's task when the
   store can commit it on this thread (SQLite's audit writer can): no writer task, no
   store task, no more turns;
3. signs a checkpoint (C2SP ``tlog-checkpoint`` in a signed note, :mod:`tether.audit.notes`)
   once 1,000 records are unsigned or a second has passed, stores it and hands it to the
   witnesses: copies kept away from the database, so cutting off the newest records and their
   checkpoints is still found.

The signing key is the key ring's Ed25519 audit key: sealed in the database by the
key-encryption key, which the database does not hold.

**Fail closed.** ``append`` raises when its record is not durable, and callers refuse what
they were about to do (the checkpoint denies within its 2 s audit timeout). A write that fails
marks the in-memory end stale: the next write first reads the end back from the store (the
failed commit may have landed), so service resumes by itself when the store is back.
Failures and the recovery are reported to ``on_problem`` (monitoring turns them into alerts).

**Opening checks the tail** (:mod:`tether.audit.tail`). The database commits a batch whole,
so a crash cannot leave half an entry; a tail that does not verify was changed by someone,
and it is never accepted: the log refuses every append (:class:`~tether.errors.AuditLogInvalid`,
decisions deny) until an operator restores it, while the records stay readable.

Example::

    >>> import asyncio
    >>> from datetime import UTC, datetime
    >>> from tether.audit.records import AuditRecord
    >>> from tether.store.memory import MemoryStore
    >>> from tether._internal.clock import FixedClock
    >>> from tether.crypto.keyring import AuditSigner
    >>> from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    >>> async def main():
    ...     clock = FixedClock(datetime(2026, 1, 1, tzinfo=UTC))
    ...     signer = AuditSigner(Ed25519PrivateKey.generate(), kid="k")
    ...     log = await AuditLog(store=MemoryStore(clock=clock), origin="acme/audit/r1",
    ...                          key_name="acme/audit", signer=signer, clock=clock).start()
    ...     record = AuditRecord.new(type="agent.registered", actor="operator:a", subject=None,
    ...                              time=clock.now())
    ...     receipt = await log.append(record)
    ...     head = await log.sign()
    ...     await log.close()
    ...     return receipt.index, head.size
    >>> asyncio.run(main())
    (0, 1)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from tether._internal.clock import Clock
from tether.audit.chain import LogInvalid, genesis
from tether.audit.merkle import CompactTree
from tether.audit.notes import TreeHead, open_note, sign_note, verifier_key
from tether.audit.records import AuditReceipt, AuditRecord
from tether.audit.stored import (
    AuditLogStore,
    LogEntry,
    NoteSigner,
    SignedCheckpoint,
    Witness,
    build_entries,
)
from tether.audit.tail import check_tail
from tether.audit.tiles import MissingHash, TreeNode
from tether.errors import (
    AuditLogInvalid,
    AuditUnavailable,
    Conflict,
    InvalidInput,
    LogPositionTaken,
)

__all__ = ["AuditLog"]

#: At most this many records share one commit.
MAX_BATCH = 512
#: With nothing in the store's hands and ``depth`` > 1, a backlog this large or larger is
#: split in two.
SPLIT = 64
#: How often opening retries adopting older records when another replica raced it.
ADOPT_TRIES = 5
#: A witness gets this long to take a checkpoint.
WITNESS_TIMEOUT = 2.0


Problem = Callable[[str, Mapping[str, object]], None]
#: A record and the future its caller waits on.
_Waiting = tuple[AuditRecord, "asyncio.Future[AuditReceipt]"]


@dataclass(slots=True)
class _Batch:
    """Records on their way into the log, built on top of its end (or of the batch handed
    to the store before them): their entries, the subtrees they complete, the tree and chain
    head after them, and once handed to the store, the write."""

    waiting: list[_Waiting]
    entries: list[LogEntry]
    nodes: list[TreeNode]
    tree: CompactTree
    chain: bytes
    #: The store's writes its records carry (see :meth:`AuditLog.append`), in their order.
    carried: tuple[object, ...] = ()
    written: asyncio.Future[list[int]] | None = None


def _ignore(_kind: str, _details: Mapping[str, object]) -> None:
    return None


def _carries_writes(store: object) -> bool:
    """Whether ``store``'s appends carry writes of its own now (``SqlStore.carries_writes``)."""
    can = getattr(store, "carries_writes", None)
    return can is not None and bool(can())


class AuditLog:
    """This replica's log (see the module docstring): ``await AuditLog(...).start()``."""

    def __init__(
        self,
        *,
        store: AuditLogStore,
        origin: str,
        key_name: str,
        signer: NoteSigner,
        clock: Clock,
        witnesses: Sequence[Witness] = (),
        checkpoint_every: int = 1000,
        checkpoint_seconds: float = 1.0,
        on_problem: Problem = _ignore,
        on_change: Callable[[AuditRecord], object] | None = None,
        depth: int = 1,
    ) -> None:
        TreeHead(origin=origin, size=0, root=bytes(32)).body()  # a valid origin, or raise
        self.origin = origin
        self.key_name = key_name
        self._store = store
        self._signer = signer
        self._public = signer.public_raw()
        self.verifier_key = verifier_key(key_name, self._public)
        self._clock = clock
        self._witnesses = tuple(witnesses)
        self._every = checkpoint_every
        self._seconds = checkpoint_seconds
        self._on_problem = on_problem
        #: Told of every durable record but decisions (the checkpoint publishes its own):
        #: the monitor's stream of state changes.
        self._on_change = on_change
        self._depth = max(1, depth)
        self._tree = CompactTree()
        self._chain = genesis(origin)
        self._signed = 0
        self._stale = True
        self._failing = False
        self.invalid: LogInvalid | None = None
        self._pending: list[_Waiting] = []
        #: The store's write each record carries, by record id, until its append returns.
        self._carries: dict[str, object] = {}
        self._inflight: deque[_Batch] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._signing = asyncio.Lock()
        self._due = asyncio.Event()
        self._checkpointer: asyncio.Task[None] | None = None

    async def start(self) -> AuditLog:
        """This log, its tail checked (see the module docstring), records stored before it
        adopted, and its checkpointer running. Store errors raise; a tail that does not
        verify leaves the log open but refusing appends (``invalid``)."""
        await self._load()
        for _ in range(ADOPT_TRIES):
            if self.invalid is not None:
                break
            try:
                await self._adopt()
            except LogPositionTaken:  # another replica adopted them first: read the end again
                await self._load()
                continue
            await self.sign()
            break
        self._checkpointer = asyncio.create_task(self._run(), name="tether-audit-checkpoints")
        return self

    @property
    def size(self) -> int:
        return self._tree.size

    @property
    def signed_size(self) -> int:
        return self._signed

    @property
    def backlog(self) -> tuple[int, datetime | None]:
        """For monitoring: how many records were accepted but are not durable yet, and the
        time of the oldest of them (None when there is none)."""
        waiting = [r for b in self._inflight for r, f in b.waiting if not f.done()]
        waiting += [r for r, f in self._pending if not f.done()]
        return len(waiting), min((r.time for r in waiting), default=None)

    async def witnessed(self, logs: Sequence[str]) -> dict[str, list[bytes]]:
        """The newest checkpoint each witness holds of each of ``logs``."""
        found: dict[str, list[bytes]] = {}
        for witness in self._witnesses:
            for log in logs:
                note = await witness.latest(log)
                if note is not None:
                    found.setdefault(log, []).append(note)
        return found

    def open_checkpoint(self, note: bytes) -> TreeHead:
        """The tree head of ``note`` if this log's key signed it; :class:`NoteInvalid`."""
        signer = self._signer
        body = open_note(
            note,
            name=self.key_name,
            public_key=self._public,
            verify=lambda _key, message, signature: signer.verify(message, signature),
        )
        return TreeHead.parse(body)

    # -- appending -------------------------------------------------------------------------

    async def append(self, record: AuditRecord, *, carrying: object = None) -> AuditReceipt:
        """``record`` made durable; its receipt. ``carrying``: see :meth:`append_with`."""
        self._refuse_if_invalid()
        future: asyncio.Future[AuditReceipt] = asyncio.get_running_loop().create_future()
        if carrying is not None and _carries_writes(self._store):
            self._carries[record.id] = carrying
        try:
            self._pending.append((record, future))
            if self._idle():
                await self._alone(future)
            if not future.done() and (self._writer is None or self._writer.done()):
                # A task of its own: a caller that gives up (is cancelled) cannot stop the
                # writes that other callers are waiting for.
                self._writer = asyncio.create_task(self._drain(), name="tether-audit-writer")
            receipt = await future
        finally:
            self._carries.pop(record.id, None)
        if self._on_change is not None and record.type != "decision":
            self._on_change(record)
        return receipt

    async def append_with(self, record: AuditRecord, write: object) -> AuditReceipt:
        """:meth:`append`, with ``write``, a change of the store's own that the record's
        transaction can carry (``SqlStore.lease_create_carried``: a lease and the record of
        its issuance), written in that transaction — both or neither, and one commit shared
        with whatever records are committed with it — when the store can; the write says
        whether it went in (``written``). Where the store cannot, or the write did not take,
        the caller makes it apart."""
        return await self.append(record, carrying=write)

    async def append_carrying(
        self, records: Sequence[AuditRecord], write: object
    ) -> list[AuditReceipt] | None:
        """``records`` made durable in one transaction with ``write``, a change of the store's
        own that its appends can carry (``SqlStore.lease_save_carried``): a lease and the
        records of its change, both or neither, in one commit. Only while the log is idle and
        its store can write them now on this thread (SQLite's audit writer, as for a record
        alone: :meth:`_alone`); None otherwise, with nothing written — append the records
        and make the change apart then."""
        self._refuse_if_invalid()
        if self._pending or not self._idle() or not records:
            return None
        loop = asyncio.get_running_loop()
        waiting: list[_Waiting] = [(record, loop.create_future()) for record in records]
        # Idle: the log's end is known, so nothing below waits, and no other batch can be
        # built or handed to the store before this one is written.
        self._carries[records[0].id] = write
        try:
            batch = await self._batch(waiting, on=None)
            if batch is not None:
                if not self._written_here(batch):
                    for _, future in waiting:  # a record refused while building: seen
                        if future.done():
                            future.exception()
                    return None
                await self._land(batch)
        finally:
            self._carries.pop(records[0].id, None)
        receipts = _retrieved_all(waiting)
        if self._on_change is not None:
            for record in records:
                if record.type != "decision":
                    self._on_change(record)
        return receipts

    def _refuse_if_invalid(self) -> None:
        if self.invalid is not None:
            raise AuditLogInvalid(
                f"the audit log does not verify ({self.invalid}); nothing is recorded",
                details={"log": self.origin, "index": self.invalid.index},
            )

    def _idle(self) -> bool:
        """Whether no writer is at work, nothing is in the store's hands, the log's end is
        known, and the store can write a record on this thread now (see :meth:`_alone`)."""
        if (self._writer is not None and not self._writer.done()) or self._inflight:
            return False
        can = getattr(self._store, "can_append_audit_now", None)
        return not self._stale and can is not None and bool(can())

    async def _alone(self, future: asyncio.Future[AuditReceipt]) -> None:
        """The record of ``future``, pending while the log is idle, written here if it is
        still the only one after a turn of the event loop (callers ready now add theirs in
        that turn, and then the writer task commits them together): no writer task, no
        store task, no more turns — the path of a record written alone."""
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            future.cancel()  # its caller gave up before anything was written
            raise
        if len(self._pending) != 1 or self._pending[0][1] is not future or not self._idle():
            return
        waiting = self._pending.pop()
        batch = await self._batch([waiting], on=None)  # the end is known: no wait here
        if batch is None:
            return  # the record was refused; its caller has the error
        if self._written_here(batch):
            await self._land(batch)  # the outcome is in: answers at once
        else:
            self._pending.append(waiting)  # the writer task takes it

    async def _drain(self) -> None:
        """Write what is pending until nothing is. Up to ``depth`` batches are in the store's
        hands at once, each built on top of the one before it, so that with a store that
        commits off the event loop's interpreter (SQLite's audit writer process) the next
        batch is built, and its callers woken, while the one before commits."""
        inflight = self._inflight = deque()
        try:
            while True:
                while len(inflight) < self._depth:
                    batch = await self._next(on=inflight[-1] if inflight else None)
                    if batch is None:
                        break
                    if not inflight and self._written_here(batch):
                        inflight.append(batch)  # in ``inflight`` while it lands
                        await self._land(batch)  # written: answers its callers at once
                        inflight.popleft()
                        await asyncio.sleep(0)  # they append their next records
                        continue
                    self._submit(batch)
                    inflight.append(batch)
                    await asyncio.sleep(0)  # the write starts before the next batch is built
                if not inflight:
                    return
                landed = await self._land(inflight[0])  # in ``inflight`` while it lands
                inflight.popleft()
                if not landed:
                    await self._rebuild(inflight)
                await asyncio.sleep(0)  # the callers just answered append their next records
        except BaseException as exc:
            self._abandon(exc, *inflight)
            if not isinstance(exc, Exception):
                raise  # cancellation and interpreter exit go on

    def _abandon(self, exc: BaseException, *batches: _Batch) -> None:
        """Whatever stopped the writer, nobody may wait forever: every waiting caller gets
        the error (its own ``append`` raises it, so nothing goes unreported), and the next
        writer reads the end back (a write under way may land all the same)."""
        self._stale = True
        failure = exc if isinstance(exc, Exception) else AuditUnavailable("writer stopped")
        waiting = [w for batch in batches for w in batch.waiting]
        for _, future in [*waiting, *self._pending]:
            _settle(future, failure)
        self._pending = []

    async def _rebuild(self, inflight: deque[_Batch]) -> None:
        """The batch before ``inflight`` did not land as built, so the store refuses these
        (built on it, they do not start at its end); then their records are written again."""
        again: list[_Waiting] = []
        while inflight:
            batch = inflight.popleft()
            assert batch.written is not None
            try:
                await batch.written
            except Exception:  # noqa: BLE001, S110 - expected: built on what did not land
                pass
            else:  # the store wrote entries after a gap: never write on top of that
                self._refuse(LogInvalid(batch.entries[0].index, "written after a gap"))
            again += batch.waiting
        self._pending[:0] = again
        self._stale = True  # the next batch is built on the end as the store has it

    async def _next(self, *, on: _Batch | None) -> _Batch | None:
        """The next batch of pending records built on top of ``on`` (None: of the log's
        end), or None when nothing is pending. With nothing in the store's hands, a large
        backlog is split in two, so that the second half is built while the first commits."""
        while self._pending:
            # A caller that gave up (timed out, was cancelled) answered without its record;
            # writing it now would claim an outcome that did not happen.
            live = [(r, f) for r, f in self._pending if not f.done()]
            split = on is None and self._depth > 1 and len(live) >= SPLIT
            take = min(MAX_BATCH, len(live) // 2) if split else MAX_BATCH
            waiting, self._pending = live[:take], live[take:]
            if waiting and (batch := await self._batch(waiting, on=on)) is not None:
                return batch
        return None

    async def _batch(self, waiting: list[_Waiting], *, on: _Batch | None) -> _Batch | None:
        """``waiting`` built into a batch on top of ``on`` (None: of the log's end); None if
        none of it could be (its callers are answered)."""
        try:
            if on is None:
                await self._ready()
                tree, chain = self._tree.copy(), self._chain
            else:
                tree, chain = on.tree.copy(), on.chain
        except Exception as exc:  # noqa: BLE001 - handed to every waiter
            self._failed(exc, waiting)
            return None
        refused: list[tuple[int, InvalidInput]] = []
        records = [r for r, _ in waiting]
        entries, nodes, chain = build_entries(records, self.origin, tree, chain, refused)
        if refused:  # those records' fault (JSON cannot carry them): they alone fail
            waiting = _answer_refused(waiting, refused)
        if not waiting:
            return None
        carries = self._carries
        carried = tuple(carries[r.id] for r, _ in waiting if r.id in carries) if carries else ()
        return _Batch(
            waiting=waiting, entries=entries, nodes=nodes, tree=tree, chain=chain, carried=carried
        )

    def _written_here(self, batch: _Batch) -> bool:
        """Whether the store wrote ``batch`` (with the writes it carries) before returning,
        on this thread, as it does when that is cheap (SQLite's audit writer: a lone record
        while its process is idle; ``append_audit_entries_now``); ``batch.written`` holds
        the outcome then. It saves the store's task and a turn of the event loop on each
        record written alone."""
        now = getattr(self._store, "append_audit_entries_now", None)
        if now is None:
            return False
        written: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        carried = {"carried": batch.carried} if batch.carried else {}
        try:
            sequences = now(batch.entries, batch.nodes, **carried)
        except Exception as exc:  # noqa: BLE001 - read by _land, as a write task's would be
            written.set_exception(exc)
        else:
            if sequences is None:
                return False
            written.set_result(sequences)
        batch.written = written
        return True

    def _submit(self, batch: _Batch) -> None:
        """Hand ``batch`` to the store; :meth:`_land` reads the outcome."""
        # ``carried`` only for a store that carries writes (``_carries_writes``): not in the
        # protocol every audit store follows.
        append: Callable[..., Awaitable[list[int]]] = self._store.append_audit_entries
        carried = {"carried": batch.carried} if batch.carried else {}
        batch.written = asyncio.ensure_future(append(batch.entries, batch.nodes, **carried))
        batch.written.add_done_callback(_retrieved)

    async def _land(self, batch: _Batch) -> bool:
        """Wait for ``batch``'s write and answer its callers; whether it landed as built."""
        assert batch.written is not None
        try:
            sequences = await batch.written
        except Conflict as exc:
            if isinstance(exc, LogPositionTaken) or len(batch.waiting) == 1:
                self._failed(exc, batch.waiting)
            else:
                for one in batch.waiting:  # one record was refused: find it, write the others
                    if (alone := await self._batch([one], on=None)) is not None:
                        self._submit(alone)
                        await self._land(alone)
            return False
        except Exception as exc:  # noqa: BLE001 - handed to every waiter
            self._failed(exc, batch.waiting)
            return False
        self._tree, self._chain = batch.tree, batch.chain
        if self._failing:
            self._failing = False
            self._on_problem("audit.sink_recovered", {"log": self.origin})
        for (_, future), entry, sequence in zip(
            batch.waiting, batch.entries, sequences, strict=True
        ):
            _settle(
                future,
                AuditReceipt(record_id=entry.record.id, sequence=sequence, index=entry.index),
            )
        if self._tree.size - self._signed >= self._every:
            self._due.set()
        return True

    async def _ready(self) -> None:
        """After a failed write, the end as the store has it (the commit may have landed)."""
        if self._stale:
            await self._load()
        if self.invalid is not None:
            raise AuditLogInvalid(f"the audit log does not verify ({self.invalid})")

    def _failed(
        self, exc: Exception, batch: Sequence[tuple[AuditRecord, asyncio.Future[AuditReceipt]]]
    ) -> None:
        # The commit may have landed all the same: read the end again before the next write.
        self._stale = True
        if not self._failing:
            self._failing = True
            code = getattr(exc, "code", type(exc).__name__)
            self._on_problem("audit.sink_failed", {"log": self.origin, "error": code})
        failure = (
            exc
            if isinstance(exc, (Conflict, AuditUnavailable))
            else AuditUnavailable(
                "the audit record could not be made durable", details={"error": type(exc).__name__}
            )
        )
        for _, future in batch:
            _settle(future, failure)

    # -- checkpoints -----------------------------------------------------------------------

    async def sign(self) -> SignedCheckpoint | None:
        """Sign, store and publish a checkpoint of what is durable now, if anything is new
        since the last one; the checkpoint (None if there was nothing to sign)."""
        async with self._signing:
            size, root = self._tree.size, self._tree.root()
            if size == self._signed or self.invalid is not None or self._stale:
                return None
            body = TreeHead(origin=self.origin, size=size, root=root).body()
            note = sign_note(
                body, name=self.key_name, public_key=self._public, sign=self._signer.sign
            )
            checkpoint = SignedCheckpoint(
                log=self.origin, size=size, root=root, note=note, signed_at=self._clock.now()
            )
            await self._store.add_audit_checkpoint(checkpoint)
            self._signed = size
        for witness in self._witnesses:
            try:
                async with asyncio.timeout(WITNESS_TIMEOUT):
                    await witness.publish(checkpoint)
            except Exception as exc:  # noqa: BLE001 - reported; the next checkpoint retries
                details = {"log": self.origin, "witness": witness.name, "error": type(exc).__name__}
                self._on_problem("audit.witness_failed", details)
        return checkpoint

    async def _run(self) -> None:
        """Until cancelled: a checkpoint when 1,000 records are unsigned, or each second."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._seconds):
                    await self._due.wait()
            self._due.clear()
            try:
                await self.sign()
            except Exception as exc:  # noqa: BLE001 - reported; tried again next round
                self._on_problem(
                    "audit.checkpoint_failed", {"log": self.origin, "error": type(exc).__name__}
                )

    async def close(self) -> None:
        """Stop the checkpointer, then sign what is left (if the store still answers)."""
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpointer
            self._checkpointer = None
        if self._writer is not None and not self._writer.done():
            with contextlib.suppress(Exception):
                await self._writer
        with contextlib.suppress(Exception):
            await self.sign()
        for witness in self._witnesses:
            closing = getattr(witness, "close", None)
            if closing is not None:
                with contextlib.suppress(Exception):
                    await closing()

    # -- opening -------------------------------------------------------------------------

    async def _load(self) -> None:
        """Read this log's end from the store and check everything after the latest signed
        checkpoint (see the module docstring); sets ``invalid`` if it does not verify."""
        end = await self._store.audit_log_end(self.origin)
        size = end.index + 1 if end is not None else 0
        try:
            start, verifier = await check_tail(
                self._store, self.origin, self._witnesses, self.open_checkpoint, size
            )
        except MissingHash as exc:
            self._refuse(LogInvalid(size, f"the log is damaged: {exc}"))
            return
        except LogInvalid as exc:
            self._refuse(exc)
            return
        self._tree, self._chain = verifier.tree, verifier.chain
        self._signed = start
        self._stale = False

    def _refuse(self, exc: LogInvalid) -> None:
        self.invalid = exc
        details = {"log": self.origin, "index": exc.index, "reason": exc.reason}
        self._on_problem("audit.log_invalid", details)

    async def _adopt(self) -> None:
        """Records written before this version chained them become entries of this log."""
        while records := await self._store.unchained_audit_records(limit=MAX_BATCH):
            tree = self._tree.copy()
            entries, nodes, chain = build_entries(records, self.origin, tree, self._chain)
            await self._store.append_audit_entries(entries, nodes, adopt=True)
            self._tree, self._chain = tree, chain


def _answer_refused(
    batch: list[_Waiting], refused: list[tuple[int, InvalidInput]]
) -> list[_Waiting]:
    """``batch`` without the records at the ``refused`` positions (their callers get the
    error)."""
    for position, error in refused:
        _settle(batch[position][1], error)
    gone = {position for position, _ in refused}
    return [waiting for position, waiting in enumerate(batch) if position not in gone]


def _retrieved(written: asyncio.Future[list[int]]) -> None:
    _ = written.cancelled() or written.exception()  # read: an abandoned write is not "lost"


def _retrieved_all(waiting: Sequence[_Waiting]) -> list[AuditReceipt]:
    """The receipts of ``waiting``, every one answered; the first error among them is
    raised, and every one is retrieved (none is reported unseen)."""
    errors = [future.exception() for _, future in waiting]
    problem = next((e for e in errors if e is not None), None)
    if problem is not None:
        raise problem
    return [future.result() for _, future in waiting]


def _settle(future: asyncio.Future[AuditReceipt], outcome: AuditReceipt | BaseException) -> None:
    if future.done():  # its caller gave up; the record is written all the same
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)

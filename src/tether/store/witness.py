"""Witnesses: copies of the audit log's signed checkpoints kept outside the database.

Someone who can write the database can cut off its newest records and their checkpoints, and
the shorter log still verifies. A checkpoint kept elsewhere shows it: the log must reach at
least the size a witness holds, with the same root (checked when the log opens,
:mod:`tether.audit.log`, and by ``tether audit verify --witness``).

* :class:`FileWitness` appends each checkpoint as one JSON line
  (``{"log", "size", "note"}``) to a file — on another volume or host, mounted append-only —
  and syncs it to disk. A crash part-way through a line leaves a torn last line: it is cut
  off when the file is opened, never read as a checkpoint; a bad line before the last is
  damage and refuses the file.
* :class:`HttpWitness` POSTs each signed note (``text/plain``) to a URL and wants a 2xx. It
  cannot be read back; the C2SP ``tlog-witness`` protocol (consistency proofs, cosignatures)
  is a later step.

Example::

    >>> import asyncio, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "witness.jsonl"
    >>> _ = path.write_bytes(b'{"log":"a","size":1,"note":"x"}\\n')
    >>> asyncio.run(FileWitness.open(path).latest("a"))
    b'x'
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import httpx
import structlog

from tether.audit.stored import SignedCheckpoint
from tether.errors import ConfigError

__all__ = ["FileWitness", "HttpWitness", "WitnessDamaged", "witnesses_from"]

log = structlog.get_logger("tether.audit.witness")
#: A line longer than this is not a checkpoint.
MAX_LINE = 70_000


class WitnessDamaged(ValueError):
    """A witness file with a bad line before its last: not a crash, damage."""


class FileWitness:
    def __init__(self, path: Path, latest: dict[str, tuple[int, bytes]]) -> None:
        self.path = path
        self.name = f"file:{path.name}"
        self._latest = latest
        self._lock = asyncio.Lock()

    @classmethod
    def open(cls, path: Path) -> FileWitness:
        """Read ``path`` (created if missing), cutting off a torn last line."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(fd, "r+b") as file:
            data = file.read()
            complete = data.rfind(b"\n") + 1
            if complete != len(data):
                log.warning("audit_witness_torn_tail", witness=path.name, cut=len(data) - complete)
                file.truncate(complete)
                file.flush()
                os.fsync(file.fileno())
        latest: dict[str, tuple[int, bytes]] = {}
        for number, line in enumerate(data[:complete].splitlines(), start=1):
            origin, size, note = _parse(line, number)
            if size >= latest.get(origin, (-1, b""))[0]:
                latest[origin] = (size, note)
        return cls(path, latest)

    async def publish(self, checkpoint: SignedCheckpoint) -> None:
        line = json.dumps(
            {"log": checkpoint.log, "size": checkpoint.size, "note": checkpoint.note.decode()},
            separators=(",", ":"),
        ).encode()
        async with self._lock:
            await asyncio.to_thread(self._append, line + b"\n")
            self._latest[checkpoint.log] = (checkpoint.size, checkpoint.note)

    def _append(self, line: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    async def latest(self, log: str) -> bytes | None:
        found = self._latest.get(log)
        return None if found is None else found[1]


def _parse(line: bytes, number: int) -> tuple[str, int, bytes]:
    damaged = WitnessDamaged(f"line {number} of the witness file is not a checkpoint")
    try:
        value = json.loads(line) if len(line) <= MAX_LINE else None
    except ValueError:
        raise damaged from None
    if not isinstance(value, dict):
        raise damaged
    origin, size, note = value.get("log"), value.get("size"), value.get("note")
    if not (isinstance(origin, str) and type(size) is int and isinstance(note, str)):
        raise damaged
    return origin, size, note.encode()


class HttpWitness:
    def __init__(self, url: str, *, client: httpx.AsyncClient | None = None) -> None:
        self.url = url
        self.name = f"http:{httpx.URL(url).host}"
        self._client = client

    async def publish(self, checkpoint: SignedCheckpoint) -> None:
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=2.0)
        response = await self._client.post(self.url, content=checkpoint.note, headers=headers)
        response.raise_for_status()

    async def latest(self, log: str) -> bytes | None:
        return None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def witnesses_from(specs: tuple[str, ...]) -> list[FileWitness | HttpWitness]:
    """A witness per setting value: an ``http(s)://`` URL, else a file path."""
    found: list[FileWitness | HttpWitness] = []
    for spec in specs:
        if spec.startswith(("http://", "https://")):
            found.append(HttpWitness(spec))
        elif spec:
            try:
                found.append(FileWitness.open(Path(spec)))
            except (OSError, WitnessDamaged) as exc:
                raise ConfigError(
                    f"the audit witness file cannot be used: {exc}",
                    details={"setting": "audit_witnesses"},
                ) from exc
    return found

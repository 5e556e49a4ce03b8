"""The audit log's entries, their hash chain and Merkle tree, and the check of a whole log.

One log per replica. Its *origin* names it (``<issuer host>/audit/<replica id>``), so replicas
never share a sequence and verification covers every chain, each on its own. An **entry** is
the exact bytes stored for record number ``index`` of the log: the canonical JSON (RFC 8785)
of ``{"index": …, "log": <origin>, "record": {…}}``
(:meth:`tether.audit.records.AuditRecord.entry` writes it). Each entry is

* a leaf of an RFC 6962 Merkle tree (:mod:`tether.audit.merkle`): signed checkpoints
  (:mod:`tether.audit.notes`) name a size and a root, and proofs show inclusion and
  consistency to anyone;
* a link of a hash chain, ``chain[i] = SHA-256(0x02 || chain[i-1] || leaf[i])`` from a
  genesis that names the log: each stored chain head pins everything before it, so the first
  entry that was changed, dropped, reordered or spliced in from another log is found at once.

:func:`verify_log` reads entries in order, checks each against its position, its log and the
stored chain heads, keeps the Merkle root as it goes
(:class:`~tether.audit.merkle.CompactTree`: O(log n) memory), and checks the roots of the
signed checkpoints it passes. It raises :class:`LogInvalid` naming the first bad index. Like
the Merkle module it needs only the standard library: it hashes the bytes as stored (it never
re-serialises), so a third party can run it on an export.

Example::

    >>> import json
    >>> def entry(i):  # what AuditRecord.entry writes, for a tiny record
    ...     body = {"index": i, "log": "acme/audit/r1", "record": {"n": i}}
    ...     return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    >>> entries = [entry(i) for i in range(3)]
    >>> state = verify_log(entries, origin="acme/audit/r1")
    >>> state.size, len(state.root), len(state.chain)
    (3, 32, 32)
    >>> verify_log([entries[0], entries[2]], origin="acme/audit/r1")
    Traceback (most recent call last):
    ...
    tether.audit.chain.LogInvalid: entry 1: it says it is entry 2
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tether.audit.merkle import CompactTree, leaf_hash

__all__ = [
    "LogInvalid",
    "LogState",
    "LogVerifier",
    "chain_next",
    "check_entry",
    "genesis",
    "verify_log",
]

_CHAIN = b"\x02"


class LogInvalid(ValueError):
    """The log is not what it should be; ``index`` is the first entry found bad."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"entry {index}: {reason}")
        self.index = index
        self.reason = reason


def genesis(origin: str) -> bytes:
    """The chain head before the first entry: it names the log, so two logs never share one."""
    return hashlib.sha256(b"tether audit chain\n" + origin.encode()).digest()


def chain_next(previous: bytes, leaf: bytes) -> bytes:
    return hashlib.sha256(_CHAIN + previous + leaf).digest()


@dataclass(frozen=True, kw_only=True)
class LogState:
    """What a verified log comes to: its size, Merkle root and chain head."""

    size: int
    root: bytes
    chain: bytes


def verify_log(
    entries: Iterable[bytes],
    *,
    origin: str,
    chain_heads: Iterable[bytes] | None = None,
    checkpoints: Mapping[int, bytes] | None = None,
) -> LogState:
    """Check ``entries`` (in order, from the first) as the log ``origin``: each names its
    place and its log, matches the stored chain head of its place (``chain_heads``, if
    given), and the Merkle root at every size in ``checkpoints`` (size → signed root) is the
    one signed. :class:`LogInvalid` names the first bad entry."""
    verifier = LogVerifier(origin=origin, checkpoints=checkpoints)
    verifier.feed(entries, chain_heads)
    return verifier.finish()


class LogVerifier:
    """:func:`verify_log` in steps, for a log read in pages: :meth:`feed` each page in order,
    then :meth:`finish`. It may start part-way, from a state already trusted (``tree`` and
    ``chain`` after the first ``tree.size`` entries)."""

    def __init__(
        self,
        *,
        origin: str,
        checkpoints: Mapping[int, bytes] | None = None,
        tree: CompactTree | None = None,
        chain: bytes | None = None,
    ) -> None:
        self.origin = origin
        self.tree = tree.copy() if tree is not None else CompactTree()
        self.chain = chain if chain is not None else genesis(origin)
        self._wanted = {n: r for n, r in (checkpoints or {}).items() if n > self.tree.size}
        self._prefix = b',"log":' + json.dumps(origin, ensure_ascii=False).encode() + b',"record":'

    def feed(self, entries: Iterable[bytes], chain_heads: Iterable[bytes] | None = None) -> None:
        heads = iter(chain_heads) if chain_heads is not None else None
        tree, chain, wanted, log = self.tree, self.chain, self._wanted, self._prefix
        try:
            for entry in entries:
                index = tree.size
                # Canonical JSON sorts the keys, so an entry starts with exactly these bytes:
                # checked without parsing it (the hash covers the record; parsing only explains
                # a refusal).
                if not (entry.startswith(b'{"index":%d%s' % (index, log)) and entry.endswith(b"}")):
                    _refuse_entry(entry, index, self.origin)
                leaf = leaf_hash(entry)
                chain = chain_next(chain, leaf)
                tree.append(leaf)
                if heads is not None and next(heads, None) != chain:
                    raise LogInvalid(
                        index, "its chain head does not match: changed, or not in its place"
                    )
                signed = wanted.pop(tree.size, None)
                if signed is not None and tree.root() != signed:
                    raise LogInvalid(index, f"the root at size {tree.size} is not the signed one")
            if heads is not None and next(heads, None) is not None:
                raise LogInvalid(tree.size, "there are chain heads for entries that are missing")
        finally:
            self.chain = chain

    def finish(self) -> LogState:
        """The verified state; :class:`LogInvalid` if a signed size lies beyond the end."""
        if self._wanted:
            size = min(self._wanted)
            raise LogInvalid(
                self.tree.size, f"the log ends before the signed size {size}: truncated"
            )
        return LogState(size=self.tree.size, root=self.tree.root(), chain=self.chain)


def check_entry(entry: bytes, *, origin: str, index: int) -> None:
    """That ``entry`` is entry ``index`` of the log ``origin`` in canonical form (what
    :class:`LogVerifier` checks of each entry); :class:`LogInvalid` otherwise."""
    log = b',"log":' + json.dumps(origin, ensure_ascii=False).encode() + b',"record":'
    if not (entry.startswith(b'{"index":%d%s' % (index, log)) and entry.endswith(b"}")):
        _refuse_entry(entry, index, origin)


def _refuse_entry(entry: bytes, index: int, origin: str) -> None:
    """Why ``entry`` is not entry ``index`` of ``origin`` in canonical form (it is not)."""
    try:
        parsed = json.loads(entry)
    except (UnicodeDecodeError, ValueError):
        raise LogInvalid(index, "it is not JSON") from None
    if not isinstance(parsed, dict) or set(parsed) != {"index", "log", "record"}:
        raise LogInvalid(index, "it is not an entry {index, log, record}")
    if parsed["log"] != origin:
        raise LogInvalid(index, f"it belongs to another log ({parsed['log']!r})")
    if parsed["index"] != index or isinstance(parsed["index"], bool):
        raise LogInvalid(index, f"it says it is entry {parsed['index']}")
    raise LogInvalid(index, "it is not in canonical form")

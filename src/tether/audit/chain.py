"""The audit log's entries, their hash chain and Merkle tree, and the check of a whole log.

One log per replica. Its *origin* names it (``<issuer host>/audit/<replica id>``), so replicas
never share a sequence and verification covers every chain, each on its own. An **entry** is
the exact bytes stored for record number ``index`` of the log: the canonical JSON (RFC 8785)
of ``{"index": …, "log": <origin>, "prev": <hex>, "record": {…}}``
(:meth:`tether.audit.records.AuditRecord.entry` writes it). Each entry is

* a leaf of an RFC 6962 Merkle tree (:mod:`tether.audit.merkle`), its leaf hash
  ``SHA-256(0x00 || entry)``: signed checkpoints (:mod:`tether.audit.notes`) name a size and a
  root, and proofs show inclusion and consistency to anyone;
* a link of a hash chain: ``prev`` is the leaf hash of the entry before it (for entry 0, a
  genesis hash that names the log), so an entry's leaf hash — its *chain head*, stored beside
  it — pins everything before it. The chain costs no hashing beyond the tree's leaves: checking
  a link is comparing the bytes an entry starts with.

:func:`verify_log` reads entries in order, checks each one's stored chain head if given, keeps
the Merkle tree (O(log n) memory) and checks the roots of the signed checkpoints it passes; it
checks each entry's place, log and link where no signed root it matched covers the entry (the
signature pins those bytes, which the writer chained), and everywhere up to a root that does
not match, to name the first bad entry. It raises :class:`LogInvalid` naming the first bad index:
with chain heads, exactly the entry changed, dropped, reordered or spliced in; without them,
a changed entry is named by the link of the one after it (or, for the last, by the signed
root). Like the Merkle module it needs only the standard library: it hashes the bytes as
stored (it never re-serialises), so a third party can run it on an export.

Example::

    >>> import json, hashlib
    >>> def entries(n, log="acme/audit/r1"):  # what AuditRecord.entry writes, tiny records
    ...     prev, out = genesis(log), []
    ...     for i in range(n):
    ...         body = {"index": i, "log": log, "prev": prev.hex(), "record": {"n": i}}
    ...         out.append(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    ...         prev = hashlib.sha256(b"\\x00" + out[-1]).digest()
    ...     return out
    >>> log = entries(3)
    >>> state = verify_log(log, origin="acme/audit/r1")
    >>> state.size, len(state.root), len(state.chain)
    (3, 32, 32)
    >>> verify_log([log[0], log[2]], origin="acme/audit/r1")
    Traceback (most recent call last):
    ...
    tether.audit.chain.LogInvalid: entry 1: it says it is entry 2
"""

from __future__ import annotations

import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter

from tether.audit.merkle import CompactTree

__all__ = [
    "LogInvalid",
    "LogState",
    "LogVerifier",
    "check_entry",
    "genesis",
    "verify_log",
]

_LEAF = b"\x00"
_HEX_HASH = 64


class LogInvalid(ValueError):
    """The log is not what it should be; ``index`` is the first entry found bad."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"entry {index}: {reason}")
        self.index = index
        self.reason = reason


def genesis(origin: str) -> bytes:
    """The ``prev`` of entry 0: it names the log, so two logs never share a chain."""
    return hashlib.sha256(b"tether audit chain\n" + origin.encode()).digest()


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
    place, its log and the entry before it, matches the stored chain head of its place
    (``chain_heads``, if given), and the Merkle root at every size in ``checkpoints`` (size →
    signed root) is the one signed. :class:`LogInvalid` names the first bad entry."""
    verifier = LogVerifier(origin=origin, checkpoints=checkpoints)
    verifier.feed(entries, chain_heads)
    return verifier.finish()


def _log_field(origin: str) -> bytes:
    return b',"log":' + json.dumps(origin, ensure_ascii=False).encode() + b',"prev":"'


class LogVerifier:
    """:func:`verify_log` in steps, for a log read in pages: :meth:`feed` each page in order,
    then :meth:`finish`. It may start part-way, from a state already trusted (``tree`` and
    ``chain`` — the chain head of the last entry — after the first ``tree.size`` entries).

    Every entry's place in the tree is checked, and its link wherever no matched signed root
    covers it; that is what integrity needs (any other byte of an entry is covered by the
    next entry's link or the signed roots). With ``strict``, each entry is also parsed: a
    JSON object of exactly ``index``, ``log``, ``prev`` and ``record``, in canonical form —
    what the server checks before it signs a tail and what ``tether audit verify`` reports,
    so that a well-linked last entry that is not an entry at all is named too."""

    def __init__(
        self,
        *,
        origin: str,
        checkpoints: Mapping[int, bytes] | None = None,
        tree: CompactTree | None = None,
        chain: bytes | None = None,
        strict: bool = False,
    ) -> None:
        self.origin = origin
        self.strict = strict
        self.tree = tree.copy() if tree is not None else CompactTree()
        self.chain = chain if chain is not None else genesis(origin)
        self._wanted = sorted((n, r) for n, r in (checkpoints or {}).items() if n > self.tree.size)
        self._log = _log_field(origin)
        #: The largest size whose signed root this verifier matched (entries before it are
        #: pinned by a signature).
        self._covered = 0

    def feed(self, entries: Iterable[bytes], chain_heads: Iterable[bytes] | None = None) -> None:
        page = list(entries)
        sha = hashlib.sha256
        leaves = [sha(_LEAF + entry).digest() for entry in page]
        heads = list(chain_heads) if chain_heads is not None else None
        # The tree first: the first signed root that fails bounds where an entry error counts.
        start = self.tree.size
        bad_root = self._grow(leaves)
        limit = bad_root.index if bad_root is not None else start + len(page)
        # Each entry must name the leaf hash of the one before (its link) where its place
        # and log put it: compared for a whole run of entries at once. The other bytes need
        # no check of their own — the next link and the signed roots cover them; a broken
        # link is explained by reading the entry (_refuse_entry).
        stop = min(len(page), limit - start + 1)
        # An entry a signed root covers needs no link check: the signature pins its bytes,
        # which the writer chained. Links are checked after the last signed size, and all
        # of them when a root fails, to name the first bad entry.
        begin = 0 if bad_root is not None else min(stop, max(0, self._covered - start))
        before = self.chain if begin == 0 else leaves[begin - 1]
        links = binascii.hexlify(b"".join([before, *leaves[begin : stop - 1]]))  # 64 digits each
        broken = self._first_broken(page, links, start, begin, stop)
        if self.strict:
            malformed = next((k for k in range(stop) if not _well_formed(page[k])), None)
            if malformed is not None and (broken is None or malformed < broken):
                broken = malformed
        if heads is not None and heads[:stop] != leaves[:stop]:
            changed = next(
                (k for k in range(stop) if k >= len(heads) or heads[k] != leaves[k]), stop
            )
            broken = changed if broken is None else min(broken, changed)
        if broken is not None:
            index = start + broken
            prev = self.chain if broken == 0 else leaves[broken - 1]
            entry = page[broken]
            head = b'{"index":%d%s%s","record":' % (index, self._log, binascii.hexlify(prev))
            if not (entry.startswith(head) and entry.endswith(b"}") and _well_formed(entry)):
                _refuse_entry(entry, index, self.origin, prev, named=heads is not None)
            raise LogInvalid(index, "its chain head does not match: changed, or not in its place")
        if bad_root is not None:
            raise bad_root
        if heads is not None and len(heads) > len(page):
            raise LogInvalid(self.tree.size, "there are chain heads for entries that are missing")
        if page:
            self.chain = leaves[-1]

    def _first_broken(
        self, page: Sequence[bytes], links: bytes, start: int, begin: int, stop: int
    ) -> int | None:
        """The first of ``page[begin:stop]`` whose link is not its 64 digits of ``links``
        (which start at ``begin``), or whose place and log are not where they should be;
        runs of indexes with as many digits are compared as a whole (the link sits at one
        offset in all of them)."""
        k = begin
        while k < stop:
            index = start + k
            digits = len(str(index))
            run = min(stop, 10**digits - start)  # the last k with as many digits, plus one
            at = len(b'{"index":') + digits + len(self._log)
            got = b"".join(map(itemgetter(slice(at, at + _HEX_HASH)), page[k:run]))
            # startswith at an offset: no copy of the run's digits (megabytes for a long log)
            offset = (k - begin) * _HEX_HASH
            if len(got) != (run - k) * _HEX_HASH or not links.startswith(got, offset):
                return next(
                    i
                    for i in range(k, run)
                    if page[i][at : at + _HEX_HASH]
                    != links[(i - begin) * _HEX_HASH : (i - begin + 1) * _HEX_HASH]
                )
            k = run
        return None

    def _grow(self, leaves: Sequence[bytes]) -> LogInvalid | None:
        """Add ``leaves`` to the tree, checking the signed roots it passes; the first failure
        (not raised: an entry before it may be the first bad one)."""
        tree, wanted = self.tree, self._wanted
        base, done = tree.size, 0
        while wanted and wanted[0][0] <= base + len(leaves):
            size, root = wanted.pop(0)
            take = size - (base + done)
            tree.extend(leaves[done : done + take])
            done += take
            if tree.root() != root:
                return LogInvalid(size - 1, f"the root at size {size} is not the signed one")
            self._covered = size
        tree.extend(leaves[done:])
        return None

    def finish(self) -> LogState:
        """The verified state; :class:`LogInvalid` if a signed size lies beyond the end."""
        if self._wanted:
            size = self._wanted[0][0]
            raise LogInvalid(
                self.tree.size, f"the log ends before the signed size {size}: truncated"
            )
        return LogState(size=self.tree.size, root=self.tree.root(), chain=self.chain)


def _well_formed(entry: bytes) -> bool:
    """A JSON object of the four entry fields, as canonical JSON writes it. Where RFC 8785
    writes differently from the standard library's sorted compact JSON (floats; keys beyond
    U+FFFF, which it sorts by UTF-16 units) the entry is only parsed."""
    try:
        parsed = json.loads(entry)
    except (UnicodeDecodeError, ValueError, RecursionError):  # nesting beyond the stack too
        return False
    if not isinstance(parsed, dict) or set(parsed) != {"index", "log", "prev", "record"}:
        return False
    if not isinstance(parsed["record"], dict):
        return False
    try:
        text = json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        if _has_float(parsed) or any(ord(c) > 0xFFFF for c in text):
            return True
        return text.encode() == entry
    except (RecursionError, UnicodeEncodeError):  # an escaped lone surrogate: not canonical
        return False


def _has_float(value: object) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    return False


def check_entry(entry: bytes, *, origin: str, index: int, prev: bytes | None = None) -> None:
    """That ``entry`` is entry ``index`` of the log ``origin`` in canonical form, after the
    entry whose chain head is ``prev`` (any, if None); :class:`LogInvalid` otherwise."""
    head = b'{"index":%d%s' % (index, _log_field(origin))
    link = entry[len(head) : len(head) + _HEX_HASH]
    ok = entry.startswith(head) and entry.endswith(b"}")
    ok = ok and entry[len(head) + _HEX_HASH :].startswith(b'","record":')
    ok = ok and (link == prev.hex().encode() if prev is not None else _is_hex(link))
    if not (ok and _well_formed(entry)):
        _refuse_entry(entry, index, origin, prev, named=True)


def _is_hex(value: bytes) -> bool:
    return len(value) == _HEX_HASH and all(c in b"0123456789abcdef" for c in value)


def _refuse_entry(
    entry: bytes, index: int, origin: str, prev: bytes | None, *, named: bool
) -> None:
    """Why ``entry`` is not entry ``index`` of ``origin`` after ``prev`` (it is not).
    ``named``: the entry before was checked against its stored chain head, so a broken link
    is this entry's fault; otherwise the one before may have been changed, and is named."""
    try:
        parsed = json.loads(entry)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise LogInvalid(index, "it is not JSON") from None
    if not isinstance(parsed, dict) or set(parsed) != {"index", "log", "prev", "record"}:
        raise LogInvalid(index, "it is not an entry {index, log, prev, record}")
    if parsed["log"] != origin:
        raise LogInvalid(index, f"it belongs to another log ({parsed['log']!r})")
    if parsed["index"] != index or isinstance(parsed["index"], bool):
        raise LogInvalid(index, f"it says it is entry {parsed['index']}")
    link = parsed["prev"]
    if not (isinstance(link, str) and _is_hex(link.encode("utf-8", "surrogatepass"))):
        raise LogInvalid(index, "its prev is not a hex SHA-256")
    if prev is not None and link != prev.hex():
        if named or index == 0:
            raise LogInvalid(index, "it does not name the entry before it (its prev was changed)")
        raise LogInvalid(
            index - 1,
            f"entry {index} names another hash for it: it was changed (or that link was)",
        )
    raise LogInvalid(index, "it is not in canonical form")

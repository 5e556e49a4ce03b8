"""Opening an audit log: its tail checked against what was signed.

:class:`~tether.audit.log.AuditLog` opens on :func:`check_tail`: the latest stored checkpoint
and each witness's latest — validly signed by this log's key, of this log, not beyond its
end (or it was truncated) — their roots rebuilt from the stored subtree hashes, and every
entry after the latest one read and checked in full (links, chain heads, canonical form).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tether.audit.chain import LogInvalid, LogVerifier, genesis
from tether.audit.merkle import CompactTree, leaf_hash
from tether.audit.notes import NoteInvalid, TreeHead
from tether.audit.stored import AuditLogStore, Witness
from tether.audit.tiles import tree_at

__all__ = ["PAGE", "check_tail"]

#: Entries read per page when the tail is checked.
PAGE = 1000

OpenCheckpoint = Callable[[bytes], TreeHead]


async def check_tail(
    store: AuditLogStore,
    origin: str,
    witnesses: Sequence[Witness],
    open_checkpoint: OpenCheckpoint,
    size: int,
) -> tuple[int, LogVerifier]:
    """The latest signed size of the log ``origin`` and the log verified from there to
    ``size`` (its end); :class:`LogInvalid` if it does not verify, ``MissingHash`` if a
    stored subtree hash is missing."""
    heads = await _signed_heads(store, origin, witnesses, open_checkpoint, size)
    start = heads[0].size if heads else 0
    tree = await tree_at(store, origin, start)
    for head in heads:
        at = tree if head.size == start else await tree_at(store, origin, head.size)
        if at.root() != head.root:
            raise LogInvalid(head.size - 1, f"the root at size {head.size} is not the signed one")
    chain = genesis(origin)
    if start:
        before = await store.audit_entries(origin, start=start - 1, stop=start)
        if not before:
            raise LogInvalid(start - 1, "the entry is missing")
        chain = leaf_hash(before[0].entry)  # what the next entry must name as prev
    verifier = LogVerifier(origin=origin, tree=tree, chain=chain, strict=True)
    for first in range(start, size, PAGE):
        page = await store.audit_entries(origin, start=first, stop=min(size, first + PAGE))
        verifier.feed([e.entry for e in page], [e.chain for e in page])
    if verifier.finish().size != size:
        raise LogInvalid(verifier.tree.size, f"entries are missing before the end ({size})")
    return start, verifier


async def _signed_heads(
    store: AuditLogStore,
    origin: str,
    witnesses: Sequence[Witness],
    open_checkpoint: OpenCheckpoint,
    size: int,
) -> list[TreeHead]:
    """The latest stored checkpoint (first) and the witnesses' latest, each checked
    against this log's key and not beyond ``size``."""
    notes: list[tuple[str, bytes]] = []
    latest = await store.latest_audit_checkpoint(origin)
    if latest is not None:
        notes.append(("the latest stored checkpoint", latest.note))
    for witness in witnesses:
        note = await witness.latest(origin)
        if note is not None:
            notes.append((f"witness {witness.name}", note))
    heads: list[TreeHead] = []
    for source, note in notes:
        try:
            head = open_checkpoint(note)
        except NoteInvalid as exc:
            raise LogInvalid(size, f"{source} is not validly signed: {exc}") from None
        if head.origin != origin:
            raise LogInvalid(size, f"{source} names another log ({head.origin!r})")
        if head.size > size:
            raise LogInvalid(
                size, f"the log ends before the size {head.size} signed in {source}: truncated"
            )
        heads.append(head)
    if heads and latest is None:
        heads.insert(0, TreeHead(origin=origin, size=0, root=CompactTree().root()))
    return heads

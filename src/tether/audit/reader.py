"""The auditor's side of the stored log: verify every chain, prove a record, export, trace.

* :func:`verify_stored` checks one log from its first entry: every entry's form and place,
  every stored chain head, every stored checkpoint's signature and root, and the witnesses'
  checkpoints; it reports the first bad index (it never stops at the first page). With
  several replicas, :func:`verify_all` covers each replica's log.
* :func:`prove` builds the proof bundle of one record (:mod:`tether.audit.bundle`) from the
  latest signed checkpoint that covers it, reading a few stored subtree hashes
  (:mod:`tether.audit.tiles`), and checks it as a third party would before handing it out.
* :func:`export_lines` yields a log's entries as JSON lines: the exact stored bytes
  (``jsonl``; :func:`tether.audit.chain.verify_log` checks them) or OCSF events (``ocsf``).
* :func:`trace` gathers the records of one correlation id, each decision drawn as the path
  user → agent chain → instance → action → resource with its policies and approver.

Example::

    >>> LogReport(log="acme/audit/r1", size=0, root=None, checkpoints=0, signed_size=0).ok
    True
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from tether.audit.bundle import BundleInvalid, make_bundle, verify_bundle
from tether.audit.chain import LogInvalid, LogState, LogVerifier
from tether.audit.notes import NoteInvalid, TreeHead
from tether.audit.ocsf import to_ocsf
from tether.audit.records import AuditRecord
from tether.audit.stored import AuditLocation, SignedCheckpoint, StoredEntry
from tether.audit.tiles import MissingHash, TreeReader, inclusion_proof_at
from tether.errors import AuditLogInvalid, AuditUnavailable, NotFound

__all__ = [
    "AuditReadStore",
    "AuditRecordNotFound",
    "LogReport",
    "export_lines",
    "prove",
    "trace",
    "verify_all",
    "verify_stored",
]

#: Entries read per page when a whole log is verified or exported.
PAGE = 5000
ExportFormat = Literal["jsonl", "ocsf"]


class AuditRecordNotFound(NotFound):
    code = "audit_record_not_found"


class AuditReadStore(TreeReader, Protocol):
    """What the auditor's tools read (the writer's half is :class:`AuditLogStore`)."""

    async def audit_log_end(self, log: str) -> StoredEntry | None: ...

    async def latest_audit_checkpoint(self, log: str) -> SignedCheckpoint | None: ...

    async def audit_checkpoints(
        self, log: str, *, after_size: int = 0, limit: int = 1000
    ) -> list[SignedCheckpoint]:
        """The log's signed checkpoints larger than ``after_size``, smallest first."""
        ...

    async def audit_logs(self) -> list[str]:
        """Every log with entries (one per replica that ever wrote), in order."""
        ...

    async def find_audit_record(self, record_id: str) -> AuditLocation | None: ...

    async def list_audit(
        self,
        *,
        after_sequence: int = 0,
        limit: int = 100,
        type_prefix: str | None = None,
        correlation_id: str | None = None,
    ) -> list[tuple[int, AuditRecord]]:
        """Records after ``after_sequence`` in order (every replica's), filtered."""
        ...


#: ``open_checkpoint(note)``: the tree head the trusted key signed; ``NoteInvalid`` otherwise.
OpenCheckpoint = Callable[[bytes], TreeHead]


@dataclass(frozen=True, kw_only=True)
class LogReport:
    """What verifying one log found: its size and root, how many signed checkpoints it was
    checked against (and the largest), and the first problem (None: it verifies)."""

    log: str
    size: int
    root: bytes | None
    checkpoints: int
    signed_size: int
    problem: LogInvalid | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def to_dict(self) -> dict[str, object]:
        problem = self.problem
        return {
            "log": self.log,
            "ok": self.ok,
            "size": self.size,
            "root": None if self.root is None else base64.b64encode(self.root).decode(),
            "checkpoints": self.checkpoints,
            "signed_size": self.signed_size,
            "first_bad_index": None if problem is None else problem.index,
            "reason": None if problem is None else problem.reason,
        }


async def _checkpoints(store: AuditReadStore, log: str) -> list[SignedCheckpoint]:
    found: list[SignedCheckpoint] = []
    while page := await store.audit_checkpoints(
        log, after_size=found[-1].size if found else 0, limit=1000
    ):
        found += page
    return found


def _signed_roots(
    log: str,
    stored: Sequence[SignedCheckpoint],
    witnessed: Sequence[bytes],
    open_checkpoint: OpenCheckpoint,
) -> dict[int, bytes]:
    """Size → root of every checkpoint, each signed by the trusted key and (if stored) equal
    to its columns; LogInvalid if one is not, or two disagree."""
    roots: dict[int, bytes] = {}
    notes: list[tuple[str, bytes, SignedCheckpoint | None]] = [
        (f"the checkpoint stored at size {c.size}", c.note, c) for c in stored
    ]
    notes += [("a witnessed checkpoint", note, None) for note in witnessed]
    for source, note, row in notes:
        try:
            head = open_checkpoint(note)
        except NoteInvalid as exc:
            raise LogInvalid(0, f"{source} is not validly signed: {exc}") from None
        if head.origin != log:
            raise LogInvalid(0, f"{source} signs another log ({head.origin!r})")
        if row is not None and (row.size, row.root) != (head.size, head.root):
            raise LogInvalid(0, f"{source} is stored with another size or root than signed")
        if roots.setdefault(head.size, head.root) != head.root:
            raise LogInvalid(head.size - 1, f"two signed checkpoints at size {head.size} differ")
    return roots


async def verify_stored(
    store: AuditReadStore,
    log: str,
    *,
    open_checkpoint: OpenCheckpoint,
    witnessed: Sequence[bytes] = (),
) -> LogReport:
    """Verify ``log`` as stored, against its stored checkpoints and ``witnessed`` notes."""
    checkpoints = await _checkpoints(store, log)
    size = 0
    try:
        roots = _signed_roots(log, checkpoints, witnessed, open_checkpoint)
        verifier = LogVerifier(origin=log, checkpoints=roots)
        end = await store.audit_log_end(log)
        size = 0 if end is None else end.index + 1
        state = await _read_through(store, log, size, verifier, signed=max(roots, default=0))
    except LogInvalid as exc:
        return LogReport(
            log=log,
            size=size,
            root=None,
            checkpoints=len(checkpoints) + len(witnessed),
            signed_size=max((c.size for c in checkpoints), default=0),
            problem=exc,
        )
    return LogReport(
        log=log,
        size=state.size,
        root=state.root,
        checkpoints=len(roots),
        signed_size=max(roots, default=0),
    )


async def _read_through(
    store: AuditReadStore, log: str, size: int, verifier: LogVerifier, *, signed: int
) -> LogState:
    """Feed the log's ``size`` entries to ``verifier``, page by page; its final state. The
    entries past the last signed size are also checked for their form (``strict``): no
    signature vouches for them yet."""
    bounds = sorted({*range(0, size, PAGE), min(signed, size), size})
    for first, stop in itertools.pairwise(bounds):
        verifier.strict = first >= signed
        page = await store.audit_entries(log, start=first, stop=stop)
        verifier.feed([e.entry for e in page], [e.chain for e in page])
    if verifier.tree.size != size:  # a gap shows as a wrong index; this is a missing end
        raise LogInvalid(verifier.tree.size, f"entries are missing before the end ({size})")
    return verifier.finish()


async def verify_all(
    store: AuditReadStore,
    *,
    open_checkpoint: OpenCheckpoint,
    witnessed: Mapping[str, Sequence[bytes]] | None = None,
) -> list[LogReport]:
    """:func:`verify_stored` for every replica's log (and any log a witness knows of)."""
    witnessed = witnessed or {}
    logs = sorted(set(await store.audit_logs()) | set(witnessed))
    return [
        await verify_stored(
            store, log, open_checkpoint=open_checkpoint, witnessed=witnessed.get(log, ())
        )
        for log in logs
    ]


async def prove(store: AuditReadStore, record_id: str, *, verifier_key: str) -> dict[str, object]:
    """The proof bundle of ``record_id`` against the latest signed checkpoint."""
    where = await store.find_audit_record(record_id)
    if where is None:
        raise AuditRecordNotFound(f"no audit record {record_id!r}")
    if where.log is None or where.index is None:
        raise AuditUnavailable("the record is not in a log yet; try again in a second")
    checkpoint = await store.latest_audit_checkpoint(where.log)
    if checkpoint is None or checkpoint.size <= where.index:
        raise AuditUnavailable("no signed checkpoint covers the record yet; try again in a second")
    try:
        proof = await inclusion_proof_at(store, where.log, where.index, checkpoint.size)
    except MissingHash as exc:
        raise AuditLogInvalid(f"the log cannot prove the record: {exc}") from None
    [entry] = await store.audit_entries(where.log, start=where.index, stop=where.index + 1)
    if json.loads(entry.entry)["record"].get("id") != record_id:
        raise AuditLogInvalid(f"entry {where.index} of {where.log} is not record {record_id!r}")
    bundle = make_bundle(
        log=where.log,
        index=where.index,
        entry=entry.entry,
        proof=proof,
        checkpoint=checkpoint.note,
        verifier_key=verifier_key,
    )
    try:  # as the third party will: a stored log that was changed cannot prove anything
        verify_bundle(bundle, verifier_key=verifier_key)
    except BundleInvalid as exc:
        raise AuditLogInvalid(f"the stored log does not prove the record: {exc}") from None
    return bundle


async def export_lines(
    store: AuditReadStore, log: str, *, format: ExportFormat, start: int = 0
) -> AsyncIterator[bytes]:
    """The log's entries from ``start`` on, one JSON line each."""
    end = await store.audit_log_end(log)
    size = 0 if end is None else end.index + 1
    for first in range(max(0, start), size, PAGE):
        for stored in await store.audit_entries(log, start=first, stop=min(size, first + PAGE)):
            if format == "jsonl":
                yield stored.entry + b"\n"
            else:
                record = json.loads(stored.entry)["record"]
                event = to_ocsf(record, log=log, index=stored.index)
                yield json.dumps(event, separators=(",", ":"), sort_keys=True).encode() + b"\n"


def _path(record: AuditRecord) -> list[dict[str, object]]:
    """user → app → acting agents → agent → instance → action → resource, as far as known."""
    d = record.details
    hops: list[dict[str, object]] = []
    if d.get("user"):
        hops.append({"kind": "user", "id": d["user"]})
    if d.get("app"):
        hops.append({"kind": "app", "id": d["app"]})
    act = d.get("act")
    for actor in reversed(act) if isinstance(act, list) else []:
        hops.append({"kind": "acting agent", "id": actor})
    if d.get("agent"):
        hops.append({"kind": "agent", "id": d["agent"], "risk_tier": d.get("risk_tier")})
    if d.get("instance"):
        hops.append({"kind": "instance", "id": d["instance"]})
    if d.get("action"):
        hops.append({"kind": "action", "id": d["action"]})
    if d.get("resource"):
        hops.append({"kind": "resource", "id": d["resource"]})
    return hops


async def trace(store: AuditReadStore, correlation_id: str, *, limit: int = 1000) -> dict[str, Any]:
    """Every record of ``correlation_id`` in order, decisions drawn as their path."""
    rows = await store.list_audit(correlation_id=correlation_id, limit=limit)
    if not rows:
        raise AuditRecordNotFound(f"no audit record has correlation id {correlation_id!r}")
    steps = []
    for sequence, record in rows:
        d = record.details
        steps.append(
            {
                "sequence": sequence,
                "record_id": record.id,
                "time": record.time.isoformat(),
                "type": record.type,
                "actor": record.actor,
                "outcome": str(record.outcome),
                "path": _path(record),
                "effect": d.get("effect"),
                "policy_ids": d.get("policy_ids", []),
                "enforcement_point": d.get("enforcement_point"),
                "approval_id": d.get("approval_id"),
                "approver": d.get("approver"),
                "grant_id": d.get("grant_id"),
                "lease_id": d.get("lease_id"),
            }
        )
    return {"correlation_id": correlation_id, "steps": steps}

"""Audit records: immutable, tagged by a stable ``type``, serialised as canonical JSON.

Record types in use (:data:`RECORD_TYPES`; :meth:`AuditRecord.new` refuses any other, and a
tag is never reused for another meaning):

* ``decision`` — the checkpoint's answer; its details carry the decision id, enforcement
  point, agent, instance, risk tier, delegated ``user``, ``act`` chain, grant id, purpose,
  session, action, resource, effect, determining policy ids, approval id and approver, lease
  id, reasons and the call digest (null where a field does not apply)
* ``policy.applied``, ``policy.rolled_back``
* ``agent.registered``, ``agent.updated``, ``agent.state_changed``, ``agent.approved``
* ``agent.key_added``, ``agent.key_removed``
* ``client.authentication_failed`` (a success is the ``svid.jwt_issued`` that follows it)
* ``svid.jwt_issued``, ``svid.x509_issued``
* ``svid.revoked`` (details: ``revocation_id``, ``kind`` — ``jti`` | ``agent`` | ``instance`` —,
  ``target``, ``reason``, ``until``); an agent stopped by ``agent.state_changed`` or
  ``agent.updated`` has its tokens revoked in the same change (details ``tokens_revoked``)
* ``operator.token_created``, ``operator.token_revoked``
* ``keyring.key_created``, ``keyring.key_retired``
* ``engine.configured`` (details: name, kind, version, settings, roles, ``secret_set`` — never
  the secret), ``engine.removed``
* ``engine.secret_set``, ``engine.secret_deleted`` (one secret of a vault engine; details: the
  engine's name, its new version, the ``secret``'s name and, when set, whether it ``replaced``
  one — never the value)
* ``lease.issued`` (the lease's facts and the decision id; outcome ``failure`` when the engine
  could not create the credential), ``lease.renewed``, ``lease.revoked`` (a revocation asked
  for: by whom, why), ``lease.ended`` (the engine removed the credential: ``state`` revoked or
  expired), ``lease.revocation_failed`` (attempts, error, next attempt, ``irrevocable``),
  ``lease.orphan_removed`` (a managed credential with no lease, removed on start). No record
  holds an issued secret.
* ``user.created``, ``user.updated`` (details: the changed fields — ``state``, or
  ``password_changed`` — never a password or its hash), ``user.signed_in``,
  ``user.sign_in_failed`` (the name asked for and why: ``unknown``, ``disabled`` or
  ``wrong_password``), ``user.role_changed`` (a person's console role: ``role``, the new one
  or null, and the ``previous`` one or null)
* ``grant.created`` (the grant's facts: user, agent, scopes, purpose, purpose code, session,
  expiry), ``grant.revoked`` (by whom, why; one record per grant, also in a bulk revocation,
  which is announced first by a record of what it matches)
* ``token.issued`` (a user's token from the built-in provider: ``jti``, scopes, ``sid``,
  expiry), ``token.exchanged`` (RFC 8693: the delegated token's ``jti``, user, actor chain,
  grant, scopes, audience, expiry and the determining policies), ``token.exchange_refused``
  (the OAuth error code and why), ``token.revoked`` (RFC 7009: the ``jti``)
* ``client.registered``, ``client.removed`` (an OAuth client of the built-in provider: its
  redirect URIs and agent), ``oauth.code_issued`` (a user signed in to a client: the client,
  the scopes approved, the grant made, the session — never the code)
* ``approval.requested`` (CIBA: the approval id, the asking instance, the user, the items
  with their call digests, the binding message, the expiry — never the ``auth_req_id``),
  ``approval.approved`` / ``approval.denied`` (the approver and the positions approved),
  ``approval.redeemed`` (the approval token's ``jti``, the approver, the items it carries),
  ``approval.redeem_refused`` (a second redemption, or another client's: the OAuth code)
* ``mcp.server_added``, ``mcp.server_removed`` (an upstream MCP server of the gateway: its
  transport, where it is, the credential it gets by engine and role, its tool allow-list — never
  a credential's value), ``mcp.tool_approved`` (a ``platform-admin`` pinned a tool's definition:
  its digest; or ``system:mcp-gateway`` restored a quarantined tool whose server gave back the
  approved definition exactly), ``mcp.tool_held`` (a tool held back from agents — new,
  changed since approved, with invisible characters, or shadowing another server's — with both
  digests)
* ``agent.reassessed`` (the monitor saw an agent use what it did not declare: the new score,
  tier and factors, and the ``undeclared`` uses)
* ``alert.raised`` (a detector's finding opened an alert: its kind, key, severity, summary,
  agent, owners and details), ``alert.acknowledged``, ``alert.resolved`` (by whom, the note),
  ``alert.response`` (an automatic response to an alert: the ``action`` — ``quarantine`` —,
  the agent, and the alert id; outcome ``failure`` when it could not be carried out)

A change that was recorded but then failed to apply is followed by a record of the same type
with outcome ``failure``. Refused operator requests (403) are not state changes and are not
recorded here yet; the decision log of the checkpoint will hold them.

``details`` hold facts, never secrets: tokens and assertions appear only as their ``jti`` or
hash.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from tether._internal.canonical import canonical_json, is_plain
from tether._internal.ids import new_id
from tether.errors import InvalidInput

__all__ = ["RECORD_TYPES", "AuditReceipt", "AuditRecord", "Outcome"]

#: The types a record's fields other than its details and time may have.
_TEXT = frozenset({str, type(None)})

RECORD_TYPES = frozenset(
    {
        "decision",
        "policy.applied",
        "policy.rolled_back",
        "agent.registered",
        "agent.updated",
        "agent.state_changed",
        "agent.approved",
        "agent.key_added",
        "agent.key_removed",
        "client.authentication_failed",
        "svid.jwt_issued",
        "svid.x509_issued",
        "svid.revoked",
        "operator.token_created",
        "operator.token_revoked",
        "keyring.key_created",
        "keyring.key_retired",
        "engine.configured",
        "engine.removed",
        "engine.secret_set",
        "engine.secret_deleted",
        "lease.issued",
        "lease.renewed",
        "lease.revoked",
        "lease.ended",
        "lease.revocation_failed",
        "lease.orphan_removed",
        "user.created",
        "user.updated",
        "user.signed_in",
        "user.sign_in_failed",
        "user.role_changed",
        "grant.created",
        "grant.revoked",
        "token.issued",
        "token.exchanged",
        "token.exchange_refused",
        "token.revoked",
        "client.registered",
        "client.removed",
        "oauth.code_issued",
        "approval.requested",
        "approval.approved",
        "approval.denied",
        "approval.redeemed",
        "approval.redeem_refused",
        "mcp.server_added",
        "mcp.server_removed",
        "mcp.tool_approved",
        "mcp.tool_held",
        "agent.reassessed",
        "alert.raised",
        "alert.acknowledged",
        "alert.resolved",
        "alert.response",
    }
)


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"


@dataclass(frozen=True, kw_only=True)
class AuditRecord:
    id: str
    type: str
    time: datetime
    actor: str
    subject: str | None
    outcome: Outcome
    correlation_id: str | None = None
    details: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def new(
        cls,
        *,
        type: str,
        actor: str,
        subject: str | None,
        time: datetime,
        outcome: Outcome = Outcome.SUCCESS,
        correlation_id: str | None = None,
        details: Mapping[str, object] | None = None,
    ) -> AuditRecord:
        if type not in RECORD_TYPES:
            raise ValueError(f"{type!r} is not an audit record type (RECORD_TYPES)")
        return cls(
            id=new_id("rec"),
            type=type,
            time=time,
            actor=actor,
            subject=subject,
            outcome=outcome,
            correlation_id=correlation_id,
            details=MappingProxyType(dict(details or {})),
        )

    def failure(self, error_code: str, *, time: datetime) -> AuditRecord:
        """The record that says the change this record announced did not happen (it names
        this one as its correlation id, and the error's code)."""
        return AuditRecord.new(
            type=self.type,
            actor=self.actor,
            subject=self.subject,
            time=time,
            outcome=Outcome.FAILURE,
            correlation_id=self.id,
            details={"error": error_code},
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditRecord:
        """The record :meth:`to_dict` wrote, its time in UTC (``ValueError``/``KeyError`` if
        it is not one)."""
        if not isinstance(data, Mapping) or not isinstance(data.get("details"), Mapping):
            raise ValueError("an audit record is an object with details")  # noqa: TRY004 - documented
        return cls(
            id=str(data["id"]),
            type=str(data["type"]),
            time=datetime.fromisoformat(str(data["time"])).astimezone(UTC),
            actor=str(data["actor"]),
            subject=None if data["subject"] is None else str(data["subject"]),
            outcome=Outcome(data["outcome"]),
            correlation_id=None if data["correlation_id"] is None else str(data["correlation_id"]),
            details=MappingProxyType(dict(data["details"])),
        )

    @classmethod
    def from_entry(cls, entry: bytes) -> AuditRecord:
        """The record in a log entry (see :meth:`entry`); ``ValueError``/``KeyError`` if it
        holds none."""
        try:
            parsed = json.loads(entry)
        except RecursionError:
            raise ValueError("the entry is nested too deep") from None
        if not isinstance(parsed, dict):
            raise ValueError("an audit log entry is an object")  # noqa: TRY004 - documented
        return cls.from_dict(parsed["record"])

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "type": self.type,
            "time": self.time.isoformat(),
            "actor": self.actor,
            "subject": self.subject,
            "outcome": str(self.outcome),
            "correlation_id": self.correlation_id,
            "details": dict(self.details),
        }

    def entry(self, *, origin: str, index: int, prev: bytes) -> bytes:
        """The stored bytes of this record as entry ``index`` of the log ``origin``, after the
        entry whose chain head (leaf hash) is ``prev``: the canonical JSON (RFC 8785) of
        ``{"index", "log", "prev", "record"}`` (see :mod:`tether.audit.chain`)."""
        if self.time.utcoffset() is None:
            raise InvalidInput(
                "naive datetime: an audit record's time names its offset from UTC",
                details={"record_id": self.id},
            )
        record = self.to_dict()
        body = {"index": index, "log": origin, "prev": prev.hex(), "record": record}
        # Every field but the details is text (or null) by type; checking those once, here,
        # spares canonical_json a walk of the whole entry.
        texts = (self.id, self.type, self.actor, self.subject, self.correlation_id, origin)
        plain = _TEXT.issuperset(map(type, texts)) and is_plain(record["details"])
        return canonical_json(body, plain=plain)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True, kw_only=True)
class AuditReceipt:
    """What a sink hands back once a record is durable: its id, its number among all records
    (``sequence``, every replica's) and its place in this replica's log (``index``)."""

    record_id: str
    sequence: int
    index: int | None = None

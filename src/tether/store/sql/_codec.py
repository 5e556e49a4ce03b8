"""Conversions between the domain's frozen values and table rows, in both directions.

Kept apart from the queries so that each conversion is written once and the store module stays
about transactions. Enums are stored by value; tuples as JSON lists; mappings come back
read-only (``MappingProxyType``), as the domain builds them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from sqlalchemy import RowMapping

from tether.audit.records import AuditRecord, Outcome
from tether.crypto.stored import KeyPurpose, StoredKey
from tether.errors import AuditLogInvalid
from tether.identity.models import (
    Agent,
    AgentKey,
    AgentState,
    Autonomy,
    Connectivity,
    DataClass,
    Declarations,
    Instance,
    OperatorToken,
    RiskAssessment,
    RiskFactor,
    RiskTier,
    Role,
)
from tether.identity.revocations import Revocation, RevocationKind
from tether.policy.models import PolicySetVersion

__all__ = [
    "agent_from_row",
    "agent_values",
    "assessment_from_row",
    "assessment_values",
    "audit_from_row",
    "audit_values",
    "declarations_from_json",
    "instance_from_row",
    "key_from_row",
    "key_values",
    "operator_token_from_row",
    "operator_token_values",
    "policy_set_from_row",
    "revocation_from_row",
    "revocation_values",
    "stored_key_from_row",
    "stored_key_values",
]


def declarations_from_json(data: Mapping[str, Any]) -> Declarations:
    return Declarations(
        tools=tuple(data["tools"]),
        resources=tuple(data["resources"]),
        data_classes=tuple(DataClass(d) for d in data["data_classes"]),
        external_connections=Connectivity(data["external_connections"]),
        autonomy=Autonomy(data["autonomy"]),
        may_call_agents=bool(data["may_call_agents"]),
        notification_endpoint=data.get("notification_endpoint"),
    )


def agent_values(agent: Agent) -> dict[str, Any]:
    return {
        "id": agent.id,
        "name": agent.name,
        "spiffe_id": agent.spiffe_id,
        "owners": list(agent.owners),
        "description": agent.description,
        "declarations": agent.declarations.to_dict(),
        "state": str(agent.state),
        "state_reason": agent.state_reason,
        "risk_score": agent.risk_score,
        "risk_tier": str(agent.risk_tier),
        "created_at": agent.created_at,
        "updated_at": agent.updated_at,
        "created_by": agent.created_by,
        "version": agent.version,
    }


def agent_from_row(row: RowMapping) -> Agent:
    return Agent(
        id=row["id"],
        name=row["name"],
        spiffe_id=row["spiffe_id"],
        owners=tuple(row["owners"]),
        description=row["description"],
        declarations=declarations_from_json(row["declarations"]),
        state=AgentState(row["state"]),
        state_reason=row["state_reason"],
        risk_score=row["risk_score"],
        risk_tier=RiskTier(row["risk_tier"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        created_by=row["created_by"],
        version=row["version"],
    )


def assessment_values(assessment: RiskAssessment) -> dict[str, Any]:
    return {
        "id": assessment.id,
        "agent_id": assessment.agent_id,
        "score": assessment.score,
        "tier": str(assessment.tier),
        "factors": [
            {"code": f.code, "points": f.points, "detail": f.detail} for f in assessment.factors
        ],
        "model": assessment.model,
        "assessed_at": assessment.assessed_at,
        "assessed_by": assessment.assessed_by,
        "declarations": assessment.declarations.to_dict(),
    }


def assessment_from_row(row: RowMapping) -> RiskAssessment:
    return RiskAssessment(
        id=row["id"],
        agent_id=row["agent_id"],
        score=row["score"],
        tier=RiskTier(row["tier"]),
        factors=tuple(
            RiskFactor(code=f["code"], points=f["points"], detail=f["detail"])
            for f in row["factors"]
        ),
        model=row["model"],
        assessed_at=row["assessed_at"],
        assessed_by=row["assessed_by"],
        declarations=declarations_from_json(row["declarations"]),
    )


def key_values(key: AgentKey) -> dict[str, Any]:
    return {
        "agent_id": key.agent_id,
        "kid": key.kid,
        "jwk": dict(key.jwk),
        "alg": key.alg,
        "created_at": key.created_at,
        "created_by": key.created_by,
        "removed_at": key.removed_at,
    }


def key_from_row(row: RowMapping, *, prefix: str = "") -> AgentKey:
    """The key in ``row``, whose key columns may carry a ``prefix`` (when joined to agents)."""
    return AgentKey(
        agent_id=row[f"{prefix}agent_id"],
        kid=row[f"{prefix}kid"],
        jwk=MappingProxyType(row[f"{prefix}jwk"]),
        alg=row[f"{prefix}alg"],
        created_at=row[f"{prefix}created_at"],
        created_by=row[f"{prefix}created_by"],
        removed_at=row[f"{prefix}removed_at"],
    )


def instance_from_row(row: RowMapping) -> Instance:
    return Instance(
        agent_id=row["agent_id"],
        instance_id=row["instance_id"],
        spiffe_id=row["spiffe_id"],
        first_seen=row["first_seen"],
        last_seen=row["last_seen"],
        last_kid=row["last_kid"],
        last_auth_method=row["last_auth_method"],
    )


def operator_token_values(token: OperatorToken) -> dict[str, Any]:
    return {
        "id": token.id,
        "token_hash": token.token_hash,
        "role": str(token.role),
        "display_name": token.display_name,
        "created_at": token.created_at,
        "expires_at": token.expires_at,
        "created_by": token.created_by,
        "revoked_at": token.revoked_at,
    }


def operator_token_from_row(row: RowMapping) -> OperatorToken:
    return OperatorToken(
        id=row["id"],
        token_hash=row["token_hash"],
        role=Role(row["role"]),
        display_name=row["display_name"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        created_by=row["created_by"],
        revoked_at=row["revoked_at"],
    )


def stored_key_values(key: StoredKey) -> dict[str, Any]:
    return {
        "kid": key.kid,
        "purpose": str(key.purpose),
        "alg": key.alg,
        "public_pem": key.public_pem,
        "sealed_private": key.sealed_private,
        "created_at": key.created_at,
        "certificate_pem": key.certificate_pem,
        "retired_at": key.retired_at,
        "publish_until": key.publish_until,
    }


def _bytes(value: bytes | memoryview | None) -> bytes | None:
    return None if value is None else bytes(value)


def stored_key_from_row(row: RowMapping) -> StoredKey:
    return StoredKey(
        kid=row["kid"],
        purpose=KeyPurpose(row["purpose"]),
        alg=row["alg"],
        public_pem=bytes(row["public_pem"]),
        sealed_private=bytes(row["sealed_private"]),
        created_at=row["created_at"],
        certificate_pem=_bytes(row["certificate_pem"]),
        retired_at=row["retired_at"],
        publish_until=row["publish_until"],
    )


def audit_values(record: AuditRecord) -> dict[str, Any]:
    """The columns of a record stored before 0004 (without a log entry)."""
    return {
        "id": record.id,
        "type": record.type,
        "time": record.time,
        "actor": record.actor,
        "subject": record.subject,
        "outcome": str(record.outcome),
        "correlation_id": record.correlation_id,
        "details": dict(record.details),
    }


def audit_from_row(row: RowMapping) -> AuditRecord:
    """The record of ``row``: its log entry (the bytes the chain and the signed tree cover),
    or for a record stored before 0004 and not adopted yet, its columns.
    :class:`~tether.errors.AuditLogInvalid` if the entry is not a record or the columns
    queries look it up by (id, type, correlation id) say something else than it does: a row
    edited in the database is never shown as if it were the record."""
    entry = row["entry"]
    if entry is None:
        return _record_columns(row)
    try:
        record = AuditRecord.from_entry(bytes(entry))
    except (ValueError, KeyError, TypeError):
        record = None
    if record is None or (record.id, record.type, record.correlation_id) != (
        row["id"],
        row["type"],
        row["correlation_id"],
    ):
        raise AuditLogInvalid(
            f"audit record {row['id']!r} does not match its log entry: changed in the "
            "database (`tether audit verify` names what else was)",
            details={"record_id": row["id"]},
        )
    return record


def _record_columns(row: RowMapping) -> AuditRecord:
    return AuditRecord(
        id=row["id"],
        type=row["type"],
        time=row["time"],
        actor=row["actor"],
        subject=row["subject"],
        outcome=Outcome(row["outcome"]),
        correlation_id=row["correlation_id"],
        details=MappingProxyType(row["details"]),
    )


def policy_set_from_row(row: RowMapping) -> PolicySetVersion:
    return PolicySetVersion(
        version=row["version"],
        text=row["text"],
        sha256=row["sha256"],
        created_at=row["created_at"],
        created_by=row["created_by"],
        comment=row["comment"],
    )


def revocation_values(revocation: Revocation) -> dict[str, Any]:
    return {
        "id": revocation.id,
        "kind": str(revocation.kind),
        "target": revocation.target,
        "revoked_at": revocation.revoked_at,
        "until": revocation.until,
        "actor": revocation.actor,
        "reason": revocation.reason,
    }


def revocation_from_row(row: RowMapping) -> Revocation:
    return Revocation(
        id=row["id"],
        kind=RevocationKind(row["kind"]),
        target=row["target"],
        revoked_at=row["revoked_at"],
        until=row["until"],
        actor=row["actor"],
        reason=row["reason"],
    )

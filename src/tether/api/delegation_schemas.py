"""Request bodies and response shapes of ``/v1/users``, ``/v1/grants`` and ``/v1/approvals``.

A response never carries a password nor its hash: a user shows only ``password_set``. A user's
``role`` is their console role, or null (an end user).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from tether.api.schemas import Strict
from tether.crypto.passwords import MAX_PASSWORD
from tether.delegation.grants import MAX_PURPOSE, MAX_SCOPES
from tether.delegation.models import Approval, ApprovalState, Grant, User
from tether.identity.models import Role

__all__ = [
    "ApprovalAnswerIn",
    "BulkGrantRevokeIn",
    "GrantIn",
    "PasswordIn",
    "RoleIn",
    "UserIn",
    "approval_json",
    "grant_json",
    "user_json",
]


class UserIn(Strict):
    name: str = Field(max_length=128)
    password: str | None = Field(default=None, max_length=MAX_PASSWORD)
    display_name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=320)
    #: A console role (never ``root`` nor ``enforcement-point``); absent or null: none.
    role: Role | None = None


class RoleIn(Strict):
    #: Required, null included: ``{"role": null}`` takes the person's console role away.
    role: Role | None


class PasswordIn(Strict):
    password: str = Field(max_length=MAX_PASSWORD)
    #: Required when the user changes their own password.
    current_password: str | None = Field(default=None, max_length=MAX_PASSWORD)


class GrantIn(Strict):
    agent: str = Field(max_length=63)
    scopes: list[str] = Field(max_length=MAX_SCOPES)
    purpose: str = Field(max_length=MAX_PURPOSE)
    purpose_code: str = Field(max_length=64)
    session: str | None = Field(default=None, max_length=128)
    ttl_seconds: int | None = Field(default=None, ge=60)


class BulkGrantRevokeIn(Strict):
    user: str | None = Field(default=None, max_length=128)
    agent: str | None = Field(default=None, max_length=63)
    session: str | None = Field(default=None, max_length=128)
    reason: str | None = Field(default=None, max_length=500)


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "name": user.name,
        "display_name": user.display_name,
        "email": user.email,
        "state": str(user.state),
        "issuer": user.issuer,
        "subject": user.subject,
        "password_set": user.password_hash is not None,
        "role": None if user.role is None else str(user.role),
        "created_at": user.created_at.isoformat(),
        "updated_at": user.updated_at.isoformat(),
        "disabled_at": user.disabled_at.isoformat() if user.disabled_at else None,
        "version": user.version,
    }


def grant_json(grant: Grant) -> dict[str, Any]:
    return {
        "id": grant.id,
        "user": grant.user,
        "agent": grant.agent,
        "scopes": sorted(grant.scopes),
        "purpose": grant.purpose,
        "purpose_code": grant.purpose_code,
        "session": grant.session,
        "state": str(grant.state),
        "created_at": grant.created_at.isoformat(),
        "expires_at": grant.expires_at.isoformat(),
        "created_by": grant.created_by,
        "revoked_at": grant.revoked_at.isoformat() if grant.revoked_at else None,
        "revoked_by": grant.revoked_by,
        "revoke_reason": grant.revoke_reason,
        "version": grant.version,
    }


class ApprovalAnswerIn(Strict):
    #: The positions (in the request's ``authorization_details``) approved; all when absent.
    items: list[int] | None = Field(default=None, min_length=1, max_length=64)


def approval_json(approval: Approval, *, now: datetime) -> dict[str, Any]:
    """An approval request as its user (or security) sees it: what the agent asks to do,
    never the ``auth_req_id`` or the client's notification token."""
    return {
        "id": approval.id,
        "user": approval.user,
        "agent": approval.agent,
        "client": approval.client,
        "scope": sorted(approval.scope),
        "binding_message": approval.binding_message,
        "authorization_details": [dict(d) for d in approval.details],
        "state": "expired" if _lapsed(approval, now) else str(approval.state),
        "approved": list(approval.approved),
        "grant_id": approval.grant_id,
        "created_at": approval.created_at.isoformat(),
        "expires_at": approval.expires_at.isoformat(),
        "decided_at": approval.decided_at.isoformat() if approval.decided_at else None,
        "decided_by": approval.decided_by,
        "redeemed_at": approval.redeemed_at.isoformat() if approval.redeemed_at else None,
        "version": approval.version,
    }


def _lapsed(approval: Approval, now: datetime) -> bool:
    """Past its time without a token: a timeout is a refusal."""
    waiting = approval.state in (ApprovalState.PENDING, ApprovalState.APPROVED)
    return waiting and approval.expired(now)

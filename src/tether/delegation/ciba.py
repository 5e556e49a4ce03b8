"""OpenID CIBA with RFC 9396 authorization details: the request, the answer, the polling rules,
and the approval token a redeemed request gives.

Pure: values in, values or an OAuth error out, no I/O — the service that stores requests,
reaches the user and mints tokens is :mod:`tether.delegation.approvals`. Authlib has a CIBA
*client* grant only, and no maintained Python library has a CIBA server, so this is ours.

The rules (OpenID CIBA Core 1.0 §7, §10, §11, §13; RFC 9396 §2, §5; the issue):

* a request names its user by **exactly one** hint: ``login_hint`` (a Tether user name),
  ``id_token_hint`` (an ID token Tether issued) or ``login_hint_token`` (a delegated token of
  the user, which also names the grant the agent acts under). More or none:
  ``invalid_request``;
* ``scope`` includes ``openid`` (§7.1); ``authorization_details`` is required: a JSON array of
  1 to ``MAX_DETAILS`` objects, each with a ``type`` and the exact ``call`` it approves —
  ``{"action", "resource": {"type", "id"}, "arguments"}`` — whose digest (what the checkpoint
  computes from the same three, arguments in canonical JSON) Tether computes itself and
  stores as the item's ``call_digest``; a ``call_digest`` the client sends must be that one.
  The person sees the call that will run, never only a description the agent wrote of it.
  At most ``MAX_DETAILS_BYTES`` and ``MAX_DEPTH`` levels in all; anything else is
  ``invalid_authorization_details``;
* ``binding_message`` is short plain text a phone can show (``invalid_binding_message``);
* the request lives ``requested_expiry`` seconds, bounded by the server's maximum; a request
  not answered in time is refused (``expired_token``) — a timeout is a denial;
* the ``auth_req_id`` is 256 random bits; only its SHA-256 is stored;
* polling (§11): a client that is not the one that asked gets ``invalid_grant`` (nothing
  about the request is revealed); then ``expired_token`` once past the expiry,
  ``access_denied`` if refused, ``slow_down`` when polled sooner than ``interval`` seconds
  after the last poll, ``authorization_pending`` while waiting. A redeemed request is never
  redeemed again (``invalid_grant``);
* the user approves **some or all** of the items (RFC 9396 allows a partial grant), or
  refuses; the token carries the approved items only, names the approver and the approval,
  is single use (its ``jti``) and lives ``APPROVAL_TOKEN_TTL`` seconds at most.

Example::

    request = parse_backchannel_request(form, max_expiry=600, default_expiry=300)
    answered = answer(approval, user="alice", approve=[0], now=now)
    result = poll(answered, client=instance, now=now)   # result.ready, or result.error
"""

from __future__ import annotations

import json
import secrets
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any

from tether._internal.canonical import call_digest
from tether._internal.ids import sha256_hex
from tether.delegation.grants import parse_scopes
from tether.delegation.models import Approval, ApprovalState
from tether.errors import (
    AccessDenied,
    AuthorizationPending,
    Conflict,
    Error,
    ExpiredToken,
    Forbidden,
    InvalidAuthorizationDetails,
    InvalidBindingMessage,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    SlowDown,
)

__all__ = [
    "APPROVAL_TOKEN_TTL",
    "GRANT_TYPE",
    "MAX_DETAILS",
    "MAX_DETAILS_BYTES",
    "BackchannelRequest",
    "PollResult",
    "answer",
    "approval_claims",
    "auth_req_key",
    "bound_approval",
    "new_auth_req_id",
    "parse_authorization_details",
    "parse_backchannel_request",
    "plain_binding_message",
    "poll",
    "redeemed",
]

GRANT_TYPE = "urn:openid:params:grant-type:ciba"
#: Items one request may hold, and their JSON size in all.
MAX_DETAILS = 8
MAX_DETAILS_BYTES = 8192
#: How deeply the array of items, an item and its fields may nest, in all.
MAX_DEPTH = 32
#: Characters of a binding message (CIBA Core §7.1: "relatively short").
MAX_BINDING_MESSAGE = 100
#: An approval token's life at most (seconds): long enough to make the approved call.
APPROVAL_TOKEN_TTL = 120
#: The fields of an item Tether reads; the others describe the operation to the user.
_TYPE_FIELD, _CALL_FIELD, _DIGEST_FIELD = "type", "call", "call_digest"
_HINTS = ("login_hint", "id_token_hint", "login_hint_token")


@dataclass(frozen=True, kw_only=True)
class BackchannelRequest:
    """A checked backchannel authentication request (CIBA Core §7.1). ``hint`` is which of
    the three hints named the user, ``hint_value`` its value (resolved by the service)."""

    hint: str
    hint_value: str
    scope: frozenset[str]
    details: tuple[Mapping[str, Any], ...]
    binding_message: str | None
    expires_in: int
    client_notification_token: str | None


def parse_backchannel_request(
    form: Mapping[str, str], *, max_expiry: int, default_expiry: int
) -> BackchannelRequest:
    """The request in ``form`` (the endpoint's fields, client authentication taken out), or
    the OAuth error it deserves."""
    hints = [name for name in _HINTS if form.get(name)]
    if len(hints) != 1:
        raise InvalidRequest("name the user by exactly one of " + ", ".join(_HINTS))
    scope = parse_scopes(form.get("scope") or "")
    if "openid" not in scope:
        raise InvalidScope("a backchannel authentication request asks for the openid scope")
    notification = form.get("client_notification_token") or None
    if notification is not None and not 1 <= len(notification) <= 1024:
        raise InvalidRequest("client_notification_token is 1 to 1024 characters")
    return BackchannelRequest(
        hint=hints[0],
        hint_value=form[hints[0]],
        scope=scope,
        details=parse_authorization_details(form.get("authorization_details")),
        binding_message=plain_binding_message(form.get("binding_message")),
        expires_in=_expiry(form.get("requested_expiry"), max_expiry, default_expiry),
        client_notification_token=notification,
    )


def parse_authorization_details(value: str | None) -> tuple[Mapping[str, Any], ...]:
    """RFC 9396 §2: a JSON array of objects with a ``type``; Tether's items also carry the
    ``call_digest`` of the call they approve."""
    if not value:
        raise InvalidAuthorizationDetails(
            "authorization_details is required: the operations to approve, each with the "
            "call_digest of its exact call"
        )
    if len(value.encode()) > MAX_DETAILS_BYTES:
        raise InvalidAuthorizationDetails(
            f"authorization_details is at most {MAX_DETAILS_BYTES} bytes"
        )
    try:
        items = json.loads(value)
    except (ValueError, RecursionError):
        raise InvalidAuthorizationDetails("authorization_details is not JSON") from None
    if _depth(items) > MAX_DEPTH:
        raise InvalidAuthorizationDetails(
            f"authorization_details nests at most {MAX_DEPTH} levels deep"
        )
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_DETAILS:
        raise InvalidAuthorizationDetails(
            f"authorization_details is a JSON array of 1 to {MAX_DETAILS} objects"
        )
    return tuple(_detail(item, position) for position, item in enumerate(items))


def _depth(value: object) -> int:
    """How deeply ``value`` nests arrays and objects (a scalar: 0)."""
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _detail(item: object, position: int) -> Mapping[str, Any]:
    """One item, its ``call`` checked and its ``call_digest`` computed from it."""
    where = f"authorization_details[{position}]"
    if not isinstance(item, dict):
        raise InvalidAuthorizationDetails(f"{where} is not an object")
    kind = item.get(_TYPE_FIELD)
    if not isinstance(kind, str) or not 1 <= len(kind) <= 64:
        raise InvalidAuthorizationDetails(f"{where} has no type (1 to 64 characters)")
    described = {k: v for k, v in item.items() if k not in (_CALL_FIELD, _DIGEST_FIELD)}
    if not _plain(described):
        raise InvalidAuthorizationDetails(
            f"{where}: what describes the operation is plain text (no control or direction "
            "characters): it is shown to the person as it is"
        )
    digest = _call_digest(item.get(_CALL_FIELD), where)
    sent = item.get(_DIGEST_FIELD)
    if sent is not None and sent != digest:
        raise InvalidAuthorizationDetails(f"{where}: call_digest is not the digest of its call")
    return MappingProxyType({**item, _DIGEST_FIELD: digest})


def _call_digest(call: object, where: str) -> str:
    """The digest of ``{"action", "resource": {"type", "id"}, "arguments"}`` — the checkpoint's
    for the same call."""
    rule = (
        f'{where} has no call: {{"action", "resource": {{"type", "id"}}, "arguments"}}, the '
        "exact call it approves"
    )
    if not isinstance(call, dict) or not set(call) <= {"action", "resource", "arguments"}:
        raise InvalidAuthorizationDetails(rule)
    action, resource = call.get("action"), call.get("resource")
    if not isinstance(action, str) or not 1 <= len(action) <= 128:
        raise InvalidAuthorizationDetails(rule)
    if not isinstance(resource, dict) or set(resource) != {"type", "id"}:
        raise InvalidAuthorizationDetails(rule)
    if not all(isinstance(v, str) and 1 <= len(v) <= 256 for v in resource.values()):
        raise InvalidAuthorizationDetails(rule)
    uid = f'{resource["type"]}::"{resource["id"]}"'
    return call_digest(action, uid, call.get("arguments"))


def _plain(value: object) -> bool:
    """Every text in ``value`` (keys included) showable as it is."""
    if isinstance(value, str):
        return all(_showable(c) for c in value)
    if isinstance(value, dict):
        return all(_plain(k) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return True


def plain_binding_message(value: str | None) -> str | None:
    """``value`` if a device can show it as it is (``invalid_binding_message`` otherwise)."""
    if not value:
        return None
    if len(value) > MAX_BINDING_MESSAGE or not all(_showable(c) for c in value):
        raise InvalidBindingMessage(
            f"binding_message is at most {MAX_BINDING_MESSAGE} characters of plain text"
        )
    return value


def _showable(char: str) -> bool:
    """Letters, marks, digits, punctuation, symbols and the plain space: nothing that moves
    the cursor, hides text or changes its direction."""
    return char == " " or unicodedata.category(char)[0] in "LMNPS"


def _expiry(value: str | None, maximum: int, default: int) -> int:
    if not value:
        return min(default, maximum)
    try:
        seconds = int(value)
    except ValueError:
        raise InvalidRequest("requested_expiry is a whole number of seconds") from None
    if seconds < 1:
        raise InvalidRequest("requested_expiry is a positive number of seconds")
    return min(seconds, maximum)


def new_auth_req_id() -> str:
    """256 random bits (CIBA Core §7.3 asks for at least 128), URL-safe."""
    return secrets.token_urlsafe(32)


def auth_req_key(auth_req_id: str) -> str:
    """What is stored of an ``auth_req_id``: its SHA-256 (a stolen database names no live
    request a client could redeem)."""
    return sha256_hex(auth_req_id)


def answer(
    approval: Approval, *, user: str, approve: Iterable[int] | None, now: datetime
) -> Approval:
    """The user's answer: approve the items at the positions in ``approve`` (some or all),
    or refuse (``None`` or none). Only the user asked may answer, once, in time."""
    if user != approval.user:
        raise Forbidden("only the person asked may answer an approval request")
    if approval.state is not ApprovalState.PENDING:
        raise Conflict(f"the approval request was answered already ({approval.state})")
    if approval.expired(now):
        raise Conflict("the approval request has expired: it counts as refused")
    chosen = sorted(set(approve or ()))
    if any(not 0 <= i < len(approval.details) for i in chosen):
        raise InvalidRequest(f"the request holds items 0 to {len(approval.details) - 1}")
    state = ApprovalState.APPROVED if chosen else ApprovalState.DENIED
    return replace(approval, state=state, approved=tuple(chosen), decided_at=now, decided_by=user)


@dataclass(frozen=True, kw_only=True)
class PollResult:
    """A poll's outcome: the request as it is to be stored (its poll time recorded), and
    either the error to answer or ``ready`` (approved: redeem it now)."""

    approval: Approval
    error: Error | None = None

    @property
    def ready(self) -> bool:
        return self.error is None


def poll(approval: Approval, *, client: str, now: datetime) -> PollResult:
    """The token endpoint's answer to ``client`` polling for ``approval`` (CIBA Core §11)."""
    if client != approval.client:
        # Not the asker's: say nothing about the request, and leave its poll time alone.
        return PollResult(approval=approval, error=InvalidGrant("unknown auth_req_id"))
    if approval.state is ApprovalState.REDEEMED:
        return PollResult(approval=approval, error=InvalidGrant("the auth_req_id was redeemed"))
    return PollResult(
        approval=replace(approval, last_polled_at=now),
        error=_poll_error(approval, now),
    )


def _poll_error(approval: Approval, now: datetime) -> Error | None:
    last = approval.last_polled_at
    if approval.expired(now):
        return ExpiredToken("the approval request expired")
    if approval.state is ApprovalState.DENIED:
        return AccessDenied("the user refused")
    if last is not None and (now - last).total_seconds() < approval.interval:
        return SlowDown(f"poll at most every {approval.interval} seconds")
    if approval.state is ApprovalState.PENDING:
        return AuthorizationPending("the user has not answered yet")
    return None


def redeemed(approval: Approval, *, now: datetime) -> Approval:
    """``approval`` once its token is issued: never again."""
    if approval.state is not ApprovalState.APPROVED:
        raise InvalidGrant("only an approved request is redeemed")
    return replace(approval, state=ApprovalState.REDEEMED, redeemed_at=now)


def approval_claims(
    approval: Approval, *, now: int, issuer: str, audience: str, jti: str, ttl: int
) -> dict[str, Any]:
    """The claims of the token an approved request gives: the user as ``sub``, the asking
    instance as the actor, the approved items only, the approver and the approval named;
    single use (``jti``) and short-lived."""
    if approval.state is not ApprovalState.APPROVED or not approval.approved:
        raise InvalidGrant("only an approved request gives a token")
    exp = now + min(ttl, APPROVAL_TOKEN_TTL)
    return {
        "iss": issuer,
        "sub": approval.user,
        "aud": audience,
        "act": {"sub": approval.client},
        "client_id": approval.client,
        "scope": " ".join(sorted(approval.scope)),
        "token_use": "approval",
        "approval_id": approval.id,
        "approver": approval.decided_by,
        "authorization_details": [dict(d) for d in approval.approved_details],
        **({"grant_id": approval.grant_id} if approval.grant_id else {}),
        "iat": now,
        "nbf": now,
        "exp": exp,
        "jti": jti,
    }


def bound_approval(
    claims: Mapping[str, Any], *, call_digest: str, instance: str, user: str | None
) -> Mapping[str, Any] | None:
    """What an approval token proves for one call: ``{"id", "call_digest", "approver"}`` if
    it was given to ``instance`` (for ``user``, when the call is made for one) and approves
    an item bound to exactly ``call_digest``; ``None`` otherwise. The token's signature,
    expiry and single use are checked before (:mod:`tether.delegation.approvals`)."""
    if claims.get("token_use") != "approval":
        return None
    act = claims.get("act")
    if not isinstance(act, Mapping) or act.get("sub") != instance:
        return None
    if user is not None and claims.get("sub") != user:
        return None
    items = claims.get("authorization_details")
    if not isinstance(items, list) or not _approves(items, call_digest):
        return None
    return MappingProxyType(
        {
            "id": str(claims.get("approval_id")),
            "call_digest": call_digest,
            "approver": str(claims.get("approver")),
        }
    )


def _approves(items: Sequence[object], call_digest: str) -> bool:
    return any(isinstance(i, Mapping) and i.get(_DIGEST_FIELD) == call_digest for i in items)

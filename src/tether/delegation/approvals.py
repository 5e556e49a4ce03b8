"""Approvals: OpenID CIBA requests an agent makes so that its user approves one exact call.

The service around the pure rules of :mod:`tether.delegation.ciba`: an agent instance,
authenticated with ``private_key_jwt``, asks (``POST /oauth2/bc-authorize``); the request is
recorded, stored and the user is told (the notifier; the approvals inbox is the listing
below); the user answers — all, some or none of the items — with their own sign-in; the agent
polls the token endpoint with its ``auth_req_id`` (ping mode, CIBA Core §10.2: an agent that
declared a notification endpoint is told there, with its own ``client_notification_token``,
when the answer is in; the ``auth_req_id`` it needs then is kept sealed by the key-encryption
key) and, once approved, gets a single-use,
short-lived approval token carrying the approved items only, which the checkpoint accepts for
exactly the calls those items' digests name.

Every request, answer and redemption is an audit record naming the approver; so is every
refused redemption (a second one, or another client's): a sign of a leaked ``auth_req_id``.
Requests to one user are limited (``per_user_per_minute``): a prompt bombing a person's
phone until they tap "approve" is an attack on people, not on code.

Example::

    started = await approvals.start(form, client=authenticated_instance)
    await approvals.answer(approval_id, actor=Actor.user(name="alice"), approve=[0])
    issued = await approvals.redeem(started.auth_req_id, client=authenticated_instance)
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from tether._internal.clock import Clock
from tether._internal.ids import new_id
from tether.audit.records import AuditRecord, Outcome
from tether.audit.sink import AuditSink, audited
from tether.crypto.sealed import Sealer
from tether.delegation import ciba
from tether.delegation.ciba import APPROVAL_TOKEN_TTL, BackchannelRequest, auth_req_key
from tether.delegation.models import Approval, ApprovalMatch, ApprovalState, GrantMatch
from tether.delegation.token_exchange import act_chain
from tether.delegation.tokens import AccessTokens
from tether.errors import (
    ApprovalNotFound,
    Error,
    Forbidden,
    InvalidGrant,
    InvalidInput,
    InvalidRequest,
    SlowDown,
    UnknownUserId,
    VersionConflict,
)
from tether.identity.access import Actor, Permission, allowed
from tether.identity.client_auth import AuthenticatedClient
from tether.identity.models import Agent
from tether.identity.svid import AgentCaller
from tether.store.interfaces import ApprovalStore, GrantStore, UserStore

__all__ = ["Approvals", "IssuedApproval", "Notify", "Ping", "Started", "tell_nobody"]

#: Told of every new request (the webhook, ntfy, …); a failing notifier never fails the
#: request: the inbox still holds it.
Notify = Callable[[Approval], Awaitable[object]]
#: Tells an agent in ping mode (CIBA Core §10.2) that its request was answered: POST
#: ``{"auth_req_id"}`` to ``endpoint`` with the client's ``client_notification_token`` as the
#: bearer token — ``(endpoint, token, auth_req_id)``.
Ping = Callable[[str, str, str], Awaitable[object]]
#: What the client's notification token and the ``auth_req_id`` are sealed for (ping mode
#: needs the id itself; the store keeps it sealed, never in the clear).
_PING_PURPOSE = "approval-ping"
#: The ``type`` of the item an enforcement point asks for: one call, as the checkpoint saw it.
CALL_TYPE = "tether_call"
#: An answer racing the agent's polls is written again on the request as it is now; a poll
#: racing the answer (or another poll) is answered again from the request as it is now.
ANSWER_TRIES = 3


async def tell_nobody(_approval: Approval) -> None:
    """The notifier when none is configured: the inbox alone holds the request."""


@dataclass(frozen=True, kw_only=True)
class Started:
    """The answer to a backchannel authentication request (CIBA Core §7.3)."""

    auth_req_id: str
    expires_in: int
    interval: int
    approval_id: str


@dataclass(frozen=True, kw_only=True)
class IssuedApproval:
    """What a redeemed request gives (CIBA Core §11.1): the approval token and an ID token."""

    access_token: str
    id_token: str
    expires_in: int
    jti: str
    approval: Approval


class Approvals:
    def __init__(
        self,
        *,
        store: ApprovalStore,
        users: UserStore,
        grants: GrantStore,
        tokens: AccessTokens,
        audit: AuditSink,
        clock: Clock,
        issuer: str,
        max_expiry: int = 600,
        default_expiry: int = 300,
        interval: int = 5,
        per_user_per_minute: int = 5,
        notify: Notify = tell_nobody,
        on_problem: Callable[[str, Mapping[str, object]], None] | None = None,
        sealer: Sealer | None = None,
        ping: Ping | None = None,
    ) -> None:
        self._sealer = sealer
        self._ping = ping
        self._store = store
        self._users = users
        self._grants = grants
        self._tokens = tokens
        self._audit = audit
        self._clock = clock
        self._issuer = issuer
        self._max_expiry = max_expiry
        self._default_expiry = default_expiry
        self._interval = interval
        self._per_minute = per_user_per_minute
        self._notify = notify
        self._on_problem = on_problem

    # -- the agent asks ----------------------------------------------------------------

    async def start(self, form: Mapping[str, str], *, client: AuthenticatedClient) -> Started:
        """A backchannel authentication request from ``client`` (its fields in ``form``)."""
        request = ciba.parse_backchannel_request(
            form, max_expiry=self._max_expiry, default_expiry=self._default_expiry
        )
        endpoint = client.agent.declarations.notification_endpoint
        self._check_mode(endpoint, request.client_notification_token)
        instance = client.instance.spiffe_id
        user, grant_id = await self._user(request, instance)
        return await self._open(
            client.agent, instance, request, user=user, grant_id=grant_id, endpoint=endpoint
        )

    async def start_for_call(
        self,
        *,
        caller: AgentCaller,
        call: Mapping[str, Any],
        call_digest: str,
        user: str,
        grant_id: str | None,
        binding_message: str | None = None,
    ) -> Started:
        """An enforcement point starts the request for the agent whose ``call`` needs an
        approval — for the user it acts for (``grant_id``), or, for its own call, one of its
        owners — in poll mode: the agent redeems it with its own client authentication.
        ``call_digest`` is the checkpoint's; the item's must be the same."""
        details = ciba.parse_authorization_details(
            json.dumps([{"type": CALL_TYPE, "call": dict(call)}])
        )
        if details[0]["call_digest"] != call_digest:
            raise InvalidInput("the call to approve is not the call that was decided")
        person = await self._users.get_user(user) if grant_id is None else None
        if grant_id is None and (person is None or not person.active):
            raise UnknownUserId("login_hint names no active user")
        request = BackchannelRequest(
            hint="enforcement_point", hint_value=user, scope=frozenset({"openid"}),
            details=details, binding_message=ciba.plain_binding_message(binding_message),
            expires_in=self._default_expiry, client_notification_token=None,
        )  # fmt: skip
        return await self._open(
            caller.agent, caller.spiffe_id, request, user=user, grant_id=grant_id, endpoint=None
        )

    async def _open(
        self,
        agent: Agent,
        instance: str,
        request: BackchannelRequest,
        *,
        user: str,
        grant_id: str | None,
        endpoint: str | None,
    ) -> Started:
        """Store, record and announce a request of ``instance`` to ``user``."""
        now = self._clock.now()
        if grant_id is None and not await self._may_ask(agent, user, now):
            raise UnknownUserId("the hint names no person this agent may ask")
        recent = await self._store.count_approvals(user=user, since=now - timedelta(minutes=1))
        if recent >= self._per_minute:
            raise SlowDown(f"at most {self._per_minute} approval requests a minute to one person")
        auth_req_id = ciba.new_auth_req_id()
        approval = Approval(
            id=new_id("apr"),
            auth_req_key=auth_req_key(auth_req_id),
            client=instance,
            agent=agent.name,
            user=user,
            scope=request.scope,
            binding_message=request.binding_message,
            details=request.details,
            created_at=now,
            expires_at=now + timedelta(seconds=request.expires_in),
            interval=self._interval,
            grant_id=grant_id,
            notification_endpoint=endpoint,
        )
        approval = self._sealed(approval, auth_req_id, request.client_notification_token)
        record = _record("approval.requested", instance, approval, now, _requested(approval))
        await audited(
            self._audit, record, lambda: self._store.create_approval(approval), clock=self._clock
        )
        await self._tell(approval)
        return Started(
            auth_req_id=auth_req_id,
            expires_in=request.expires_in,
            interval=self._interval,
            approval_id=approval.id,
        )

    def _check_mode(self, endpoint: str | None, token: str | None) -> None:
        """Ping mode for an agent that declared a notification endpoint (its token then
        required, CIBA Core §7.1), poll mode for the others."""
        if endpoint is None and token is not None:
            raise InvalidRequest("this agent polls: it declared no notification endpoint")
        if endpoint is not None and token is None:
            raise InvalidRequest("client_notification_token is required in ping mode")
        if endpoint is not None and (self._sealer is None or self._ping is None):
            raise InvalidRequest("ping mode is not offered by this server: poll")

    def _sealed(self, approval: Approval, auth_req_id: str, token: str | None) -> Approval:
        if approval.notification_endpoint is None or token is None or self._sealer is None:
            return approval
        value = {"token": token, "auth_req_id": auth_req_id}
        expires = int(approval.expires_at.timestamp())
        sealed = self._sealer.seal(value, purpose=_PING_PURPOSE, expires_at=expires)
        return replace(approval, notification_token=sealed)

    async def _pinged(self, approval: Approval) -> None:
        """Ping mode: tell the agent its request was answered; a failed ping is reported
        (the agent may still poll)."""
        sealed, endpoint = approval.notification_token, approval.notification_endpoint
        if sealed is None or endpoint is None or self._sealer is None or self._ping is None:
            return
        try:
            value = self._sealer.open(sealed, purpose=_PING_PURPOSE, now=self._clock.timestamp())
            await self._ping(endpoint, str(value["token"]), str(value["auth_req_id"]))
        except Exception as exc:  # noqa: BLE001 - reported; the agent may still poll
            self._report("approval.ping_failed", approval, exc)

    async def _user(self, request: BackchannelRequest, instance: str) -> tuple[str, str | None]:
        """The user the hint names (active), and the grant when a delegated token named them."""
        if request.hint == "login_hint":
            user = await self._users.get_user(request.hint_value)
            if user is None or not user.active:
                raise UnknownUserId("login_hint names no active user")
            return user.name, None
        if request.hint == "login_hint_token":
            return await self._delegated_user(request.hint_value, instance)
        try:  # id_token_hint: an ID token this server gave this instance (CIBA Core §7.1)
            claims = await self._tokens.id_token(request.hint_value, audiences=(instance,))
        except Error as exc:
            raise UnknownUserId("id_token_hint is not an ID token given to this client") from exc
        user = await self._users.get_user(claims.sub or "")
        if user is None or not user.active:
            raise UnknownUserId("id_token_hint names no active user")
        return user.name, None

    async def _delegated_user(self, token: str, instance: str) -> tuple[str, str | None]:
        """A delegated token this instance holds for the user: its ``sub`` and its grant."""
        try:
            claims = await self._tokens.verify_any_audience(token)
        except Error as exc:
            raise UnknownUserId("login_hint_token is not a valid delegated token") from exc
        raw = claims.claims
        chain = act_chain(raw.get("act")) if raw.get("token_use") == "delegated" else ()
        if not chain or chain[0] != instance:
            raise UnknownUserId("login_hint_token was not given to this agent instance")
        grant_id = raw.get("grant_id")
        return claims.sub or "", grant_id if isinstance(grant_id, str) else None

    async def _may_ask(self, agent: Agent, user: str, now: datetime) -> bool:
        """An agent asks the people it acts for (a grant in force) and its owners — no one
        else: prompting strangers until one taps "approve" is no approval."""
        if user in agent.owners:
            return True
        match = GrantMatch(user=user, agent=agent.name)
        return bool(await self._grants.list_grants(match, in_force_at=now, limit=1))

    async def _tell(self, approval: Approval) -> None:
        try:
            await self._notify(approval)
        except Exception as exc:  # noqa: BLE001 - reported; the inbox holds the request
            self._report("approval.notify_failed", approval, exc)

    def _report(self, kind: str, approval: Approval, exc: Exception) -> None:
        if self._on_problem is not None:
            self._on_problem(kind, {"approval_id": approval.id, "error": type(exc).__name__})

    # -- the user answers --------------------------------------------------------------

    async def answer(
        self, approval_id: str, *, actor: Actor, approve: Iterable[int] | None
    ) -> Approval:
        """The user's answer: the items at ``approve`` (some or all), or none (refused).
        Only the person asked answers — never an administrator for them."""
        found = await self._get(approval_id, actor=actor)
        if actor.kind != "user":
            raise Forbidden("only the person asked may answer an approval request")
        now = self._clock.now()
        answered = ciba.answer(found, user=actor.name, approve=approve, now=now)
        kind = (
            "approval.approved" if answered.state is ApprovalState.APPROVED else "approval.denied"
        )
        details = {"approver": actor.name, "approved": list(answered.approved)}
        record = _record(kind, actor.label, answered, now, details)

        async def store() -> Approval:
            current = found
            for _ in range(ANSWER_TRIES):
                stored = replace(
                    ciba.answer(current, user=actor.name, approve=approve, now=now),
                    version=current.version + 1,
                )
                try:
                    await self._store.update_approval(stored, expected_version=current.version)
                except VersionConflict:  # a poll moved it (its poll time): answer it as it is
                    current = await self._get(approval_id, actor=actor)
                else:
                    return stored
            raise VersionConflict("the approval request keeps changing: answer again")

        stored = await audited(self._audit, record, store, clock=self._clock)
        await self._pinged(stored)
        return stored

    async def get(self, approval_id: str, *, actor: Actor) -> Approval:
        return await self._get(approval_id, actor=actor)

    async def list(
        self, match: ApprovalMatch, *, actor: Actor, limit: int = 100, after: str | None = None
    ) -> builtins.list[Approval]:
        """A user sees the requests made to them; security admins and auditors see all."""
        if not allowed(actor, Permission.APPROVAL_READ):
            if actor.kind != "user":
                raise Forbidden("approval requests are read by the person asked, or by security")
            match = replace(match, user=actor.name)
        return await self._store.list_approvals(match, limit=limit, after=after)

    async def _get(self, approval_id: str, *, actor: Actor) -> Approval:
        found = await self._store.get_approval(approval_id)
        mine = found is not None and actor.kind == "user" and actor.name == found.user
        if found is None or not (mine or allowed(actor, Permission.APPROVAL_READ)):
            raise ApprovalNotFound("no such approval request")
        return found

    # -- the agent redeems -------------------------------------------------------------

    async def redeem(self, auth_req_id: str, *, client: AuthenticatedClient) -> IssuedApproval:
        """The token endpoint, ``grant_type=urn:openid:params:grant-type:ciba``."""
        return await self.redeem_for(auth_req_id, instance=client.instance.spiffe_id)

    async def status(self, auth_req_id: str) -> Approval | None:
        """The request as stored, for an enforcement point of this process waiting on the
        one it started (no poll is counted); None if ``auth_req_id`` names none."""
        return await self._store.find_approval(auth_req_key(auth_req_id)) if auth_req_id else None

    async def redeem_for(self, auth_req_id: str, *, instance: str) -> IssuedApproval:
        """:meth:`redeem` for ``instance`` as an enforcement point of this process
        authenticated it (the MCP gateway, redeeming the request it started for a call)."""
        if not auth_req_id:
            raise InvalidRequest("auth_req_id is required")
        for _ in range(ANSWER_TRIES):
            found = await self._store.find_approval(auth_req_key(auth_req_id))
            if found is None:
                raise InvalidGrant("unknown auth_req_id")
            result = ciba.poll(found, client=instance, now=self._clock.now())
            if isinstance(result.error, InvalidGrant):
                await self._refused(found, instance, result.error)
                raise result.error
            if result.error is None:
                return await self._issue(result.approval, found.version, instance)
            if await self._polled(result.approval, found.version):
                raise result.error
            # The request changed between the read and the write: the person answered it
            # (answer it as it is now), or another poll did (which the read now slows down).
        raise SlowDown("the approval request keeps changing: poll again after the interval")

    async def _polled(self, approval: Approval, version: int) -> bool:
        """Keep the poll's time (for ``slow_down``); False if the request changed meanwhile."""
        try:
            await self._store.update_approval(
                replace(approval, version=version + 1), expected_version=version
            )
        except VersionConflict:
            return False
        return True

    async def _issue(self, approval: Approval, version: int, instance: str) -> IssuedApproval:
        now = self._clock.now()
        used = replace(ciba.redeemed(approval, now=now), version=version + 1)
        stamp = int(now.timestamp())
        jti = new_id("jti")
        claims = ciba.approval_claims(
            approval, now=stamp, issuer=self._issuer, audience=self._issuer, jti=jti,
            ttl=APPROVAL_TOKEN_TTL,
        )  # fmt: skip
        details = {
            "jti": jti,
            "approver": used.decided_by,
            "call_digests": [d.get("call_digest") for d in used.approved_details],
            "exp": claims["exp"],
        }
        record = _record("approval.redeemed", instance, used, now, details)

        async def store() -> None:
            try:
                await self._store.update_approval(used, expected_version=version)
            except VersionConflict:  # redeemed (or polled) at the same moment: once only
                raise InvalidGrant("the auth_req_id was redeemed") from None

        await audited(self._audit, record, store, clock=self._clock)
        return IssuedApproval(
            access_token=self._tokens.sign_delegated(claims),
            id_token=self._tokens.sign_id_token(_id_claims(used, now=stamp, issuer=self._issuer)),
            expires_in=claims["exp"] - stamp,
            jti=jti,
            approval=used,
        )  # fmt: skip

    async def _refused(self, approval: Approval, instance: str, error: Error) -> None:
        details = {"error": error.code, "asker": approval.client}
        now = self._clock.now()
        record = _record("approval.redeem_refused", instance, approval, now, details)
        await self._audit.append(record)


def _record(
    kind: str, actor: str, approval: Approval, now: datetime, details: Mapping[str, Any]
) -> AuditRecord:
    return AuditRecord.new(
        type=kind,
        actor=actor,
        subject=f"user:{approval.user}",
        time=now,
        outcome=Outcome.FAILURE if kind == "approval.redeem_refused" else Outcome.SUCCESS,
        details={"approval_id": approval.id, **details},
    )


def _requested(approval: Approval) -> dict[str, Any]:
    return {
        "agent": approval.agent,
        "user": approval.user,
        "grant_id": approval.grant_id,
        "items": [
            {"type": d.get("type"), "call_digest": d.get("call_digest")} for d in approval.details
        ],
        "binding_message": approval.binding_message,
        "expires_at": approval.expires_at.isoformat(),
        "mode": "poll" if approval.notification_endpoint is None else "ping",
    }


def _id_claims(approval: Approval, *, now: int, issuer: str) -> dict[str, Any]:
    """The ID token of a redeemed request (CIBA Core §7.4 asks for it with ``openid``): the
    user, for the asking instance, authenticated when they answered."""
    decided = approval.decided_at or approval.created_at
    return {
        "iss": issuer,
        "sub": approval.user,
        "aud": approval.client,
        "iat": now,
        "exp": now + APPROVAL_TOKEN_TTL,
        "auth_time": int(decided.timestamp()),
        "jti": new_id("jti"),
        "approval_id": approval.id,
    }

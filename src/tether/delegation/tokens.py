"""Users' and delegated access tokens: minted, verified, revoked.

Both are JWT access tokens (RFC 9068: header ``typ`` ``at+jwt``), signed with the same ES256
keys as JWT-SVIDs but never mistaken for one (the keyring checks ``typ`` for each kind), and
told apart from each other by the signed ``token_use`` claim — the credential's provenance,
not the shape of the request that presents it:

* a **user token** (``token_use`` ``user``): ``sub`` the user, ``aud`` Tether, the OAuth
  client it was issued to, the scopes the user approved, the sign-in session ``sid``;
* a **delegated token** (``token_use`` ``delegated``, from :mod:`tether.delegation.exchange`):
  ``sub`` the user, ``act`` the agent instance (earlier actors nested), ``grant_id`` (and
  ``prior_grants`` up the chain), ``prior_jtis`` (the tokens it was exchanged from), ``scope``,
  ``purpose``, ``sid``, one ``aud``.

Verification is not only the signature: the user must still be active, every grant on the
chain still in force, and neither its ``jti`` nor that of any token it was exchanged from
revoked — looked up in memory (the grants' and users'
read-through caches, the revocation list), so revoking a grant or disabling a user refuses every
token derived from it at once, not at its expiry.

Example::

    issued = await tokens.issue_user_token(user=alice, client_id="spiffe://td/agent/shop-bot",
                                           scopes={"orders:read"}, session="sid_…")
    subject = await tokens.subject(issued.token, actor_ids={...})   # for token exchange
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from tether._internal.clock import Clock
from tether._internal.ids import new_id
from tether._internal.readthrough import ReadThrough
from tether.audit.records import AuditRecord
from tether.audit.sink import AuditSink
from tether.crypto.jwt import UnverifiedToken, VerifiedClaims
from tether.crypto.keyring import ACCESS_TOKEN_TYPE, KeyRing
from tether.delegation.ciba import bound_approval
from tether.delegation.federation import Federation
from tether.delegation.grants import ACCOUNT_SCOPE
from tether.delegation.models import Grant, User
from tether.delegation.token_exchange import MAX_READ_DEPTH, SubjectToken, act_chain
from tether.errors import Error, InvalidRequest, Unauthenticated
from tether.identity.access import Actor
from tether.identity.names import parse_agent_spiffe_id, parse_spiffe_id
from tether.identity.revocations import RevocationKind, RevocationList
from tether.identity.svid import VERIFY_LEEWAY, IssuedToken
from tether.policy.models import Entity, EntityRef

__all__ = [
    "AccessTokens",
    "Delegation",
    "ProvenApproval",
    "TokenUse",
    "issued_since_change",
    "user_entity",
]

TokenUse = Literal["user", "delegated"]


@dataclass(frozen=True, kw_only=True)
class ProvenApproval:
    """What an approval token (CIBA) proves for one exact call: the approval, its approver,
    the call's digest; its ``jti`` and expiry, for its single use."""

    id: str
    approver: str
    call_digest: str
    jti: str
    expires_at: int

    def policy_context(self) -> dict[str, str]:
        return {"id": self.id, "approver": self.approver, "call_digest": self.call_digest}


@dataclass(frozen=True, kw_only=True)
class Delegation:
    """A verified delegated token whose user, grants and actor chain are still good."""

    claims: VerifiedClaims
    user: str
    #: The actors, current first (RFC 8693 §4.1).
    chain: tuple[str, ...]
    grant: Grant
    scopes: frozenset[str]
    session: str | None

    def policy_context(self) -> dict[str, Any]:
        """What the token proves, for policies: the user, the grant, the purpose, the
        session and the chain of actors (the current one first)."""
        grant = self.grant
        context: dict[str, Any] = {
            "user": EntityRef("User", self.user),
            "grant_id": grant.id,
            "grant_expires_at": int(grant.expires_at.timestamp()),
            "scopes": set(self.scopes),
            "purpose": grant.purpose,
            "purpose_code": grant.purpose_code,
            "act_chain": set(self.chain),
            "act_depth": len(self.chain),
        }
        if self.session is not None:
            context["session"] = self.session
        return context


def user_entity(name: str) -> Entity:
    """The ``Tether::User`` entity policies see for the user a token acts for."""
    return Entity(
        ref=EntityRef("User", name),
        attrs=MappingProxyType({"name": name, "groups": frozenset()}),
    )


class AccessTokens:
    """Mints users' and delegated access tokens and verifies them against the state that can
    end them (the user, the grants, the revocation list) — see the module."""

    def __init__(
        self,
        *,
        keyring: KeyRing,
        clock: Clock,
        audit: AuditSink,
        issuer: str,
        users: ReadThrough[str, User],
        grants: ReadThrough[str, Grant],
        revocations: RevocationList,
        user_token_ttl: int,
        federation: Federation | None = None,
    ) -> None:
        self._federation = federation
        self._keyring = keyring
        self._clock = clock
        self._audit = audit
        self._issuer = issuer
        self._users = users
        self._grants = grants
        self._revocations = revocations
        self._user_ttl = user_token_ttl

    async def issue_user_token(
        self,
        *,
        user: User,
        client_id: str,
        scopes: Collection[str],
        session: str | None,
        correlation_id: str | None = None,
        jti: str | None = None,
    ) -> IssuedToken:
        """A user's access token for Tether (what an agent exchanges; with the account scope,
        also what signs the person in to their own account), recorded as ``token.issued``."""
        now = self._clock.timestamp()
        jti = jti or new_id("jti")
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "sub": user.name,
            "aud": self._issuer,
            "client_id": client_id,
            "scope": " ".join(sorted(scopes)),
            "token_use": "user",
            "iat": now,
            "nbf": now,
            "exp": now + self._user_ttl,
            "jti": jti,
        }
        if session is not None:
            claims["sid"] = session
        token = self._keyring.signer.sign_jwt(claims, typ=ACCESS_TOKEN_TYPE)
        await self._audit.append(
            AuditRecord.new(
                type="token.issued",
                actor=f"user:{user.name}",
                subject=f"user:{user.name}",
                time=self._clock.now(),
                correlation_id=correlation_id,
                details={
                    "jti": jti,
                    "token_use": "user",
                    "client_id": client_id,
                    "scopes": sorted(scopes),
                    "sid": session,
                    "exp": now + self._user_ttl,
                },
            )
        )
        return IssuedToken(
            token=token, expires_in=self._user_ttl, jti=jti, audience=(self._issuer,)
        )

    def forget_user(self, name: str) -> None:
        """Read the user afresh on the next check (the users service changed them)."""
        self._users.invalidate(name)

    def forget_users(self) -> None:
        self._users.invalidate_all()

    def sign_id_token(self, claims: Mapping[str, Any]) -> str:
        """An OpenID Connect ID token (``aud`` the client; never an access token)."""
        return self._keyring.signer.sign_jwt(claims)

    def sign_delegated(self, claims: Mapping[str, Any]) -> str:
        return self._keyring.signer.sign_jwt(claims, typ=ACCESS_TOKEN_TYPE)

    async def verify(self, token: str, *, audiences: Iterable[str]) -> VerifiedClaims:
        """An access token Tether issued for one of ``audiences``, whose user is active, whose
        grants are in force and whose ``jti`` is not revoked; ``Unauthenticated`` otherwise."""
        claims = await self._verified(token, audiences)
        await self._check_state(claims)
        return claims

    @property
    def federation(self) -> Federation | None:
        return self._federation

    def is_external(self, token: str) -> bool:
        """Whether ``token`` claims a trusted external provider as its issuer (routing only)."""
        return self._federation is not None and self._federation.knows(token)

    async def external_user(self, token: str) -> str:
        """The user a trusted external provider's token names (verified); ``Unauthenticated``
        otherwise."""
        if self._federation is None:
            raise Unauthenticated("no external provider is trusted here")
        user, _ = await self._federation.verify(token)
        return user.name

    async def user_of(self, token: str) -> str:
        """The person a token of their own account names: Tether's user token carrying
        :data:`~tether.delegation.grants.ACCOUNT_SCOPE` (``tether login``, the console) —
        never a token an application or an agent holds, never a delegated one, never an
        external provider's (a person of another provider signs in here to act on their
        account). ``Unauthenticated`` otherwise."""
        claims = await self.verify(token, audiences=(self._issuer,))
        scopes = str(claims.claims.get("scope") or "").split()
        if claims.claims.get("token_use") != "user" or ACCOUNT_SCOPE not in scopes:
            raise Unauthenticated(
                "this needs the person's own sign-in (tether login): an application's or an "
                "agent's token is not enough"
            )
        return claims.sub or ""

    async def subject(self, token: str, *, audiences: Iterable[str]) -> SubjectToken:
        """A subject token for exchange (RFC 8693 §2.1); ``invalid_request`` if it is not
        one (bad signature, wrong audience, expired, revoked, its user or grant gone). A
        trusted external provider's token stands for its (Tether) user."""
        if self._federation is not None and self._federation.knows(token):
            return await _external_subject(self._federation, token)
        try:
            claims = await self.verify(token, audiences=audiences)
        except Unauthenticated as exc:
            raise InvalidRequest(f"invalid subject_token: {exc.message}") from exc
        raw = claims.claims
        delegated = raw.get("token_use") == "delegated"
        grants = _grant_ids(raw) if delegated else ()
        may_act = raw.get("may_act")
        return SubjectToken(
            lineage=(*_prior_jtis(raw), claims.jti or ""),
            user=claims.sub or "",
            scopes=frozenset(str(raw.get("scope") or "").split()),
            expires_at=claims.exp or 0,
            session=_str(raw.get("sid")),
            act=raw.get("act") if delegated else None,
            grants=grants,
            purpose_code=_str(raw.get("purpose")) if delegated else None,
            may_act=may_act if isinstance(may_act, Mapping) else None,
            app=_str(raw.get("app") if delegated else raw.get("client_id")),
        )

    async def delegation(self, token: str, *, audience: str) -> Delegation:
        """A delegated token for ``audience`` (the checkpoint's path). The token is verified
        whatever its audience first, so that a person's own token — valid, but not an
        agent's to present — is told apart (``details["reason"]`` ``impersonation``) from a
        delegated token meant for another audience (refused all the same)."""
        claims = await self.verify_any_audience(token)
        raw = claims.claims
        if raw.get("token_use") != "delegated":
            raise Unauthenticated(
                "a user's token without an actor: agents act for users only with a delegated token",
                details={"reason": "impersonation"},
            )
        if audience not in claims.aud:
            raise Unauthenticated("the delegated token was minted for another audience")
        grant = await self._grants.get(str(raw.get("grant_id")))
        if grant is None:  # checked by verify already
            raise Unauthenticated("the grant is gone")
        return Delegation(
            claims=claims,
            user=claims.sub or "",
            chain=act_chain(raw.get("act")),
            grant=grant,
            scopes=frozenset(str(raw.get("scope") or "").split()),
            session=_str(raw.get("sid")),
        )

    async def approval(
        self, token: str, *, call_digest: str, instance: str, user: str | None
    ) -> ProvenApproval:
        """The approval an approval token (:mod:`tether.delegation.ciba`) proves for one
        exact call by ``instance`` (for ``user``, when the call is made for one):
        ``Unauthenticated`` if it is not a live approval token of this server — its user
        active, its grant in force, not revoked — or if it approves another call, instance
        or user. Its single use is the caller's to spend."""
        try:
            claims = await self._keyring.verify_issued_reloading(
                token, audience=(self._issuer,), issuer=self._issuer,
                now=self._clock.timestamp(), leeway=VERIFY_LEEWAY, kind="access",
            )  # fmt: skip
        except Error as exc:
            raise Unauthenticated("not a valid approval token of this server") from exc
        proven = bound_approval(
            claims.claims, call_digest=call_digest, instance=instance, user=user
        )
        if proven is None:
            raise Unauthenticated("the approval token does not approve this exact call")
        await self._check_state(claims)
        return ProvenApproval(
            id=proven["id"], approver=proven["approver"], call_digest=call_digest,
            jti=claims.jti or "", expires_at=claims.exp or 0,
        )  # fmt: skip

    async def id_token(self, token: str, *, audiences: Collection[str]) -> VerifiedClaims:
        """An ID token this server issued to one of ``audiences`` (signature, issuer, times,
        ``auth_time``); ``Unauthenticated`` otherwise — a JWT-SVID is no ID token."""
        try:
            claims = await self._keyring.verify_issued_reloading(
                token, audience=audiences, issuer=self._issuer, now=self._clock.timestamp(),
                leeway=VERIFY_LEEWAY,
            )  # fmt: skip
        except Error as exc:
            raise Unauthenticated("not an ID token of this server") from exc
        if "auth_time" not in claims.claims:
            raise Unauthenticated("not an ID token of this server")
        return claims

    async def verify_any_audience(self, token: str) -> VerifiedClaims:
        """:meth:`verify`, for whichever audience the token names (the caller checks it)."""
        try:
            named = UnverifiedToken.parse(token).claims.get("aud")
        except Error as exc:
            raise Unauthenticated("not a valid access token of this server") from exc
        audiences = [named] if isinstance(named, str) else list(named or [])
        return await self.verify(token, audiences=[a for a in audiences if isinstance(a, str)][:5])

    async def introspect(self, token: str) -> VerifiedClaims | None:
        """RFC 7662: the claims of an active access token of this server, whatever its
        audience (the resource server compares ``aud`` itself), or ``None``."""
        try:
            return await self.verify_any_audience(token)
        except Error:
            return None

    async def revoke(self, token: str, *, actor: Actor) -> str | None:
        """RFC 7009: revoke the access token presented (holding it is the authority to end
        it). Returns its ``jti``, or ``None`` for a token that is not a valid Tether access
        token (which §2.2 answers with 200 all the same)."""
        claims = await self.introspect(token)
        if claims is None:
            return None
        jti = claims.jti or ""
        facts = {"token_use": claims.claims.get("token_use"), "sub": claims.sub}
        await self.revoke_jti(jti, actor=actor, facts=facts)
        return jti

    async def revoke_jti(
        self, jti: str, *, actor: Actor, facts: Mapping[str, object] | None = None
    ) -> None:
        """Revoke the token with this ``jti`` (and so every token exchanged from it)."""
        entry = self._revocations.entry(kind=RevocationKind.JTI, target=jti, actor=actor.label)
        await self._audit.append(
            AuditRecord.new(
                type="token.revoked",
                actor=actor.label,
                subject=f"jti:{jti}",
                time=entry.revoked_at,
                details={"jti": jti, **(facts or {})},
            )
        )
        await self._revocations.record(entry)

    async def _verified(self, token: str, audiences: Iterable[str] | None) -> VerifiedClaims:
        """The signature, ``typ``, issuer, times and one of ``audiences`` (Tether when None),
        in one verification."""
        wanted = tuple(audiences or ()) or (self._issuer,)
        try:
            claims = await self._keyring.verify_issued_reloading(
                token, audience=wanted, issuer=self._issuer, now=self._clock.timestamp(),
                leeway=VERIFY_LEEWAY, kind="access",
            )  # fmt: skip
        except Error as exc:
            raise Unauthenticated("not a valid access token of this server") from exc
        if claims.claims.get("token_use") not in ("user", "delegated"):
            raise Unauthenticated("not a valid access token of this server")
        return claims

    async def _check_state(self, claims: VerifiedClaims) -> None:
        raw = claims.claims
        use = raw.get("token_use")
        chain = act_chain(raw.get("act")) if use in ("delegated", "approval") else ()
        current = chain[0] if chain else None
        agent = _agent_of(current)
        revoked = self._revocations.is_revoked(
            jti=claims.jti, agent=agent or "", instance=current, issued_at=claims.iat
        )
        if revoked is not None:
            raise Unauthenticated("the token is revoked", details={"reason": "revoked"})
        if any(self._revocations.is_revoked(jti=j, agent="", instance=None, issued_at=None)
               for j in _prior_jtis(raw)):  # fmt: skip
            raise Unauthenticated(
                "a token this one was exchanged from is revoked", details={"reason": "revoked"}
            )
        user = await self._users.get(claims.sub or "")
        if user is None or not user.active:
            raise Unauthenticated("the user is disabled or unknown")
        if not issued_since_change(user, claims.iat):
            raise Unauthenticated("the token was issued before the user's last change")
        if use not in ("delegated", "approval"):
            return
        moment = self._clock.now()
        named = _str(raw.get("grant_id"))
        grants = _grant_ids(raw) if use == "delegated" else (named,) if named else ()
        for grant_id in grants:
            grant = await self._grants.get(grant_id)
            if grant is None or grant.user != user.name or not grant.in_force(moment):
                raise Unauthenticated(
                    "a grant this token rests on is revoked or expired",
                    details={"reason": "revoked"},
                )


async def _external_subject(federation: Federation, token: str) -> SubjectToken:
    try:
        user, claims = await federation.verify(token)
    except Unauthenticated as exc:
        raise InvalidRequest(f"invalid subject_token: {exc.message}") from exc
    raw = claims.claims
    scp = raw.get("scp")
    named = scp if isinstance(scp, list) else raw.get("scope")
    if isinstance(named, str):
        named = named.split()
    return SubjectToken(
        user=user.name,
        scopes=frozenset(str(s) for s in named) if isinstance(named, list) else None,
        expires_at=claims.exp or 0,
        session=_str(raw.get("sid")),
        may_act=raw.get("may_act") if isinstance(raw.get("may_act"), Mapping) else None,
        app=_str(raw.get("azp") or raw.get("client_id")),
    )


def issued_since_change(user: User, issued_at: int | None) -> bool:
    """Whether something issued at ``issued_at`` (a token's ``iat``, a session's sign-in)
    postdates the user's last change — a new password, a disable, an enable — which ends
    every earlier token and session of theirs. Federated users change at their provider."""
    if issued_at is None:
        return False
    return issued_at >= int(user.updated_at.timestamp())


def _prior_jtis(raw: Mapping[str, Any]) -> tuple[str, ...]:
    """The tokens this one was exchanged from (oldest first), as its ``prior_jtis`` says."""
    prior = raw.get("prior_jtis") or []
    if not isinstance(prior, list) or len(prior) > MAX_READ_DEPTH:
        raise Unauthenticated("a malformed prior_jtis claim")
    return tuple(str(j) for j in prior)


def _grant_ids(raw: Mapping[str, Any]) -> tuple[str, ...]:
    prior = raw.get("prior_grants") or []
    current = raw.get("grant_id")
    if not isinstance(prior, list) or not isinstance(current, str):
        raise Unauthenticated("a delegated token without its grant")
    return (*(str(g) for g in prior), current)


def _agent_of(spiffe_id: str | None) -> str | None:
    """The agent named by an instance SPIFFE ID (None if it names none)."""
    if spiffe_id is None:
        return None
    try:
        parsed = parse_spiffe_id(spiffe_id)
        return parse_agent_spiffe_id(spiffe_id, trust_domain=parsed.trust_domain).name
    except Error:
        return None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None

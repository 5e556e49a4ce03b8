"""The built-in OpenID provider: the authorization code flow with PKCE, sign-in, consent and
ID tokens (RFC 6749 §4.1, RFC 7636, RFC 9207, OpenID Connect Core 1.0 §3.1).

Authlib offers no server integration for Starlette or FastAPI (and none of token exchange,
which this flow feeds), so the flow is ours; its pieces are small and each follows the RFC:

* ``GET /oauth2/authorize`` is checked by :meth:`Provider.begin`: a known client and one of
  its redirect URIs (otherwise the person sees the error; nothing is sent to an unverified
  URI), ``response_type=code``, a PKCE ``code_challenge`` with ``S256`` (``plain`` is refused),
  scopes, and — when the client fronts an agent or names one (``agent``) — a ``purpose`` and
  ``purpose_code``: what the consent page asks the person to grant;
* the request travels between the sign-in and consent pages **sealed** (AES-GCM, key from the
  KEK: :mod:`tether.crypto.sealed`), bound to the browser (a cookie set on the first page,
  against login CSRF) and, for consent, to the sign-in session (against consent CSRF);
* approving creates the :class:`~tether.delegation.models.Grant`; the **code** is sealed too,
  lives 60 s and is redeemed once (the replay store remembers its id), by the same client, with
  the same redirect URI and the PKCE verifier;
* the token response carries the user's access token (:mod:`tether.delegation.tokens`), an ID
  token (``aud`` the client, ``nonce``, ``sid``, ``auth_time``) and the grant's id.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from tether._internal.clock import Clock
from tether._internal.ids import new_id
from tether.audit.records import AuditRecord
from tether.audit.sink import AuditSink
from tether.crypto.sealed import Sealer
from tether.delegation.clients import FIRST_PARTY, Clients
from tether.delegation.flows import s256
from tether.delegation.grants import ACCOUNT_SCOPE, RESERVED_SCOPES, Grants, parse_scopes
from tether.delegation.models import OAuthClient, User
from tether.delegation.throttle import SignInThrottle
from tether.delegation.tokens import AccessTokens, issued_since_change
from tether.delegation.users import Users
from tether.errors import (
    Error,
    InvalidGrant,
    InvalidRequest,
    ReplayDetected,
    TokenInvalid,
    Unauthenticated,
)
from tether.identity.access import Actor
from tether.identity.directory import AgentDirectory
from tether.store.interfaces import ReplayStore

__all__ = ["AuthorizationRequest", "Provider", "Redirect", "Session"]

CODE_TTL = 60
#: The sign-in and consent pages must be done within this long.
REQUEST_TTL = 600
_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")
_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")
_MAX_PARAM = 500
#: ``state`` is the client's to fill (a client often seals its own pending request in it, as
#: Tether does as a client of an external provider): longer than the other parameters.
_MAX_STATE = 2048


@dataclass(frozen=True, kw_only=True)
class AuthorizationRequest:
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str | None
    nonce: str | None
    code_challenge: str
    agent: str | None = None
    purpose: str | None = None
    purpose_code: str | None = None
    prompt: str | None = None

    @property
    def agent_scopes(self) -> frozenset[str]:
        return frozenset(self.scopes) - RESERVED_SCOPES


@dataclass(frozen=True, kw_only=True)
class Redirect:
    """Where to send the browser (303): the client's redirect URI with a code or an error."""

    url: str


@dataclass(frozen=True, kw_only=True)
class Session:
    sid: str
    user: str
    auth_time: int
    #: The sealed cookie value that carries it.
    cookie: str


class Provider:
    """The built-in provider's authorization code flow (see the module)."""

    def __init__(
        self,
        *,
        clients: Clients,
        users: Users,
        grants: Grants,
        tokens: AccessTokens,
        directory: AgentDirectory,
        replay: ReplayStore,
        sealer: Sealer,
        audit: AuditSink,
        clock: Clock,
        issuer: str,
        session_ttl: int,
        throttle: SignInThrottle | None = None,
    ) -> None:
        self._clients = clients
        self._users = users
        self._grants = grants
        self._tokens = tokens
        self._directory = directory
        self._replay = replay
        self._sealer = sealer
        self._audit = audit
        self._clock = clock
        self._issuer = issuer
        self._session_ttl = session_ttl
        self._throttle = throttle or SignInThrottle()

    # -- the request ---------------------------------------------------------------------

    async def begin(self, query: Mapping[str, str]) -> AuthorizationRequest | Redirect:
        """The checked request, or a redirect carrying the error to the client. An unknown
        client or a redirect URI not its own raises ``InvalidRequest`` (shown, not sent)."""
        if any(len(v) > (_MAX_STATE if k == "state" else _MAX_PARAM) for k, v in query.items()):
            raise InvalidRequest(
                f"a parameter is at most {_MAX_PARAM} characters ({_MAX_STATE} for state)"
            )
        redirect_uri = query.get("redirect_uri", "")
        client = await self._clients.check_redirect(query.get("client_id", ""), redirect_uri)
        state = query.get("state") or None
        refused = _refusal(query, client)
        if refused is not None:
            return self.error_redirect(redirect_uri, state, *refused)
        request = AuthorizationRequest(
            client_id=client.id,
            redirect_uri=redirect_uri,
            scopes=tuple(sorted(parse_scopes(query.get("scope", "")))),
            state=state,
            nonce=query.get("nonce") or None,
            code_challenge=query["code_challenge"],
            agent=query.get("agent") or client.agent,
            purpose=query.get("purpose") or None,
            purpose_code=query.get("purpose_code") or None,
            prompt=query.get("prompt") or None,
        )
        return await self._check_agent(request) or request

    async def _check_agent(self, request: AuthorizationRequest) -> Redirect | None:
        def refuse(why: str) -> Redirect:
            return self.error_redirect(request.redirect_uri, request.state, "invalid_request", why)

        if request.agent is None:
            if request.agent_scopes:
                return refuse("scopes beyond openid, profile and email need an agent")
            return None
        found = await self._directory.get(request.agent)
        if found is None or not found.can_authenticate:
            return refuse("the agent is unknown or not active")
        if not request.agent_scopes:
            return refuse("name the scopes the agent asks for")
        if not request.purpose or not request.purpose_code:
            return refuse("an agent's request says why: purpose and purpose_code")
        return None

    def seal_request(self, request: AuthorizationRequest, *, bound_to: str) -> str:
        """The request as the next page's form carries it, bound to a browser or a session."""
        value = asdict(request) | {"bound_to": bound_to}
        return self._sealer.seal(value, purpose="authorize", expires_at=self._now() + REQUEST_TTL)

    def open_request(self, handle: str, *, bound_to: str) -> AuthorizationRequest:
        try:
            value = self._sealer.open(handle, purpose="authorize", now=self._now())
        except TokenInvalid as exc:
            raise InvalidRequest("this sign-in page has expired: start again") from exc
        if not hmac.compare_digest(str(value.pop("bound_to", "")), bound_to):
            raise InvalidRequest("this sign-in page belongs to another browser or session")
        value.pop("exp", None)
        value["scopes"] = tuple(value.get("scopes", ()))
        return AuthorizationRequest(**value)

    # -- sign-in -------------------------------------------------------------------------

    async def sign_in(self, *, name: str, password: str, address: str | None = None) -> Session:
        """A session for the person whose password this is; ``Unauthenticated``, or
        ``temporarily_unavailable`` while the name or the address has failed too often."""
        self._throttle.check(name=name, address=address)
        try:
            user = await self._users.authenticate(name=name, password=password)
        except Unauthenticated:
            self._throttle.failed(name=name, address=address)
            raise
        self._throttle.succeeded(name=name)
        return self.start_session(user.name)

    def start_session(self, user: str) -> Session:
        """A new sign-in session for ``user``, who has just proven who they are (a password
        here, or an ID token of their provider)."""
        now = self._now()
        sid = new_id("sid")
        value = {"sid": sid, "user": user, "auth_time": now}
        cookie = self._sealer.seal(value, purpose="session", expires_at=now + self._session_ttl)
        return Session(sid=sid, user=user, auth_time=now, cookie=cookie)

    async def session(self, cookie: str | None) -> Session | None:
        """The sign-in session a cookie carries, if it is still good and its user active."""
        if not cookie:
            return None
        try:
            value = self._sealer.open(cookie, purpose="session", now=self._now())
        except TokenInvalid:
            return None
        user = await self._users.active(str(value.get("user")))
        if user is None or not issued_since_change(user, int(value["auth_time"])):
            return None
        return Session(
            sid=str(value["sid"]), user=user.name, auth_time=int(value["auth_time"]),
            cookie=cookie,
        )  # fmt: skip

    # -- consent and the code ------------------------------------------------------------

    async def decide(
        self, request: AuthorizationRequest, session: Session, *, approve: bool
    ) -> Redirect:
        """The person approved (a grant for the agent, then a code) or refused."""
        if not approve:
            return self.error_redirect(
                request.redirect_uri, request.state, "access_denied", "the user refused"
            )
        grant_id = None
        if request.agent is not None:
            grant = await self._grants.create(
                actor=Actor.user(name=session.user),
                agent=request.agent,
                scopes=request.agent_scopes,
                purpose=request.purpose or "",
                purpose_code=request.purpose_code or "",
                session=session.sid,
            )
            grant_id = grant.id
        code_id = new_id("cod")
        code = {
            "cid": code_id, "client": request.client_id, "redirect_uri": request.redirect_uri,
            "user": session.user, "scopes": list(request.scopes), "sid": session.sid,
            "nonce": request.nonce, "challenge": request.code_challenge, "grant": grant_id,
            "auth_time": session.auth_time,
        }  # fmt: skip
        sealed = self._sealer.seal(code, purpose="code", expires_at=self._now() + CODE_TTL)
        await self._audit.append(
            AuditRecord.new(
                type="oauth.code_issued",
                actor=f"user:{session.user}",
                subject=f"client:{request.client_id}",
                time=self._clock.now(),
                details={
                    "code_id": code_id,
                    "client_id": request.client_id,
                    "scopes": list(request.scopes),
                    "grant_id": grant_id,
                    "sid": session.sid,
                },
            )
        )
        query = {"code": sealed, "iss": self._issuer}
        if request.state is not None:
            query["state"] = request.state
        return Redirect(url=_with_query(request.redirect_uri, query))

    async def redeem(self, params: Mapping[str, str]) -> dict[str, Any]:
        """RFC 6749 §4.1.3: the code for the user's access token and an ID token;
        ``invalid_grant`` for a code that is expired, altered, redeemed before, or presented
        by another client, for another redirect URI or without its PKCE verifier."""
        try:
            code = self._sealer.open(params.get("code", ""), purpose="code", now=self._now())
        except TokenInvalid as exc:
            raise InvalidGrant("the code is invalid or expired") from exc
        verifier = params.get("code_verifier", "")
        if not _VERIFIER.fullmatch(verifier):
            raise InvalidRequest("code_verifier is 43 to 128 unreserved characters (RFC 7636)")
        if (
            params.get("client_id") != code["client"]
            or params.get("redirect_uri") != code["redirect_uri"]
        ):
            raise InvalidGrant("the code was issued to another client or redirect URI")
        if not hmac.compare_digest(s256(verifier), str(code["challenge"])):
            raise InvalidGrant("the PKCE verifier does not match the challenge")
        try:
            await self._replay.consume_once(f"code:{code['cid']}", expires_at=_at(code["exp"]))
        except ReplayDetected as exc:
            # RFC 6749 §4.1.2: a code used twice is stolen — what it gave is revoked too.
            await self._tokens.revoke_jti(_token_jti(code), actor=Actor.system("oauth2-code"),
                                          facts={"reason": "code redeemed twice"})  # fmt: skip
            raise InvalidGrant("the code was already redeemed") from exc
        if await self._clients.get(str(code["client"])) is None:
            raise InvalidGrant("the client was removed")
        user = await self._users.active(str(code["user"]))
        if user is None:
            raise InvalidGrant("the user is disabled")
        return await self._tokens_for(user, code)

    async def _tokens_for(self, user: User, code: Mapping[str, Any]) -> dict[str, Any]:
        scopes = [str(s) for s in code["scopes"]]
        issued = await self._tokens.issue_user_token(
            user=user, client_id=str(code["client"]), scopes=scopes, session=str(code["sid"]),
            jti=_token_jti(code),
        )  # fmt: skip
        body: dict[str, Any] = {
            "access_token": issued.token,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "scope": " ".join(scopes),
        }
        if "openid" in scopes:
            body["id_token"] = self._id_token(user, code, issued.expires_in)
        if code.get("grant"):
            body["grant_id"] = code["grant"]
        return body

    def _id_token(self, user: User, code: Mapping[str, Any], ttl: int) -> str:
        now = self._now()
        claims: dict[str, Any] = {
            "iss": self._issuer, "sub": user.name, "aud": code["client"], "azp": code["client"],
            "iat": now, "exp": now + ttl, "auth_time": code["auth_time"], "sid": code["sid"],
            "jti": new_id("jti"),
        }  # fmt: skip
        if code.get("nonce"):
            claims["nonce"] = code["nonce"]
        scopes = set(code["scopes"])
        if "profile" in scopes:
            claims["preferred_username"] = user.name
            if user.display_name:
                claims["name"] = user.display_name
        if "email" in scopes and user.email:
            claims["email"] = user.email
        return self._tokens.sign_id_token(claims)

    def error_redirect(self, uri: str, state: str | None, error: str, why: str) -> Redirect:
        query = {"error": error, "error_description": why, "iss": self._issuer}
        if state is not None:
            query["state"] = state
        return Redirect(url=_with_query(uri, query))

    def _now(self) -> int:
        return self._clock.timestamp()


def _scopes_or_none(query: Mapping[str, str]) -> frozenset[str] | None:
    try:
        return parse_scopes(query.get("scope", ""))
    except Error:
        return None


def _refusal(query: Mapping[str, str], client: OAuthClient) -> tuple[str, str] | None:
    """The first rule of the request's form it breaks: (OAuth error, why), or None."""
    scopes = _scopes_or_none(query)
    asked = query.get("agent")
    rules = (
        ("response_type" not in query, "invalid_request", "response_type is required"),
        (query.get("response_type", "code") != "code", "unsupported_response_type",
         "only response_type=code is supported"),
        (query.get("code_challenge_method") != "S256", "invalid_request",
         "PKCE with code_challenge_method=S256 is required"),
        (not _CHALLENGE.fullmatch(query.get("code_challenge", "")), "invalid_request",
         "code_challenge is a base64url SHA-256"),
        (scopes is None, "invalid_scope", "scope is space-separated scope tokens"),
        (ACCOUNT_SCOPE in (scopes or ()) and client.id not in FIRST_PARTY, "invalid_scope",
         f"{ACCOUNT_SCOPE} is for Tether's own clients"),
        (client.agent is not None and asked not in (None, "", client.agent), "invalid_request",
         "this client asks for its own agent only"),
    )  # fmt: skip
    return next(((error, why) for broken, error, why in rules if broken), None)


def _token_jti(code: Mapping[str, Any]) -> str:
    """The ``jti`` of the access token a code gives (one per code), so a second use of the
    code can revoke it."""
    return "jti_" + str(code["cid"]).removeprefix("cod_")


def _with_query(uri: str, query: Mapping[str, str]) -> str:
    return f"{uri}{'&' if '?' in uri else '?'}{urlencode(query)}"


def _at(exp: object) -> datetime:
    return datetime.fromtimestamp(int(str(exp)), tz=UTC)

"""Signing in at Tether through an external provider: Tether is the OpenID Connect client
(Core §3.1, authorization code with PKCE), so the person's ID token goes from their provider
to Tether directly — never through an application or an agent.

From the sign-in page the person picks their provider; :meth:`FederatedSignIn.start` sends
them there (``client_id`` the audience Tether is known by at that provider, ``redirect_uri``
``<issuer>/oauth2/authorize/federated/callback``, a fresh PKCE verifier and ``nonce``, and a
``state`` that seals the pending authorization request, bound to the browser). On the way back
:meth:`FederatedSignIn.finish` opens the state, redeems the code at the provider's token
endpoint, verifies the ID token (:mod:`tether.delegation.federation`: keys, issuer, audience,
times) and its ``nonce``, and opens a Tether sign-in session for the person — after which the
flow goes on as for a password sign-in (consent, then the code to the application).

Example::

    url = await federated.start(provider="corp", handle=handle, browser=browser_id)
    request, session = await federated.finish(query=callback_query, browser=browser_id)
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlencode

from tether._internal.clock import Clock
from tether.audit.records import AuditRecord
from tether.audit.sink import AuditSink
from tether.crypto.sealed import Sealer
from tether.delegation.federation import Federation
from tether.delegation.flows import s256
from tether.delegation.provider import REQUEST_TTL, AuthorizationRequest, Provider, Session
from tether.errors import InvalidRequest, TokenInvalid, Unauthenticated

__all__ = ["CALLBACK_PATH", "FederatedSignIn", "PostForm"]

CALLBACK_PATH = "/oauth2/authorize/federated/callback"

#: POST a form and return (status, JSON object) — the edge provides it, with its own limits.
PostForm = Callable[[str, Mapping[str, str]], Awaitable[tuple[int, Mapping[str, Any]]]]


class FederatedSignIn:
    """The person's provider signs them in here (see the module)."""

    def __init__(
        self,
        *,
        federation: Federation,
        provider: Provider,
        sealer: Sealer,
        post_form: PostForm,
        audit: AuditSink,
        clock: Clock,
        issuer: str,
    ) -> None:
        self._federation = federation
        self._provider = provider
        self._sealer = sealer
        self._post_form = post_form
        self._audit = audit
        self._clock = clock
        self._callback = f"{issuer.rstrip('/')}{CALLBACK_PATH}"

    @property
    def providers(self) -> list[str]:
        return sorted(self._federation.by_name)

    async def start(self, *, provider: str, handle: str, browser: str) -> str:
        """Where to send the browser: the provider's authorization endpoint."""
        self._provider.open_request(handle, bound_to=browser)  # still good, and this browser's
        found = self._federation.by_name.get(provider)
        if found is None:
            raise InvalidRequest("no such provider")
        endpoint = await self._federation.keys(found.issuer).endpoint("authorization_endpoint")
        verifier, nonce = secrets.token_urlsafe(48), secrets.token_urlsafe(16)
        state = self._sealer.seal(
            {"handle": handle, "provider": provider, "verifier": verifier, "nonce": nonce,
             "bound_to": browser},
            purpose="federated", expires_at=self._clock.timestamp() + REQUEST_TTL,
        )  # fmt: skip
        query = {
            "response_type": "code", "client_id": found.audience, "redirect_uri": self._callback,
            "scope": "openid profile email", "state": state, "nonce": nonce,
            "code_challenge": s256(verifier), "code_challenge_method": "S256",
        }  # fmt: skip
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(query)}"

    async def finish(
        self, *, query: Mapping[str, str], browser: str
    ) -> tuple[AuthorizationRequest, Session]:
        """The pending request and the person's new session; ``InvalidRequest`` for a
        callback that is not this browser's, ``Unauthenticated`` for a refused sign-in."""
        try:
            state = self._sealer.open(
                query.get("state", ""), purpose="federated", now=self._clock.timestamp()
            )
        except TokenInvalid as exc:
            raise InvalidRequest("this sign-in has expired: start again") from exc
        if not hmac.compare_digest(str(state.get("bound_to", "")), browser):
            raise InvalidRequest("this sign-in belongs to another browser")
        request = self._provider.open_request(str(state["handle"]), bound_to=browser)
        found = self._federation.by_name[str(state["provider"])]
        if "error" in query or not query.get("code"):
            raise Unauthenticated(f"{found.name} did not sign the person in")
        if query.get("iss") not in (None, found.issuer):
            raise Unauthenticated("the answer comes from another provider (iss)")
        id_token = await self._redeem(found.issuer, found.audience, query["code"], state)
        user, claims = await self._federation.verify(id_token)
        if not hmac.compare_digest(str(claims.claims.get("nonce", "")), str(state["nonce"])):
            raise Unauthenticated("the ID token was not issued for this sign-in (nonce)")
        signed_in = AuditRecord.new(
            type="user.signed_in", actor=f"user:{user.name}", subject=f"user:{user.name}",
            time=self._clock.now(), details={"method": f"federated:{found.name}"},
        )  # fmt: skip
        await self._audit.append(signed_in)
        return request, self._provider.start_session(user.name)

    async def _redeem(
        self, issuer: str, client_id: str, code: str, state: Mapping[str, Any]
    ) -> str:
        endpoint = await self._federation.keys(issuer).endpoint("token_endpoint")
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": client_id,
            "redirect_uri": self._callback,
            "code_verifier": str(state["verifier"]),
        }
        status, body = await self._post_form(endpoint, form)
        id_token = body.get("id_token")
        if status != 200 or not isinstance(id_token, str):
            raise Unauthenticated("the provider did not redeem the code")
        return id_token

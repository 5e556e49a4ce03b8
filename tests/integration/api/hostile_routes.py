"""Who may reach each operation of ``/openapi.json``: the explicit table the reachability test
holds the API to, with one well-formed request per operation.

The permissions come from the product (``tether.identity.access``); which operations are open,
which admit agents or people, and which authenticate their callers by a protocol of their own is
written here, by hand, so a route that becomes open by accident — or a new route nobody
classified — fails the test.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tether.identity.access import Actor, Permission, allowed
from tether.identity.models import Role

P = Permission
OPERATORS = tuple(str(role) for role in Role)
#: Every kind of caller: each operator role, an agent (its JWT-SVID), a person (a token of
#: their own account), and nobody (no credentials).
CALLERS = (*OPERATORS, "agent", "user", "anonymous")


@dataclass(frozen=True)
class Guard:
    """Who gets through: operators whose role holds every one of ``permissions`` (every
    operator when ``any_operator``), plus the caller kinds in ``also``. ``protocol`` names why an
    operation is left out of the role matrix (it authenticates by client assertion, a
    sign-in session or the token it is asked about)."""

    path: str = ""
    json: object = None
    form: dict[str, str] | None = None
    permissions: tuple[Permission, ...] = ()
    also: frozenset[str] = field(default_factory=frozenset)
    any_operator: bool = False
    #: The product answers "not found" to whoever may not see the resource (it does not say
    #: that it exists): a 404 is a refusal here.
    hides: bool = False
    protocol: str = ""

    def refuses(self, status: int) -> bool:
        return status in {401, 403} or (self.hides and status == 404)

    def lets_through(self, caller: str) -> bool:
        if caller in self.also:
            return True
        if caller not in OPERATORS:
            return False
        if self.any_operator:
            return True
        actor = Actor.operator(token_id="opt_x", name="nobody-owns-this", role=Role(caller))
        return bool(self.permissions) and all(allowed(actor, p) for p in self.permissions)


def open_(path: str = "") -> Guard:
    return Guard(path=path, also=frozenset(CALLERS))


def needs(*permissions: Permission, path: str = "", json: object = None, **kw: object) -> Guard:
    return Guard(path=path, json=json, permissions=permissions, **kw)  # type: ignore[arg-type]


def protocol(reason: str) -> Guard:
    return Guard(protocol=reason)


AGENT, USER = frozenset({"agent"}), frozenset({"user"})
_OAUTH = "OAuth/OIDC: the client authenticates itself, or the person signs in"
_DECIDE = "a decision: an agent for itself, or DECISION_EVALUATE for others (403 means deny)"
_STATE = {"reason": "hostile suite"}
#: A vault engine holding one secret, handed out under the role ``reader``.
VAULT: dict[str, object] = {
    "kind": "vault",
    "roles": [{"name": "reader", "resource": "docs", "options": {"secret": "api-key"}}],
    "secret": '{"api-key": "hostile-suite-secret-0123"}',
}

#: Placeholders: {agent} {kid} {user} {token_id} {engine} {client} {server}.
ROUTES: dict[str, Guard] = {
    "GET /healthz": open_(),
    "GET /readyz": open_(),
    "GET /metrics": open_(),
    "GET /.well-known/authzen-configuration": open_(),
    "GET /.well-known/oauth-authorization-server": open_(),
    "GET /.well-known/openid-configuration": open_(),
    "GET /.well-known/jwks.json": open_(),
    "GET /.well-known/oauth-protected-resource/mcp/{name}": open_(
        "/.well-known/oauth-protected-resource/mcp/{server}"
    ),
    "GET /v1/svid/bundle": open_(),
    "GET /v1/svid/bundle.pem": open_(),
    "POST /access/v1/evaluation": protocol(_DECIDE),
    "POST /access/v1/evaluations": protocol(_DECIDE),
    **{
        f"{m} /v1/ext_authz/{{service}}/{{path}}": protocol(_DECIDE)
        for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
    },
    "POST /oauth2/token": protocol(_OAUTH),
    "POST /oauth2/introspect": protocol(_OAUTH),
    "POST /oauth2/revoke": protocol(_OAUTH),
    "GET /oauth2/authorize": protocol(_OAUTH),
    "POST /oauth2/authorize": protocol(_OAUTH),
    "POST /oauth2/authorize/login": protocol(_OAUTH),
    "GET /oauth2/authorize/federated": protocol(_OAUTH),
    "GET /oauth2/authorize/federated/callback": protocol(_OAUTH),
    "POST /oauth2/authorize/consent": protocol(_OAUTH),
    "GET /oauth2/userinfo": protocol(_OAUTH),
    "POST /oauth2/userinfo": protocol(_OAUTH),
    "POST /oauth2/bc-authorize": protocol(_OAUTH),
    "POST /v1/agents": needs(
        P.AGENT_REGISTER, json={"name": "new-bot", "owners": ["a-developer"], "declarations": {}}
    ),
    "GET /v1/agents": needs(P.AGENT_READ),
    "GET /v1/agents/{name}": needs(P.AGENT_READ, path="/v1/agents/{agent}"),
    "PATCH /v1/agents/{name}": needs(
        P.AGENT_UPDATE, path="/v1/agents/{agent}", json={"description": "changed"}
    ),
    "POST /v1/agents/{name}/approve": needs(P.AGENT_APPROVE, path="/v1/agents/{agent}/approve"),
    "GET /v1/agents/{name}/assessments": needs(P.AGENT_READ, path="/v1/agents/{agent}/assessments"),
    "GET /v1/agents/{name}/instances": needs(P.AGENT_READ, path="/v1/agents/{agent}/instances"),
    "GET /v1/agents/{name}/keys": needs(P.AGENT_READ, path="/v1/agents/{agent}/keys"),
    "POST /v1/agents/{name}/keys": needs(
        P.AGENT_KEYS, path="/v1/agents/{agent}/keys", json={"jwk": "{jwk}"}
    ),
    "DELETE /v1/agents/{name}/keys/{kid}": needs(
        P.AGENT_KEYS, path="/v1/agents/{agent}/keys/{kid}"
    ),
    "POST /v1/agents/{name}/{action}": needs(
        P.AGENT_QUARANTINE, path="/v1/agents/{agent}/quarantine", json=_STATE
    ),
    "GET /v1/tokens": needs(P.TOKEN_READ),
    "POST /v1/tokens": needs(P.TOKEN_CREATE, json={"role": "auditor", "display_name": "extra"}),
    "DELETE /v1/tokens/{token_id}": needs(P.TOKEN_REVOKE, path="/v1/tokens/{token_id}"),
    "GET /v1/tokens/self": Guard(any_operator=True),
    "POST /v1/svid/x509": Guard(also=AGENT, json={"csr": "not a CSR"}),
    "GET /v1/svid/revocations": needs(P.AGENT_READ),
    "POST /v1/svid/revocations": needs(P.SVID_REVOKE, json={"jti": "jti-unknown"}),
    "GET /v1/audit": needs(P.AUDIT_READ),
    "GET /v1/audit/key": needs(P.AUDIT_READ),
    "POST /v1/audit/hash": needs(P.AUDIT_READ, json={"value": "something"}),
    "GET /v1/audit/logs": needs(P.AUDIT_READ),
    "GET /v1/audit/verify": needs(P.AUDIT_READ),
    "GET /v1/audit/records/{record_id}/proof": needs(
        P.AUDIT_READ, path="/v1/audit/records/rec_unknown/proof"
    ),
    "GET /v1/audit/trace/{correlation_id}": needs(P.AUDIT_READ, path="/v1/audit/trace/corr-1"),
    "GET /v1/audit/export": needs(P.AUDIT_READ),
    "POST /v1/policies/check": needs(P.POLICY_READ, json={"text": "{policy}"}),
    "POST /v1/policies": needs(P.POLICY_APPLY, json={"text": "{policy}"}),
    "GET /v1/policies": needs(P.POLICY_READ),
    "GET /v1/policies/schema": needs(P.POLICY_READ),
    "GET /v1/policies/diff": needs(P.POLICY_READ),
    "GET /v1/policies/active": needs(P.POLICY_READ),
    "GET /v1/policies/{version}": needs(P.POLICY_READ, path="/v1/policies/1"),
    "POST /v1/policies/{version}/activate": needs(P.POLICY_APPLY, path="/v1/policies/1/activate"),
    "POST /v1/policies/replay": needs(P.POLICY_READ, P.AUDIT_READ, json={"text": "{policy}"}),
    "POST /v1/leases": Guard(also=AGENT, json={"engine": "{engine}", "role": "reader"}),
    "GET /v1/leases": needs(P.LEASE_READ, also=AGENT),
    "POST /v1/leases/revoke": needs(P.LEASE_REVOKE, json={"agent": "{agent}"}, also=AGENT),
    "GET /v1/leases/{lease_id}": needs(P.LEASE_READ, path="/v1/leases/{lease_id}", also=AGENT),
    "POST /v1/leases/{lease_id}/renew": needs(
        P.LEASE_RENEW, path="/v1/leases/{lease_id}/renew", also=AGENT
    ),
    "POST /v1/leases/{lease_id}/revoke": needs(
        P.LEASE_REVOKE, path="/v1/leases/{lease_id}/revoke", also=AGENT
    ),
    "PUT /v1/engines/{name}": needs(
        P.ENGINE_MANAGE,
        path="/v1/engines/other-vault",
        json=VAULT,
    ),
    "GET /v1/engines/{name}": needs(P.ENGINE_READ, path="/v1/engines/{engine}"),
    "DELETE /v1/engines/{name}": needs(P.ENGINE_MANAGE, path="/v1/engines/{engine}"),
    "GET /v1/engines": needs(P.ENGINE_READ),
    "GET /v1/engines/{name}/unmanaged-logins": needs(
        P.ENGINE_READ, path="/v1/engines/{engine}/unmanaged-logins"
    ),
    "GET /v1/engines/{name}/secrets": needs(P.ENGINE_MANAGE, path="/v1/engines/{engine}/secrets"),
    "PUT /v1/engines/{name}/secrets/{secret}": needs(
        P.ENGINE_MANAGE, path="/v1/engines/{engine}/secrets/api-key", json={"value": "v" * 20}
    ),
    "DELETE /v1/engines/{name}/secrets/{secret}": needs(
        P.ENGINE_MANAGE, path="/v1/engines/{engine}/secrets/api-key"
    ),
    "POST /v1/users": needs(P.USER_MANAGE, json={"name": "dave", "password": "p" * 16}),
    "GET /v1/users": needs(P.USER_READ),
    "GET /v1/users/{name}": needs(P.USER_READ, path="/v1/users/{user}", also=USER),
    "POST /v1/users/{name}/disable": needs(P.USER_MANAGE, path="/v1/users/{user}/disable"),
    "POST /v1/users/{name}/enable": needs(P.USER_MANAGE, path="/v1/users/{user}/enable"),
    "PUT /v1/users/{name}/role": needs(
        P.USER_MANAGE, path="/v1/users/{user}/role", json={"role": "auditor"}
    ),
    "POST /v1/grants": Guard(
        also=USER,
        json={"agent": "{agent}", "scopes": ["read"], "purpose": "x", "purpose_code": "support"},
    ),
    "GET /v1/grants": needs(P.GRANT_READ, also=USER),
    "POST /v1/grants/revoke": needs(P.GRANT_REVOKE, json={"user": "{user}"}, also=USER),
    "GET /v1/grants/{grant_id}": needs(P.GRANT_READ, path="/v1/grants/{grant_id}", also=USER),
    "DELETE /v1/grants/{grant_id}": needs(P.GRANT_REVOKE, path="/v1/grants/{grant_id}", also=USER),
    "GET /v1/clients": needs(P.CLIENT_READ),
    "POST /v1/clients": needs(
        P.CLIENT_MANAGE,
        json={"client_id": "new-app", "redirect_uris": ["https://app.acme.org/cb"]},
    ),
    "DELETE /v1/clients/{client_id}": needs(P.CLIENT_MANAGE, path="/v1/clients/{client}"),
    "GET /v1/approvals": needs(P.APPROVAL_READ, also=USER),
    "GET /v1/approvals/{approval_id}": needs(
        P.APPROVAL_READ, path="/v1/approvals/{approval_id}", also=USER, hides=True
    ),
    "POST /v1/approvals/{approval_id}/approve": Guard(
        path="/v1/approvals/{approval_id}/approve", json={}, also=USER, hides=True
    ),
    "POST /v1/approvals/{approval_id}/deny": Guard(
        path="/v1/approvals/{approval_id}/deny", also=USER, hides=True
    ),
    "GET /v1/mcp/servers": needs(P.MCP_READ),
    "POST /v1/mcp/servers": needs(
        P.MCP_MANAGE, json={"name": "other-mcp", "command": "{upstream}"}
    ),
    "GET /v1/mcp/servers/{name}": needs(P.MCP_READ, path="/v1/mcp/servers/{server}"),
    "DELETE /v1/mcp/servers/{name}": needs(P.MCP_MANAGE, path="/v1/mcp/servers/{server}"),
    "POST /v1/mcp/servers/{name}/tools/{tool}/approve": needs(
        P.MCP_MANAGE, path="/v1/mcp/servers/{server}/tools/lookup/approve", json={}
    ),
    #: Every operator lists alerts; each sees those ALERT_READ lets them (filtered, not refused).
    "GET /v1/alerts": Guard(any_operator=True),
    "GET /v1/alerts/{alert_id}": needs(P.ALERT_READ, path="/v1/alerts/{alert_id}", hides=True),
    "POST /v1/alerts/{alert_id}/acknowledge": needs(
        P.ALERT_MANAGE, path="/v1/alerts/{alert_id}/acknowledge", json={}, hides=True
    ),
    "POST /v1/alerts/{alert_id}/resolve": needs(
        P.ALERT_MANAGE, path="/v1/alerts/{alert_id}/resolve", json={}, hides=True
    ),
    "GET /v1/posture": needs(P.POSTURE_READ),
    "POST /v1/posture/secrets": needs(P.POSTURE_SECRETS, json={"digests": ["0" * 64]}),
    #: Last: a person who changes their password ends their sessions, and their token.
    "PUT /v1/users/{name}/password": needs(
        P.USER_MANAGE,
        path="/v1/users/{user}/password",
        json={"password": "q" * 16, "current_password": "p" * 16},
        also=USER,
    ),
}

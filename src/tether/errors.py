"""One error root with stable machine codes.

Every failure Tether reports is an :class:`Error` whose ``code`` never changes once released;
the HTTP layer (``tether.api.errors``) is the only place that maps codes to status codes and
OAuth error bodies, and the CLI maps them to exit codes. Messages never contain secrets or raw
tokens.

The hierarchy::

    Error                               error
    ├── InvalidInput                    invalid_input            400
    │   ├── UnsupportedMediaType        unsupported_media_type   415
    │   ├── InvalidName                 invalid_name
    │   ├── InvalidSpiffeId             invalid_spiffe_id
    │   ├── InvalidDeclaration          invalid_declaration
    │   ├── InvalidKey                  invalid_key
    │   ├── InvalidCsr                  invalid_csr
    │   ├── InvalidPolicySet            invalid_policy_set
    │   ├── MalformedHeader             malformed_header
    │   ├── UnsafePath                  unsafe_path
    │   └── BodyTooLarge                body_too_large           413
    ├── NotFound                        not_found                404
    │   ├── AgentNotFound               agent_not_found
    │   ├── KeyNotFound                 key_not_found
    │   ├── OperatorTokenNotFound       operator_token_not_found
    │   ├── PolicySetNotFound           policy_set_not_found
    │   ├── LeaseNotFound               lease_not_found
    │   ├── EngineNotFound              engine_not_found
    │   ├── UserNotFound                user_not_found
    │   ├── GrantNotFound               grant_not_found
    │   ├── AlertNotFound               alert_not_found
    │   ├── ClientNotFound              client_not_found
    │   ├── ApprovalNotFound            approval_not_found
    │   ├── McpServerNotFound           mcp_server_not_found
    │   └── DecisionNotFound            decision_not_found (the console's lookup by id)
    ├── Conflict                        conflict                 409
    │   ├── AgentExists                 agent_exists
    │   ├── KeyExists                   key_exists
    │   ├── UserExists                  user_exists
    │   ├── InvalidTransition           invalid_state_transition
    │   ├── VersionConflict             version_conflict
    │   ├── LogPositionTaken            audit_log_position_taken
    │   ├── EngineExists                engine_exists
    │   ├── LeaseMaxTtl                 lease_max_ttl_reached
    │   └── McpServerExists             mcp_server_exists
    ├── Unauthenticated                 unauthenticated          401
    ├── Forbidden                       forbidden                403
    │   ├── CsrfRefused                 csrf_refused (a console form without its token)
    │   └── Denied                      denied (the SDK: the checkpoint said no)
    │       ├── ApprovalRequired        approval_required
    │       ├── CheckUnavailable        check_unavailable (no answer in time: denied)
    │       └── StatementDenied         statement_denied (the SQL guard)
    ├── OAuthError                      (RFC 6749 §5.2 codes)    400 / 401
    │   ├── InvalidRequest              invalid_request
    │   ├── InvalidClient               invalid_client           401
    │   ├── InvalidGrant                invalid_grant
    │   ├── UnauthorizedClient          unauthorized_client
    │   ├── UnsupportedGrantType        unsupported_grant_type
    │   ├── UnsupportedTokenType        unsupported_token_type (RFC 7009)
    │   ├── InvalidScope                invalid_scope
    │   ├── InvalidTarget               invalid_target (RFC 8707)
    │   ├── UnknownUserId               unknown_user_id (CIBA Core §13)
    │   ├── InvalidBindingMessage       invalid_binding_message (CIBA Core §13)
    │   ├── InvalidAuthorizationDetails invalid_authorization_details (RFC 9396 §5)
    │   ├── AuthorizationPending        authorization_pending (CIBA Core §11)
    │   ├── SlowDown                    slow_down (CIBA Core §11)
    │   ├── ExpiredToken                expired_token (CIBA Core §11)
    │   ├── AccessDenied                access_denied (CIBA Core §11)
    │   └── TemporarilyUnavailable      temporarily_unavailable  503
    ├── TokenInvalid                    token_invalid            401
    │   └── CertificateInvalid          certificate_invalid
    ├── ReplayDetected                  replay_detected          401
    ├── KeyringError                    keyring_error            500
    ├── StoreUnavailable                store_unavailable        503
    ├── EngineUnavailable               engine_unavailable       503
    ├── AuditUnavailable                audit_unavailable        503
    │   └── AuditLogInvalid             audit_log_invalid
    ├── Overloaded                      overloaded               503 (shed: too busy)
    └── ConfigError                     config_invalid
        └── InvalidRouteMap             route_map_invalid

Example::

    >>> from tether.errors import AgentExists
    >>> err = AgentExists("an agent named 'faq-bot' already exists")
    >>> err.code
    'agent_exists'
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar

__all__ = [
    "AccessDenied",
    "AgentExists",
    "AgentNotFound",
    "AlertNotFound",
    "ApprovalNotFound",
    "ApprovalRequired",
    "AuditLogInvalid",
    "AuditUnavailable",
    "AuthorizationPending",
    "BodyTooLarge",
    "CertificateInvalid",
    "CheckUnavailable",
    "ClientNotFound",
    "ConfigError",
    "Conflict",
    "CsrfRefused",
    "DecisionNotFound",
    "Denied",
    "EngineExists",
    "EngineNotFound",
    "EngineUnavailable",
    "Error",
    "ExpiredToken",
    "Forbidden",
    "GrantNotFound",
    "InvalidAuthorizationDetails",
    "InvalidBindingMessage",
    "InvalidClient",
    "InvalidCsr",
    "InvalidDeclaration",
    "InvalidGrant",
    "InvalidInput",
    "InvalidKey",
    "InvalidName",
    "InvalidPolicySet",
    "InvalidRequest",
    "InvalidRouteMap",
    "InvalidScope",
    "InvalidSpiffeId",
    "InvalidTarget",
    "InvalidTransition",
    "KeyExists",
    "KeyNotFound",
    "KeyringError",
    "LeaseMaxTtl",
    "LeaseNotFound",
    "LogPositionTaken",
    "MalformedHeader",
    "McpServerExists",
    "McpServerNotFound",
    "NotFound",
    "OAuthError",
    "OperatorTokenNotFound",
    "Overloaded",
    "PolicySetNotFound",
    "ReplayDetected",
    "SlowDown",
    "StatementDenied",
    "StoreUnavailable",
    "TemporarilyUnavailable",
    "TokenInvalid",
    "Unauthenticated",
    "UnauthorizedClient",
    "UnknownUserId",
    "UnsafePath",
    "UnsupportedGrantType",
    "UnsupportedMediaType",
    "UnsupportedTokenType",
    "UserExists",
    "UserNotFound",
    "VersionConflict",
]

_EMPTY: Mapping[str, object] = MappingProxyType({})


class Error(Exception):
    """The root of every error Tether raises on purpose.

    ``code`` is stable and machine-readable; ``message`` is for people; ``details`` holds safe,
    structured facts (never secrets) such as the rule that an input broke.
    """

    code: ClassVar[str] = "error"

    def __init__(self, message: str, *, details: Mapping[str, object] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: Mapping[str, object] = MappingProxyType(dict(details)) if details else _EMPTY

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class InvalidInput(Error):
    code = "invalid_input"


class UnsupportedMediaType(InvalidInput):
    """A body in a format the endpoint does not take (HTTP 415)."""

    code = "unsupported_media_type"


class InvalidName(InvalidInput):
    code = "invalid_name"


class InvalidSpiffeId(InvalidInput):
    code = "invalid_spiffe_id"


class InvalidDeclaration(InvalidInput):
    code = "invalid_declaration"


class InvalidKey(InvalidInput):
    code = "invalid_key"


class InvalidCsr(InvalidInput):
    code = "invalid_csr"


class InvalidPolicySet(InvalidInput):
    """A policy set that does not parse or does not validate against the schema; ``details``
    holds ``errors`` (one line each)."""

    code = "invalid_policy_set"


class MalformedHeader(InvalidInput):
    """A request header an enforcement point cannot read safely: repeated where one is
    expected, of the wrong form, too long, or with characters it may not hold; ``details``
    name the ``header``."""

    code = "malformed_header"


class UnsafePath(InvalidInput):
    """A request path that could mean two things to two parsers (dot segments, an encoded
    ``/``, double encoding, empty segments): refused rather than guessed."""

    code = "unsafe_path"


class BodyTooLarge(InvalidInput):
    code = "body_too_large"


class NotFound(Error):
    code = "not_found"


class AgentNotFound(NotFound):
    code = "agent_not_found"


class KeyNotFound(NotFound):
    code = "key_not_found"


class OperatorTokenNotFound(NotFound):
    code = "operator_token_not_found"


class PolicySetNotFound(NotFound):
    code = "policy_set_not_found"


class LeaseNotFound(NotFound):
    code = "lease_not_found"


class EngineNotFound(NotFound):
    code = "engine_not_found"


class UserNotFound(NotFound):
    code = "user_not_found"


class GrantNotFound(NotFound):
    code = "grant_not_found"


class AlertNotFound(NotFound):
    code = "alert_not_found"


class ClientNotFound(NotFound):
    """No OAuth client of the built-in provider has this id."""

    code = "client_not_found"


class ApprovalNotFound(NotFound):
    """No approval request (CIBA) has this id, or not one the caller may see."""

    code = "approval_not_found"


class DecisionNotFound(NotFound):
    """No recent decision record has this decision id (ids are not indexed: the console
    looks among the latest audit records)."""

    code = "decision_not_found"


class McpServerNotFound(NotFound):
    """No MCP server of the gateway has this name (or no tool of it this name)."""

    code = "mcp_server_not_found"


class Conflict(Error):
    code = "conflict"


class AgentExists(Conflict):
    code = "agent_exists"


class KeyExists(Conflict):
    code = "key_exists"


class UserExists(Conflict):
    code = "user_exists"


class InvalidTransition(Conflict):
    code = "invalid_state_transition"


class VersionConflict(Conflict):
    code = "version_conflict"


class LogPositionTaken(Conflict):
    """Another writer appended to this replica's audit log (two replicas share an id)."""

    code = "audit_log_position_taken"


class EngineExists(Conflict):
    code = "engine_exists"


class LeaseMaxTtl(Conflict):
    """A renewal asked for while the lease is already at its max TTL."""

    code = "lease_max_ttl_reached"


class McpServerExists(Conflict):
    code = "mcp_server_exists"


class Unauthenticated(Error):
    code = "unauthenticated"


class Forbidden(Error):
    code = "forbidden"


class CsrfRefused(Forbidden):
    """A console form or request without the signed-in session's CSRF token, or sent from
    another origin: refused before anything is read or changed."""

    code = "csrf_refused"


class Denied(Forbidden):
    """The SDK's answer to a deny: ``details`` carry the decision id and, when the server
    explained it, the reasons and the determining policies."""

    code = "denied"


class ApprovalRequired(Denied):
    """The call needs a person's approval first (CIBA); ``details`` carry the call digest and,
    when the SDK started the request, its ``auth_req_id``."""

    code = "approval_required"


class CheckUnavailable(Denied):
    """No decision in time (the checkpoint unreachable, slow or failing): the SDK denies."""

    code = "check_unavailable"


class StatementDenied(Denied):
    """The SQL guard refused a statement: it does not parse, its class is not allowed, it
    calls a forbidden function, or the checkpoint denied it."""

    code = "statement_denied"


class OAuthError(Error):
    """An error of the OAuth endpoints; ``code`` is the RFC 6749 §5.2 ``error`` value."""

    code = "invalid_request"


class InvalidRequest(OAuthError):
    code = "invalid_request"


class InvalidClient(OAuthError):
    code = "invalid_client"


class InvalidGrant(OAuthError):
    code = "invalid_grant"


class UnauthorizedClient(OAuthError):
    code = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    code = "unsupported_grant_type"


class UnsupportedTokenType(OAuthError):
    """RFC 7009 §2.2.1: the server cannot revoke this type of token."""

    code = "unsupported_token_type"


class InvalidScope(OAuthError):
    code = "invalid_scope"


class InvalidTarget(OAuthError):
    code = "invalid_target"


class UnknownUserId(OAuthError):
    """CIBA: the hint names no user the server knows (or one who may not be asked)."""

    code = "unknown_user_id"


class InvalidBindingMessage(OAuthError):
    """CIBA: the binding message is too long or has characters a device cannot show."""

    code = "invalid_binding_message"


class InvalidAuthorizationDetails(OAuthError):
    """RFC 9396: ``authorization_details`` is malformed or describes what is not allowed."""

    code = "invalid_authorization_details"


class AuthorizationPending(OAuthError):
    """CIBA poll: the user has not answered yet."""

    code = "authorization_pending"


class SlowDown(OAuthError):
    """CIBA poll: asked again sooner than ``interval`` seconds after the last poll."""

    code = "slow_down"


class ExpiredToken(OAuthError):
    """CIBA: the ``auth_req_id`` has expired (a timeout is a refusal)."""

    code = "expired_token"


class AccessDenied(OAuthError):
    """CIBA: the user refused."""

    code = "access_denied"


class TemporarilyUnavailable(OAuthError):
    """Not now, later: e.g. a token asked for while the agent's tokens are being revoked."""

    code = "temporarily_unavailable"


class TokenInvalid(Error):
    """A token or signature failed verification (bad signature, algorithm, claims, expiry)."""

    code = "token_invalid"


class CertificateInvalid(TokenInvalid):
    """A client or CSR certificate failed verification (chain, validity, SPIFFE ID)."""

    code = "certificate_invalid"


class ReplayDetected(Error):
    """A single-use value (an assertion ``jti``) was presented a second time."""

    code = "replay_detected"


class KeyringError(Error):
    """The key ring cannot be opened (wrong key-encryption key, corrupt key material)."""

    code = "keyring_error"


class StoreUnavailable(Error):
    code = "store_unavailable"


class EngineUnavailable(Error):
    """A credential engine (a database Tether manages roles in) failed or cannot be reached;
    ``details`` never carry the admin credential or an issued secret."""

    code = "engine_unavailable"


class AuditUnavailable(Error):
    """A record could not be made durable, so what it records is refused (fail closed)."""

    code = "audit_unavailable"


class AuditLogInvalid(AuditUnavailable):
    """The audit log does not verify (changed, truncated): nothing more is appended to it."""

    code = "audit_log_invalid"


class Overloaded(Error):
    """Shed: the server already works on as many requests as it may
    (``TETHER_MAX_IN_FLIGHT``), so this one was answered at once, undecided — a denial for
    every enforcement point, never an allow; ``details`` carry ``retry_after`` (seconds)."""

    code = "overloaded"


class ConfigError(Error):
    code = "config_invalid"


class InvalidRouteMap(ConfigError):
    """The ext_authz route file does not parse or breaks a rule; ``details`` name ``where``
    (the TOML key path) and the ``rule``."""

    code = "route_map_invalid"

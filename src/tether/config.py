"""Configuration: frozen values, built once and passed in.

This module is the only reader of ``os.environ`` in Tether. The server builds a
:class:`Settings` once (``Settings.from_environ()``) and hands it to ``create_app``; the CLI
builds a :class:`ClientSettings` for ``TETHER_ADDR`` and ``TETHER_TOKEN`` the way ``vault`` does.

Example::

    >>> from pathlib import Path
    >>> s = Settings(data_dir=Path("/var/lib/tether"), issuer="http://127.0.0.1:8200")
    >>> s.database_url
    'sqlite:////var/lib/tether/tether.db'
    >>> s.jwt_svid_ttl_seconds
    300
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from urllib.parse import urlsplit

from tether.errors import ConfigError

__all__ = ["ClientSettings", "Settings"]

DEFAULT_ADDR = "http://127.0.0.1:8200"
_TRUST_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,253}[a-z0-9])?$")
_REPLICA_ID = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
#: The shortest secret a webhook of approval requests is signed with.
MIN_WEBHOOK_SECRET = 32
#: The shortest bearer token ``GET /metrics`` may be protected with.
MIN_METRICS_TOKEN = 16
#: Numeric settings and their bounds: (name, lowest, highest, the bounds in words).
_BOUNDS: tuple[tuple[str, float, float, str], ...] = (
    ("jwt_svid_ttl_seconds", 10, 24 * 3600, "10 s and 24 h"),
    ("x509_svid_ttl_seconds", 60, 7 * 24 * 3600, "60 s and 7 days"),
    ("max_body_bytes", 1024, 16 * 1024 * 1024, "1 KiB and 16 MiB"),
    ("max_in_flight", 1, 100_000, "1 and 100,000"),
    ("maintenance_interval_seconds", 0.05, 3600, "0.05 s and 1 h"),
    ("hot_state_refresh_seconds", 0.05, 60, "0.05 s and 60 s"),
    ("agent_cache_seconds", 0.05, 60, "0.05 s and 60 s"),
    ("audit_checkpoint_records", 1, 1000, "1 and 1,000"),
    ("audit_checkpoint_seconds", 0.05, 1, "0.05 s and 1 s"),
    ("lease_reaper_interval_seconds", 0.05, 60, "0.05 s and 60 s"),
    ("lease_ttl_ceiling_seconds", 60, 30 * 24 * 3600, "60 s and 30 days"),
    ("lease_claim_seconds", 1, 3600, "1 s and 1 h"),
    ("lease_issuing_grace_seconds", 1, 3600, "1 s and 1 h"),
    ("lease_revoke_max_attempts", 1, 1000, "1 and 1,000"),
    ("user_token_ttl_seconds", 60, 24 * 3600, "60 s and 24 h"),
    ("delegated_token_max_ttl_seconds", 10, 24 * 3600, "10 s and 24 h"),
    ("max_delegation_depth", 1, 8, "1 and 8"),
    ("grant_max_ttl_seconds", 60, 365 * 24 * 3600, "60 s and 365 days"),
    ("user_session_ttl_seconds", 60, 30 * 24 * 3600, "60 s and 30 days"),
    ("password_memory_kib", 32, 4 * 1024 * 1024, "32 KiB and 4 GiB"),
    ("password_time_cost", 1, 20, "1 and 20"),
    ("approval_max_expiry_seconds", 10, 24 * 3600, "10 s and 24 h"),
    ("approval_requests_per_minute", 1, 1000, "1 and 1000"),
    ("mcp_approval_wait_seconds", 0, 300, "0 s and 5 min"),
    ("mcp_listing_ttl_seconds", 0, 3600, "0 s and 1 h"),
    ("mcp_upstream_timeout_seconds", 1, 600, "1 s and 10 min"),
    ("monitor_burst_limit", 2, 100_000, "2 and 100,000"),
    ("monitor_burst_window_seconds", 1, 3600, "1 s and 1 h"),
    ("monitor_spike_window_seconds", 1, 3600, "1 s and 1 h"),
    ("monitor_spike_min_decisions", 1, 1_000_000, "1 and 1,000,000"),
    ("monitor_deny_rate", 0.01, 1, "0.01 and 1"),
    ("monitor_error_rate", 0.001, 1, "0.001 and 1"),
    ("monitor_reaper_lag_seconds", 1, 24 * 3600, "1 s and 24 h"),
)
#: Severities an automatic quarantine may start at (``TETHER_ALERT_QUARANTINE_AT``).
_QUARANTINE_SEVERITIES = ("medium", "high", "critical")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the server needs, with bounded, safe defaults."""

    data_dir: Path
    issuer: str = DEFAULT_ADDR
    database_url_override: str | None = None
    trust_domain: str = "tether.local"
    #: A base64url key-encryption key from the environment; else ``<data_dir>/kek`` (0600).
    kek_b64: str | None = None
    root_token: str | None = None
    dev: bool = False
    #: JWT-SVID lifetime (SPIRE's default is 5 minutes) and the longest an agent may ask for.
    jwt_svid_ttl_seconds: int = 300
    x509_svid_ttl_seconds: int = 3600
    #: Audiences an agent may ask a JWT-SVID for, besides Tether itself (the issuer).
    allowed_audiences: tuple[str, ...] = ()
    #: A client assertion may live at most this long (``exp - now``). One hour, as Okta allows
    #: and as generic clients (Authlib) sign by default; its ``jti`` is remembered that long.
    assertion_max_lifetime_seconds: int = 3600
    clock_skew_seconds: int = 30
    max_body_bytes: int = 64 * 1024
    #: The most requests the server works on at once (``TETHER_MAX_IN_FLIGHT``); the next is
    #: shed at once: ``503 overloaded`` with ``Retry-After``, a denial for every enforcement
    #: point, never an allow (:mod:`tether.api.admission`). Health, readiness, metrics and
    #: long-lived streams are not counted. 64, measured on ext_authz (2 cores, closed loop):
    #: decisions per second peak near 64 in flight; at 128 and more they fall and the median
    #: wait passes 300 ms, towards the proxies' timeouts (Envoy's example 0.5 s, nginx 1 s).
    max_in_flight: int = 64
    #: Token-signing keys are rotated after this many days (old public keys stay published).
    signing_key_max_age_days: int = 30
    #: When a TLS-terminating proxy forwards the client certificate it verified, the header that
    #: carries it (URL-encoded PEM, as nginx ``$ssl_client_escaped_cert``). Off unless set.
    forwarded_client_cert_header: str | None = None
    #: Peers whose forwarded client-certificate header is believed (CIDRs). A certificate is
    #: public, so from anyone else the header would prove nothing: it is ignored. Required
    #: (no default) when the header is set.
    trusted_proxies: tuple[str, ...] = ()
    operator_token_ttl_seconds: int = 30 * 24 * 3600
    #: How often the server rotates due keys, learns other replicas' keys and purges expired
    #: single-use values.
    maintenance_interval_seconds: float = 60.0
    #: How often the server re-reads the hot-path state other replicas change (revoked agent
    #: tokens, the active policy version), so a change made on another replica is in force
    #: here within about this long (as the agent directory's 1 s).
    hot_state_refresh_seconds: float = 1.0
    #: How long the hot path trusts an agent it read (state, declarations) before reading it
    #: again; a change made on this replica (or announced by another, on PostgreSQL) is seen
    #: at once regardless.
    agent_cache_seconds: float = 1.0
    #: This replica's name; its audit log is ``<issuer host>/audit/<replica id>``. Unset: an
    #: id made on first start and kept in ``<data_dir>/replica-id``. Two replicas must never
    #: share one (the second writer of a log is refused).
    replica_id: str | None = None
    #: Where signed audit checkpoints are copied besides the database: file paths (one JSON
    #: line per checkpoint) or http(s) URLs (each checkpoint POSTed).
    audit_witnesses: tuple[str, ...] = ()
    #: A checkpoint is signed once this many records are unsigned, or after this long.
    audit_checkpoint_records: int = 1000
    audit_checkpoint_seconds: float = 1.0
    #: The lease reaper wakes at least this often (and at the next expiry, if sooner), so a
    #: lease ends within about this long after its TTL.
    lease_reaper_interval_seconds: float = 1.0
    #: No role template may allow a lease longer than this.
    lease_ttl_ceiling_seconds: int = 24 * 3600
    #: A replica ending a lease holds it this long before another may take it over.
    lease_claim_seconds: float = 30.0
    #: An issuance finishes within this long: a managed credential with no lease this long
    #: after it was seen is an orphan (a crash mid-issuance) and is removed.
    lease_issuing_grace_seconds: float = 10.0
    #: Failed revocation attempts before a lease is marked irrevocable (and alerted on).
    lease_revoke_max_attempts: int = 8
    #: A user's access token (built-in provider) lives this long.
    user_token_ttl_seconds: int = 600
    #: A delegated token (token exchange) lives at most this long (10 minutes by default),
    #: and never beyond its subject token or its grant.
    delegated_token_max_ttl_seconds: int = 600
    #: The most actors on a delegation chain (user → agent → agent …).
    max_delegation_depth: int = 4
    #: A sign-in session of the built-in provider (its cookie) lasts this long.
    user_session_ttl_seconds: int = 8 * 3600
    #: A user's grant lasts at most this long (30 days by default).
    grant_max_ttl_seconds: int = 30 * 24 * 3600
    #: An approval request (CIBA) waits at most this long for the user's answer; one not
    #: answered in time is refused.
    approval_max_expiry_seconds: int = 600
    #: Approval requests one person may receive a minute (prompt bombing is an attack).
    approval_requests_per_minute: int = 5
    #: External OpenID providers whose users' tokens Tether accepts: ``(name, issuer,
    #: audience)`` — the audience being what Tether is called at that provider. From
    #: ``TETHER_EXTERNAL_PROVIDERS``: a JSON list of ``{"name", "issuer", "audience"}``.
    external_providers: tuple[tuple[str, str, str], ...] = ()
    #: Argon2id cost for users' passwords (RFC 9106 §4, second recommended option).
    password_memory_kib: int = 64 * 1024
    password_time_cost: int = 3
    #: Where the person asked to approve is told of a new request (:mod:`tether.api._notify`):
    #: a webhook (https, or loopback http) that gets a JSON notice signed with HMAC-SHA256
    #: under ``approval_webhook_secret`` (required with it, at least 32 characters) …
    approval_webhook_url: str | None = field(default=None, repr=False)
    approval_webhook_secret: str | None = field(default=None, repr=False)
    #: … an ntfy topic (``https://ntfy.sh/<topic>`` or self-hosted; the topic name is a
    #: password there), with an access token if the server asks for one …
    approval_ntfy_url: str | None = field(default=None, repr=False)
    approval_ntfy_token: str | None = field(default=None, repr=False)
    #: … and Apprise's service URLs (the ``notify`` extra installs Apprise).
    approval_apprise_urls: tuple[str, ...] = field(default=(), repr=False)
    #: A tool call through the MCP gateway that needs an approval waits this long for the
    #: answer before it is told "approval pending" with the request's id (0: never waits).
    mcp_approval_wait_seconds: float = 30.0
    #: The gateway re-reads an upstream server's tool listing (and re-checks every pin) when
    #: its copy is older than this, before a listing or a call is served.
    mcp_listing_ttl_seconds: float = 5.0
    #: The longest the gateway waits for an upstream server's answer.
    mcp_upstream_timeout_seconds: float = 60.0
    #: ``Host`` values the gateway answers to besides the issuer's (DNS-rebinding defence:
    #: any other is refused with 421); ``host:*`` allows any port.
    mcp_allowed_hosts: tuple[str, ...] = ()
    #: The route file of the HTTP enforcement point (``/v1/ext_authz/<service>/…``, for
    #: Envoy's ext_authz and nginx ``auth_request``): TOML, read and checked at start. Unset:
    #: no service is known, so every such request is refused.
    ext_authz_routes: Path | None = None
    #: The monitor's windowed detectors (:mod:`tether.monitor.windows`): a burst is this many
    #: denials of one agent within the window; a rate spike is judged over its window once it
    #: holds enough decisions.
    monitor_burst_limit: int = 20
    monitor_burst_window_seconds: float = 60.0
    monitor_spike_window_seconds: float = 60.0
    monitor_spike_min_decisions: int = 50
    monitor_deny_rate: float = 0.5
    monitor_error_rate: float = 0.05
    #: A lease still live this long past its expiry is an alert (the reaper lags).
    monitor_reaper_lag_seconds: float = 60.0
    #: Alerts also go to this webhook (https, or loopback http), signed as approval notices
    #: are, under ``alert_webhook_secret`` (required with it, at least 32 characters).
    alert_webhook_url: str | None = field(default=None, repr=False)
    alert_webhook_secret: str | None = field(default=None, repr=False)
    #: Quarantine the agent of an alert of this severity or above that its own behaviour
    #: raised (``medium``, ``high``, ``critical``); None, the default: never automatically.
    alert_quarantine_at: str | None = None
    #: ``GET /metrics`` answers only a request bearing this token (``Authorization: Bearer``,
    #: at least :data:`MIN_METRICS_TOKEN` characters) when set; open otherwise (counts only).
    metrics_token: str | None = field(default=None, repr=False)
    #: The OTLP/HTTP collector traces are exported to (its base URL: ``/v1/traces`` is added).
    #: Unset: no traces are exported. Needs the ``otel`` extra.
    otel_exporter_otlp_endpoint: str | None = None

    @property
    def token_max_ttl_seconds(self) -> int:
        """The longest any token Tether signs may live (keys stay published that long)."""
        return max(
            self.jwt_svid_ttl_seconds,
            self.user_token_ttl_seconds,
            self.delegated_token_max_ttl_seconds,
        )

    def __post_init__(self) -> None:
        if not _TRUST_DOMAIN.fullmatch(self.trust_domain):
            raise ConfigError(
                f"trust domain {self.trust_domain!r} is not a lowercase DNS-style name",
                details={"setting": "trust_domain"},
            )
        if not (self.issuer.startswith(("http://", "https://")) and "#" not in self.issuer):
            raise ConfigError("issuer must be an http(s) URL without a fragment")
        for name, low, high, words in _BOUNDS:
            if not low <= getattr(self, name) <= high:
                raise ConfigError(f"{name} must be between {words}", details={"setting": name})
        if self.replica_id is not None and not _REPLICA_ID.fullmatch(self.replica_id):
            raise ConfigError(
                "replica_id is 1 to 63 lowercase letters, digits and '-'",
                details={"setting": "replica_id"},
            )
        _ = self.proxy_networks  # refuse a bad network list at start, not on first use
        if self.forwarded_client_cert_header and not self.trusted_proxies:
            raise ConfigError(
                "a forwarded client-certificate header needs TETHER_TRUSTED_PROXIES: "
                "the addresses of the proxies that verify client certificates",
                details={"setting": "trusted_proxies"},
            )
        self._check_sinks()
        if self.alert_quarantine_at not in (None, *_QUARANTINE_SEVERITIES):
            raise ConfigError(
                f"alert_quarantine_at is one of {', '.join(_QUARANTINE_SEVERITIES)} (or unset)",
                details={"setting": "alert_quarantine_at"},
            )
        self._check_monitoring()

    def _check_sinks(self) -> None:
        """Approval notices and alerts go to https (or loopback http) addresses; a webhook's
        are signed with a secret of at least :data:`MIN_WEBHOOK_SECRET` characters."""
        for name in ("approval_webhook_url", "approval_ntfy_url", "alert_webhook_url"):
            url = getattr(self, name)
            if url is not None and not _https_or_loopback(url):
                raise ConfigError(
                    f"{name} is an https URL (or loopback http)", details={"setting": name}
                )
        for kind in ("approval", "alert"):
            url = getattr(self, f"{kind}_webhook_url")
            secret = getattr(self, f"{kind}_webhook_secret")
            if (url is not None and secret is None) or (
                secret is not None and len(secret) < MIN_WEBHOOK_SECRET
            ):
                raise ConfigError(
                    f"{kind}_webhook_url needs {kind}_webhook_secret (TETHER_{kind.upper()}_"
                    f"WEBHOOK_SECRET) of at least {MIN_WEBHOOK_SECRET} characters: the "
                    "notices are signed",
                    details={"setting": f"{kind}_webhook_secret"},
                )

    def _check_monitoring(self) -> None:
        token, endpoint = self.metrics_token, self.otel_exporter_otlp_endpoint
        if token is not None and (len(token) < MIN_METRICS_TOKEN or not token.isprintable()):
            raise ConfigError(
                f"metrics_token (TETHER_METRICS_TOKEN) is at least {MIN_METRICS_TOKEN} "
                "printable characters",
                details={"setting": "metrics_token"},
            )
        if endpoint is not None and not (
            endpoint.startswith(("http://", "https://")) and urlsplit(endpoint).hostname
        ):
            raise ConfigError(
                "otel_exporter_otlp_endpoint (TETHER_OTEL_EXPORTER_OTLP_ENDPOINT) is the "
                "http(s) URL of an OTLP/HTTP collector, such as http://otel-collector:4318",
                details={"setting": "otel_exporter_otlp_endpoint"},
            )

    @cached_property
    def proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        try:
            return tuple(ipaddress.ip_network(p, strict=False) for p in self.trusted_proxies)
        except ValueError as exc:
            raise ConfigError(
                "trusted_proxies must be IP networks such as 10.0.0.0/8",
                details={"setting": "trusted_proxies"},
            ) from exc

    def is_trusted_proxy(self, host: str | None) -> bool:
        """Whether ``host`` (a peer address) may forward a verified client certificate."""
        try:
            address = ipaddress.ip_address(host or "")
        except ValueError:
            return False
        return any(address in network for network in self.proxy_networks)

    @property
    def database_url(self) -> str:
        if self.database_url_override:
            return self.database_url_override
        return f"sqlite:///{self.data_dir / 'tether.db'}"

    @property
    def issuer_url(self) -> str:
        return self.issuer.rstrip("/")

    @property
    def audit_key_name(self) -> str:
        """The name of the audit checkpoint key in signed notes: ``<issuer host>/audit``."""
        parts = urlsplit(self.issuer_url)
        return f"{parts.netloc}{parts.path}/audit"

    def audit_origin(self, replica_id: str) -> str:
        """The name of ``replica_id``'s audit log: ``<issuer host>/audit/<replica id>``."""
        return f"{self.audit_key_name}/{replica_id}"

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer_url}/oauth2/token"

    @property
    def audiences(self) -> frozenset[str]:
        """Every audience a JWT-SVID may name: Tether itself plus the configured ones."""
        return frozenset((self.issuer_url, *self.allowed_audiences))

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_environ(
        cls,
        environ: Mapping[str, str] | None = None,
        **overrides: object,
    ) -> Settings:
        """Read ``TETHER_*`` variables; explicit ``overrides`` (from CLI flags) win."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {
            "data_dir": Path(env.get("TETHER_DATA_DIR", "./tether-data")),
        }
        simple = {
            "TETHER_ISSUER": "issuer",
            "TETHER_DATABASE_URL": "database_url_override",
            "TETHER_TRUST_DOMAIN": "trust_domain",
            "TETHER_KEK": "kek_b64",
            "TETHER_ROOT_TOKEN": "root_token",
            "TETHER_FORWARDED_CLIENT_CERT_HEADER": "forwarded_client_cert_header",
            "TETHER_REPLICA_ID": "replica_id",
            "TETHER_APPROVAL_WEBHOOK_URL": "approval_webhook_url",
            "TETHER_APPROVAL_WEBHOOK_SECRET": "approval_webhook_secret",
            "TETHER_APPROVAL_NTFY_URL": "approval_ntfy_url",
            "TETHER_APPROVAL_NTFY_TOKEN": "approval_ntfy_token",
            "TETHER_ALERT_WEBHOOK_URL": "alert_webhook_url",
            "TETHER_ALERT_WEBHOOK_SECRET": "alert_webhook_secret",
            "TETHER_ALERT_QUARANTINE_AT": "alert_quarantine_at",
            "TETHER_METRICS_TOKEN": "metrics_token",
            "TETHER_OTEL_EXPORTER_OTLP_ENDPOINT": "otel_exporter_otlp_endpoint",
        }
        for var, name in simple.items():
            if env.get(var):
                values[name] = env[var]
        for var, name in {
            "TETHER_TRUSTED_PROXIES": "trusted_proxies",
            "TETHER_AUDIT_WITNESSES": "audit_witnesses",
            "TETHER_ALLOWED_AUDIENCES": "allowed_audiences",
            "TETHER_MCP_ALLOWED_HOSTS": "mcp_allowed_hosts",
        }.items():
            if env.get(var):
                values[name] = tuple(p.strip() for p in env[var].split(",") if p.strip())
        if env.get("TETHER_EXT_AUTHZ_ROUTES"):
            values["ext_authz_routes"] = Path(env["TETHER_EXT_AUTHZ_ROUTES"])
        if env.get("TETHER_EXTERNAL_PROVIDERS"):
            values["external_providers"] = _external_providers(env["TETHER_EXTERNAL_PROVIDERS"])
        if env.get("TETHER_APPROVAL_APPRISE_URLS"):  # Apprise URLs may hold commas: spaces
            values["approval_apprise_urls"] = tuple(env["TETHER_APPROVAL_APPRISE_URLS"].split())
        values |= _numbers(env, _WHOLE_NUMBERS, int, "a whole number")
        values |= _numbers(env, _SECONDS, float, "a number of seconds")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


#: Whole-number settings from the environment.
_WHOLE_NUMBERS = {
    "TETHER_JWT_SVID_TTL": "jwt_svid_ttl_seconds",
    "TETHER_X509_SVID_TTL": "x509_svid_ttl_seconds",
    "TETHER_APPROVAL_MAX_EXPIRY": "approval_max_expiry_seconds",
    "TETHER_APPROVAL_REQUESTS_PER_MINUTE": "approval_requests_per_minute",
    "TETHER_MONITOR_BURST_LIMIT": "monitor_burst_limit",
    "TETHER_MONITOR_SPIKE_MIN_DECISIONS": "monitor_spike_min_decisions",
    "TETHER_MAX_IN_FLIGHT": "max_in_flight",
}
#: Settings in (fractional) seconds from the environment.
_SECONDS = {
    "TETHER_MCP_APPROVAL_WAIT": "mcp_approval_wait_seconds",
    "TETHER_MCP_LISTING_TTL": "mcp_listing_ttl_seconds",
    "TETHER_MCP_UPSTREAM_TIMEOUT": "mcp_upstream_timeout_seconds",
    "TETHER_MONITOR_BURST_WINDOW": "monitor_burst_window_seconds",
    "TETHER_MONITOR_SPIKE_WINDOW": "monitor_spike_window_seconds",
    "TETHER_MONITOR_DENY_RATE": "monitor_deny_rate",
    "TETHER_MONITOR_ERROR_RATE": "monitor_error_rate",
    "TETHER_MONITOR_REAPER_LAG": "monitor_reaper_lag_seconds",
}


def _numbers(
    env: Mapping[str, str], names: Mapping[str, str], kind: type[int | float], words: str
) -> dict[str, object]:
    found: dict[str, object] = {}
    for var, name in names.items():
        if env.get(var):
            try:
                found[name] = kind(env[var])
            except ValueError as exc:
                raise ConfigError(f"{var} must be {words}") from exc
    return found


def _external_providers(text: str) -> tuple[tuple[str, str, str], ...]:
    try:
        items = json.loads(text)
        found = tuple((str(i["name"]), str(i["issuer"]), str(i["audience"])) for i in items)
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(
            'TETHER_EXTERNAL_PROVIDERS is a JSON list of {"name", "issuer", "audience"}',
            details={"setting": "external_providers"},
        ) from exc
    for _, issuer, _ in found:
        if not _https_or_loopback(issuer):
            raise ConfigError(
                f"an external issuer is https (or loopback http): {issuer[:100]!r}",
                details={"setting": "external_providers"},
            )
    return found


def _https_or_loopback(url: str) -> bool:
    """Whether ``url`` is https, or http to this machine (tests, a sidecar)."""
    host = urlsplit(url).hostname or ""
    loopback = host in ("127.0.0.1", "::1", "localhost")
    return url.startswith("https://") or (url.startswith("http://") and loopback)


@dataclass(frozen=True, kw_only=True)
class ClientSettings:
    """What the CLI and SDK need to reach a server: ``TETHER_ADDR`` and ``TETHER_TOKEN``.

    Without ``TETHER_TOKEN``, the token ``tether login`` stored (in ``TETHER_CREDENTIALS``,
    by default ``~/.tether/credentials.json``, mode 0600) is used while it is valid and for
    the same address — as ``vault`` reads ``~/.vault-token``."""

    addr: str = DEFAULT_ADDR
    token: str | None = None
    ca_cert: Path | None = None
    credentials: Path | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> ClientSettings:
        env = os.environ if environ is None else environ
        ca = env.get("TETHER_CACERT")
        addr = env.get("TETHER_ADDR", DEFAULT_ADDR).rstrip("/")
        stored = env.get("TETHER_CREDENTIALS") or str(Path.home() / ".tether" / "credentials.json")
        credentials = Path(stored)
        token = env.get("TETHER_TOKEN") or _stored_token(credentials, addr)
        return cls(
            addr=addr,
            token=token,
            ca_cert=Path(ca) if ca else None,
            credentials=credentials,
        )


def _stored_token(path: Path, addr: str) -> str | None:
    """The access token ``tether login`` stored for ``addr``, if it has not expired."""
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(stored, dict) or stored.get("addr") != addr:
        return None
    if not isinstance(stored.get("expires_at"), int) or stored["expires_at"] <= time.time():
        return None
    token = stored.get("access_token")
    return token if isinstance(token, str) else None

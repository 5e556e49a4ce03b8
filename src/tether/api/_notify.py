"""Reaching the person asked to approve: the notice of a new approval request and the sinks
that carry it (a signed webhook, an ntfy topic, Apprise's services).

:class:`~tether.delegation.approvals.Approvals` calls its notifier once for every new request,
after storing it; :func:`notifier` fans the notice out to every configured sink at once, each
bounded by its own timeout, and raises one :class:`NotifyFailed` naming the sinks that failed
once all were tried (the service reports it; the request itself stands, in the inbox).

The notice never carries the ``auth_req_id`` (only its hash is stored) nor any token: it says
who asks whom to approve what, until when, and where to answer (``inbox``).

Webhook signatures are Stripe's scheme: ``Tether-Signature: t=<unix time>,v1=<hex>``, where
``v1`` is HMAC-SHA256 under the shared secret over ``f"{t}."`` followed by the exact body
bytes. A receiver checks it with :func:`verify_signature` (or its own three lines), refusing
old timestamps so that a captured notice cannot be replayed later.

Example::

    >>> body = b'{"type":"approval.requested"}'
    >>> header = signature_header("s" * 32, body, timestamp=1700000000)
    >>> header.startswith("t=1700000000,v1=")
    True
    >>> verify_signature("s" * 32, header, body, now=1700000060)
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import importlib
import ipaddress
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import structlog

from tether._internal.canonical import canonical_json
from tether._internal.clock import Clock
from tether.config import Settings
from tether.delegation.approvals import Notify, tell_nobody
from tether.delegation.models import Approval
from tether.errors import ConfigError, Error, Unauthenticated

__all__ = [
    "SIGNATURE_HEADER",
    "AppriseSink",
    "NotifyFailed",
    "NtfySink",
    "Sink",
    "WebhookSink",
    "notice",
    "notifier",
    "post",
    "signature_header",
    "sinks_from",
    "verify_signature",
]

#: The header carrying a webhook notice's signature.
SIGNATURE_HEADER = "Tether-Signature"
#: How long one sink may take to deliver one notice.
TIMEOUT = 5.0
#: A signature header longer than this is refused unread (a few signatures fit easily).
MAX_SIGNATURE_HEADER = 1024
_STAMP = re.compile(r"[0-9]{1,12}")
#: An item's ``type`` as a short message names it (longer ones are cut).
_MAX_TYPE = 64

log = structlog.get_logger("tether.approvals")


class NotifyFailed(Error):
    """A notice was not delivered: the message names the sinks and why — never an address,
    a secret or a token."""

    code = "notify_failed"


class Sink(Protocol):
    """Somewhere a notice goes: a name for the logs and the most one delivery may take."""

    @property
    def name(self) -> str: ...

    @property
    def timeout(self) -> float: ...

    async def __call__(self, approval: Approval) -> None:
        """Deliver the notice of ``approval``; raise when it was not taken."""
        ...


def inbox_url(issuer: str, approval: Approval) -> str:
    return f"{issuer}/v1/approvals/{approval.id}"


def notice(approval: Approval, *, issuer: str) -> dict[str, Any]:
    """What a webhook receives: the request as the person asked would see it in the inbox."""
    return {
        "type": "approval.requested",
        "approval_id": approval.id,
        "user": approval.user,
        "agent": approval.agent,
        "binding_message": approval.binding_message,
        "authorization_details": [dict(item) for item in approval.details],
        "expires_at": approval.expires_at.isoformat(),
        "inbox": inbox_url(issuer, approval),
    }


def _title(approval: Approval) -> str:
    return f"Approval requested by {approval.agent}"


def _message(approval: Approval) -> str:
    """A few lines a phone can show: who asks whom, the binding message, the items' types."""
    asks = f"{approval.agent} asks {approval.user} to approve"
    if approval.binding_message:
        asks += f": {approval.binding_message}"
    kinds = ", ".join(str(item.get("type", "?"))[:_MAX_TYPE] for item in approval.details)
    expires = approval.expires_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{asks}\nItems: {kinds}\nAnswer before {expires}"


# -- the webhook's signature ---------------------------------------------------------------


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    signed = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, *, timestamp: int) -> str:
    """The ``Tether-Signature`` value of ``body`` sent at ``timestamp`` (Unix seconds)."""
    return f"t={timestamp},v1={_mac(secret, timestamp, body)}"


def verify_signature(
    secret: str, header: str, body: bytes, *, now: float, tolerance: int = 300
) -> None:
    """Raise ``Unauthenticated`` unless ``header`` signs exactly ``body`` under ``secret``,
    at a time within ``tolerance`` seconds of ``now`` (Unix seconds). Several ``v1`` values
    may be given (a secret being rotated): one matching is enough."""
    timestamp, macs = _parse_signature(header)
    expected = _mac(secret, timestamp, body).encode()
    if not any(hmac.compare_digest(expected, mac.encode()) for mac in macs):
        raise Unauthenticated("the notice's signature does not verify")
    if abs(now - timestamp) > tolerance:
        raise Unauthenticated(f"the notice was signed more than {tolerance} s from now")


def _parse_signature(header: str) -> tuple[int, list[str]]:
    if len(header) > MAX_SIGNATURE_HEADER:
        raise Unauthenticated("the signature header is too long")
    stamps: list[str] = []
    macs: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            stamps.append(value)
        elif key == "v1":
            macs.append(value)
    if len(stamps) != 1 or not _STAMP.fullmatch(stamps[0]) or not macs:
        raise Unauthenticated("the signature header is t=<unix time>,v1=<hex>")
    return int(stamps[0]), macs


# -- the sinks -----------------------------------------------------------------------------


async def post(url: str, *, content: bytes, headers: Mapping[str, str]) -> None:
    """POST ``content``; ``NotifyFailed`` unless a 2xx answers. Redirects are not followed
    and the answer's body is never read (the fan-out bounds the whole delivery)."""
    try:
        async with (
            httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False) as client,
            client.stream("POST", url, content=content, headers=dict(headers)) as response,
        ):
            status = response.status_code
    except httpx.HTTPError as exc:  # its text may carry the address: only its kind is kept
        raise NotifyFailed(type(exc).__name__) from exc
    if not 200 <= status < 300:
        raise NotifyFailed(f"HTTP {status}")


async def ping_agent(
    endpoint: str, token: str, auth_req_id: str, *, private_ok: bool = False
) -> None:
    """OpenID CIBA ping (Core §10.2): tell an agent its approval request was answered — POST
    ``{"auth_req_id"}`` to the notification endpoint it declared, its own
    ``client_notification_token`` as the bearer token; 5 s in all. An endpoint whose name
    resolves to a loopback, private, link-local or reserved address is refused unless
    ``private_ok`` (``tether serve --dev``): an agent must not make Tether post into the
    network it runs in. (A name that resolves differently a moment later is not caught.)"""
    async with asyncio.timeout(TIMEOUT):
        if not private_ok:
            await _public(endpoint)
        body = canonical_json({"auth_req_id": auth_req_id})
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        await post(endpoint, content=body, headers=headers)


async def _public(url: str) -> None:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        found = await asyncio.get_running_loop().getaddrinfo(
            parts.hostname or "", port, type=socket.SOCK_STREAM
        )
    except OSError as exc:
        raise NotifyFailed("the notification endpoint's name does not resolve") from exc
    if not found or not all(ipaddress.ip_address(info[4][0]).is_global for info in found):
        raise NotifyFailed("the notification endpoint is not a public address")


@dataclass(frozen=True, kw_only=True)
class WebhookSink:
    """POSTs the notice as JSON to ``url``, signed with ``secret`` (:func:`signature_header`)."""

    url: str = field(repr=False)
    secret: str = field(repr=False)
    issuer: str
    clock: Clock
    name: str = "webhook"
    timeout: float = TIMEOUT

    async def __call__(self, approval: Approval) -> None:
        body = canonical_json(notice(approval, issuer=self.issuer))
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature_header(self.secret, body, timestamp=self.clock.timestamp()),
        }
        await post(self.url, content=body, headers=headers)


@dataclass(frozen=True, kw_only=True)
class NtfySink:
    """POSTs a short message to an ntfy topic (``https://ntfy.sh/<topic>`` or a self-hosted
    server): a title, high priority, and a click that opens the request in the inbox. The
    topic's name is a password on a public server: it is never logged."""

    url: str = field(repr=False)
    token: str | None = field(default=None, repr=False)
    issuer: str
    name: str = "ntfy"
    timeout: float = TIMEOUT

    async def __call__(self, approval: Approval) -> None:
        headers = {
            "Content-Type": "text/plain; charset=utf-8",
            "Title": _title(approval),
            "Priority": "high",
            "Tags": "lock",
            "Click": inbox_url(self.issuer, approval),
        }
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        await post(self.url, content=_message(approval).encode(), headers=headers)


class AppriseSink:
    """Sends the short message through Apprise (``pip install 'tether[notify]'``) to its
    services' URLs (``mailto://``, ``tgram://``, ``slack://`` …), which carry their own
    credentials: never logged. The message ends with the link to the request in the inbox.
    Apprise is synchronous: it runs in a worker thread."""

    def __init__(self, *, urls: Sequence[str], issuer: str, timeout: float = TIMEOUT) -> None:
        self._module = _apprise()
        self._urls = tuple(urls)
        self._issuer = issuer
        self.name = "apprise"
        self.timeout = timeout
        if not urls or not self._module.Apprise().add(list(self._urls)):
            raise ConfigError(
                "an approval Apprise URL is not one Apprise understands",
                details={"setting": "approval_apprise_urls"},
            )

    async def __call__(self, approval: Approval) -> None:
        services = self._module.Apprise()
        services.add(list(self._urls))
        body = f"{_message(approval)}\n{inbox_url(self._issuer, approval)}"
        sent = await asyncio.to_thread(services.notify, body=body, title=_title(approval))
        if not sent:
            raise NotifyFailed("Apprise reported a failure")


def _apprise() -> ModuleType:
    """The optional ``apprise`` package, or a ``ConfigError`` saying how to install it."""
    try:
        return importlib.import_module("apprise")
    except ImportError as exc:
        raise ConfigError(
            "Apprise URLs need the apprise package: pip install 'tether[notify]'",
            details={"setting": "approval_apprise_urls"},
        ) from exc


def sinks_from(settings: Settings, *, clock: Clock) -> tuple[Sink, ...]:
    """The sinks ``settings`` configure (none: nobody is told; the inbox still lists)."""
    issuer = settings.issuer_url
    sinks: list[Sink] = []
    if settings.approval_webhook_url and settings.approval_webhook_secret:
        url, secret = settings.approval_webhook_url, settings.approval_webhook_secret
        sinks.append(WebhookSink(url=url, secret=secret, issuer=issuer, clock=clock))
    if settings.approval_ntfy_url:
        url, token = settings.approval_ntfy_url, settings.approval_ntfy_token
        sinks.append(NtfySink(url=url, token=token, issuer=issuer))
    if settings.approval_apprise_urls:
        sinks.append(AppriseSink(urls=settings.approval_apprise_urls, issuer=issuer))
    return tuple(sinks)


# -- the fan-out ---------------------------------------------------------------------------


def notifier(sinks: Sequence[Sink]) -> Notify:
    """Tell every sink of a new request, all at once, each within its own timeout; then raise
    one ``NotifyFailed`` naming those that failed (each failure is logged as it happens)."""
    chosen = tuple(sinks)
    if not chosen:
        return tell_nobody

    async def notify(approval: Approval) -> None:
        outcomes = await asyncio.gather(*(_deliver(sink, approval) for sink in chosen))
        failed = {sink.name: why for sink, why in zip(chosen, outcomes, strict=True) if why}
        if failed:
            named = ", ".join(f"{name} ({why})" for name, why in failed.items())
            message = f"the approval notice was not delivered by {named}"
            raise NotifyFailed(message, details={"failed": failed})

    return notify


async def _deliver(sink: Sink, approval: Approval) -> str | None:
    """None once ``sink`` took the notice; else why not, logged (never the sink's address)."""
    try:
        async with asyncio.timeout(sink.timeout):
            await sink(approval)
    except TimeoutError:
        why = f"no answer within {sink.timeout:g} s"
    except Error as exc:
        why = exc.message
    except Exception as exc:  # noqa: BLE001 - one sink's failure never stops the others
        why = type(exc).__name__
    else:
        return None
    log.warning("approval.sink_failed", approval_id=approval.id, sink=sink.name, error=why)
    return why

"""Reaching the person asked to approve: a signed webhook and an ntfy topic, both real HTTP
servers on 127.0.0.1 that the tests start, told of approval requests made over the API."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.support.calls import TRANSFER_CALL, item
from tests.support.webhooks import Receiver, serve
from tether._internal.clock import SystemClock
from tether.api._notify import (
    SIGNATURE_HEADER,
    NotifyFailed,
    NtfySink,
    WebhookSink,
    notifier,
    signature_header,
    sinks_from,
    verify_signature,
)
from tether.config import Settings
from tether.delegation.ciba import auth_req_key
from tether.delegation.models import Approval
from tether.errors import ConfigError, Unauthenticated

from . import test_ciba_api
from .conftest import ISSUER, ROOT, TRUST_DOMAIN
from .test_ciba_api import FEE, TRANSFER, World

#: The approvals tests' agent (bank-bot) and people (alice, bob), on this module's settings.
world = test_ciba_api.world

SECRET = "whsec_" + "0123456789abcdef" * 2
NTFY_TOKEN = "tk_ntfy-token-for-tests-0123456789"


@pytest.fixture
def webhook() -> Iterator[Receiver]:
    yield from serve()


@pytest.fixture
def ntfy() -> Iterator[Receiver]:
    yield from serve()


@pytest.fixture
def settings(tmp_path: Path, webhook: Receiver, ntfy: Receiver) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        issuer=ISSUER,
        trust_domain=TRUST_DOMAIN,
        root_token=ROOT,
        password_memory_kib=32,
        password_time_cost=1,
        approval_webhook_url=webhook.url,
        approval_webhook_secret=SECRET,
        approval_ntfy_url=ntfy.url,
        approval_ntfy_token=NTFY_TOKEN,
    )


async def _ask(world: World, *digests: str) -> tuple[str, dict[str, Any]]:
    """An approval request over the API: its ``auth_req_id`` and, as the person asked sees
    it in their inbox, the request."""
    asked = await world.ask(*digests)
    assert asked.status_code == 200, asked.text
    auth_req_id: str = asked.json()["auth_req_id"]
    stored = await world.services.store.find_approval(auth_req_key(auth_req_id))
    assert stored is not None
    shown = await world.client.get(f"/v1/approvals/{stored.id}", headers=world.alice)
    assert shown.status_code == 200, shown.text
    entry: dict[str, Any] = shown.json()
    return auth_req_id, entry


def _stamp(header: str) -> int:
    return int(dict(p.split("=", 1) for p in header.split(","))["t"])


# -- the webhook ---------------------------------------------------------------------------


async def test_webhook_notice_is_signed_and_a_tampered_body_fails_verification(
    world: World, webhook: Receiver
) -> None:
    _, listed = await _ask(world, TRANSFER)
    [sent] = webhook.requests
    header = sent.headers[SIGNATURE_HEADER.lower()]
    verify_signature(SECRET, header, sent.body, now=time.time())
    assert sent.headers["content-type"] == "application/json"
    assert sent.notice() == {
        "type": "approval.requested",
        "approval_id": listed["id"],
        "user": "alice",
        "agent": "bank-bot",
        "binding_message": "TX-42",
        "authorization_details": [item(TRANSFER_CALL, amount="100.00")],
        "expires_at": listed["expires_at"],
        "inbox": f"{ISSUER}/v1/approvals/{listed['id']}",
    }
    tampered = sent.body.replace(b"100.00", b"900.00")
    with pytest.raises(Unauthenticated, match="does not verify"):
        verify_signature(SECRET, header, tampered, now=time.time())
    with pytest.raises(Unauthenticated, match="does not verify"):
        verify_signature("another-secret-" + SECRET, header, sent.body, now=time.time())


async def test_webhook_notice_signed_long_ago_fails_verification(
    world: World, webhook: Receiver
) -> None:
    await _ask(world, TRANSFER)
    [sent] = webhook.requests
    header = sent.headers[SIGNATURE_HEADER.lower()]
    signed = _stamp(header)
    verify_signature(SECRET, header, sent.body, now=signed + 300)
    for late in (signed + 301, signed - 301):
        with pytest.raises(Unauthenticated, match="more than 300 s from now"):
            verify_signature(SECRET, header, sent.body, now=late)
    with pytest.raises(Unauthenticated, match="more than 60 s"):
        verify_signature(SECRET, header, sent.body, now=signed + 61, tolerance=60)


async def test_webhook_gets_exactly_one_notice_per_request(
    world: World, webhook: Receiver, ntfy: Receiver
) -> None:
    _, first = await _ask(world, TRANSFER)
    _, second = await _ask(world, TRANSFER, FEE)
    assert [r.notice()["approval_id"] for r in webhook.requests] == [first["id"], second["id"]]
    assert len(ntfy.requests) == 2
    assert [d["call_digest"] for d in webhook.requests[1].notice()["authorization_details"]] == [
        TRANSFER,
        FEE,
    ]


@pytest.mark.parametrize(("status", "why"), [(500, "HTTP 500"), (302, "HTTP 302")])
async def test_a_failing_webhook_never_fails_the_request_and_is_logged(
    world: World, webhook: Receiver, ntfy: Receiver, status: int, why: str
) -> None:
    webhook.status = status
    with capture_logs() as logs:
        _, listed = await _ask(world, TRANSFER)
    assert listed["state"] == "pending"  # the inbox has it
    assert [e["id"] for e in await world.inbox(world.alice)] == [listed["id"]]
    assert len(webhook.requests) == 1  # a redirect is not followed
    assert len(ntfy.requests) == 1  # the other sink was told all the same
    events = {e["event"]: e for e in logs}
    assert events["approval.sink_failed"] == {
        "event": "approval.sink_failed",
        "log_level": "warning",
        "approval_id": listed["id"],
        "sink": "webhook",
        "error": why,
    }
    failed = events["approval.notify_failed"]
    assert (failed["log_level"], failed["approval_id"]) == ("error", listed["id"])


# -- ntfy ----------------------------------------------------------------------------------


async def test_ntfy_message_names_the_agent_and_clicks_through_to_the_inbox(
    world: World, ntfy: Receiver
) -> None:
    _, listed = await _ask(world, TRANSFER, FEE)
    [sent] = ntfy.requests
    assert sent.path == "/notices"
    assert sent.headers["title"] == "Approval requested by bank-bot"
    assert sent.headers["click"] == f"{ISSUER}/v1/approvals/{listed['id']}"
    assert sent.headers["priority"] == "high"
    assert sent.headers["authorization"] == f"Bearer {NTFY_TOKEN}"
    message = sent.body.decode()
    assert message.startswith("bank-bot asks alice to approve: TX-42\n")
    assert "Items: payment_initiation, payment_initiation" in message
    assert TRANSFER not in message


async def test_notices_never_carry_the_auth_req_id_or_a_token(
    world: World, webhook: Receiver, ntfy: Receiver
) -> None:
    auth_req_id, _ = await _ask(world, TRANSFER)
    [signed] = webhook.requests
    [pushed] = ntfy.requests
    everything = b"\n".join(
        [signed.body, pushed.body, json.dumps([signed.headers, pushed.headers]).encode()]
    )
    for secret in (auth_req_id, ROOT, SECRET, world.alice["Authorization"].split()[1]):
        assert secret.encode() not in everything
    assert b"eyJ" not in everything  # no JWT of any kind: assertions, SVIDs, tokens
    assert NTFY_TOKEN.encode() not in pushed.body + signed.body
    assert set(signed.notice()) == {
        "type", "approval_id", "user", "agent", "binding_message", "authorization_details",
        "expires_at", "inbox",
    }  # fmt: skip


# -- the fan-out ---------------------------------------------------------------------------


def _approval() -> Approval:
    now = datetime.now(UTC)
    return Approval(
        id="apr_direct",
        auth_req_key="0" * 64,
        client=f"spiffe://{TRUST_DOMAIN}/agent/bank-bot/i/pod-1",
        agent="bank-bot",
        user="alice",
        scope=frozenset({"openid"}),
        binding_message="TX-42",
        details=(item(TRANSFER_CALL),),
        created_at=now,
        expires_at=now + timedelta(minutes=5),
        interval=5,
    )


async def test_a_slow_sink_is_cut_off_at_its_timeout_and_the_others_still_deliver(
    webhook: Receiver, ntfy: Receiver
) -> None:
    webhook.delay = 1.0
    slow = WebhookSink(url=webhook.url, secret=SECRET, issuer=ISSUER, clock=SystemClock(),
                       timeout=0.2)  # fmt: skip
    notify = notifier([slow, NtfySink(url=ntfy.url, issuer=ISSUER)])
    started = time.monotonic()
    with pytest.raises(NotifyFailed, match=r"not delivered by webhook \(no answer within 0.2 s\)$"):
        await notify(_approval())
    assert time.monotonic() - started < 0.9
    assert len(ntfy.requests) == 1
    assert "authorization" not in ntfy.requests[0].headers  # no token configured, none sent


async def test_the_fan_out_tries_every_sink_and_names_each_that_failed(
    settings: Settings, webhook: Receiver, ntfy: Receiver
) -> None:
    webhook.status, ntfy.status = 500, 503
    notify = notifier(sinks_from(settings, clock=SystemClock()))
    with pytest.raises(NotifyFailed) as raised:
        await notify(_approval())
    assert raised.value.message == (
        "the approval notice was not delivered by webhook (HTTP 500), ntfy (HTTP 503)"
    )
    assert dict(raised.value.details) == {"failed": {"webhook": "HTTP 500", "ntfy": "HTTP 503"}}
    assert (len(webhook.requests), len(ntfy.requests)) == (1, 1)


async def test_no_sinks_configured_tells_nobody(tmp_path: Path) -> None:
    assert sinks_from(Settings(data_dir=tmp_path), clock=SystemClock()) == ()
    assert await notifier(())(_approval()) is None


# -- the signature scheme ------------------------------------------------------------------

_BODY = b'{"type":"approval.requested"}'
_T = 1_700_000_000


@pytest.mark.parametrize(
    "header",
    [
        "",
        f"v1={'0' * 64}",  # no time
        f"t={_T}",  # no signature
        f"t={_T},t={_T},v1={'0' * 64}",  # two times
        f"t=-{_T},v1={'0' * 64}",
        f"t=１７,v1={'0' * 64}",  # digits, but not ASCII ones
        f"t={_T}," + ",".join(["v1=" + "0" * 64] * 20),  # too long to read
    ],
)
def test_a_malformed_signature_header_is_refused(header: str) -> None:
    with pytest.raises(Unauthenticated):
        verify_signature(SECRET, header, _BODY, now=_T)


def test_a_signature_by_either_secret_verifies_while_the_secret_is_rotated() -> None:
    old = signature_header("old-" + SECRET, _BODY, timestamp=_T)
    new = signature_header(SECRET, _BODY, timestamp=_T)
    both = f"{old},{new.split(',')[1]}"
    verify_signature(SECRET, both, _BODY, now=_T)
    verify_signature("old-" + SECRET, both, _BODY, now=_T)
    with pytest.raises(Unauthenticated, match="does not verify"):
        verify_signature("third-" + SECRET, both, _BODY, now=_T)


def test_the_signature_is_hmac_sha256_over_the_time_a_dot_and_the_body() -> None:
    import hashlib  # noqa: PLC0415 - the scheme, spelled out as a receiver would
    import hmac  # noqa: PLC0415

    mac = hmac.new(SECRET.encode(), f"{_T}.".encode() + _BODY, hashlib.sha256).hexdigest()
    assert signature_header(SECRET, _BODY, timestamp=_T) == f"t={_T},v1={mac}"


# -- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"approval_webhook_url": "https://hooks.example/t"}, "needs approval_webhook_secret"),
        (
            {
                "approval_webhook_url": "https://hooks.example/t",
                "approval_webhook_secret": "x" * 31,
            },
            "at least 32 characters",
        ),
        (
            {"approval_webhook_url": "http://hooks.example/t", "approval_webhook_secret": SECRET},
            "approval_webhook_url is an https URL",
        ),
        ({"approval_ntfy_url": "http://ntfy.example/topic"}, "approval_ntfy_url is an https URL"),
        ({"approval_ntfy_url": "ntfy.sh/topic"}, "approval_ntfy_url is an https URL"),
    ],
)
def test_approval_sinks_are_https_or_loopback_and_a_webhook_needs_a_long_secret(
    tmp_path: Path, changes: dict[str, str], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        Settings(data_dir=tmp_path, **changes)  # type: ignore[arg-type]


def test_approval_sinks_are_read_from_the_environment_and_kept_out_of_repr(tmp_path: Path) -> None:
    read = Settings.from_environ(
        {
            "TETHER_DATA_DIR": str(tmp_path),
            "TETHER_APPROVAL_WEBHOOK_URL": "https://hooks.example/tether",
            "TETHER_APPROVAL_WEBHOOK_SECRET": SECRET,
            "TETHER_APPROVAL_NTFY_URL": "http://127.0.0.1:8080/approvals",
            "TETHER_APPROVAL_NTFY_TOKEN": NTFY_TOKEN,
            "TETHER_APPROVAL_APPRISE_URLS": "json://127.0.0.1/a mailto://u:p@example.org",
        }
    )
    assert read.approval_webhook_url == "https://hooks.example/tether"
    assert read.approval_webhook_secret == SECRET
    assert read.approval_ntfy_url == "http://127.0.0.1:8080/approvals"
    assert read.approval_ntfy_token == NTFY_TOKEN
    assert read.approval_apprise_urls == ("json://127.0.0.1/a", "mailto://u:p@example.org")
    for secret in (SECRET, NTFY_TOKEN, "/approvals", "u:p@"):
        assert secret not in repr(read)


# -- Apprise (the `notify` extra) ----------------------------------------------------------


def test_apprise_urls_without_the_apprise_package_refuse_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "apprise", None)  # as if not installed
    configured = Settings(data_dir=tmp_path, approval_apprise_urls=("json://127.0.0.1/a",))
    with pytest.raises(ConfigError, match=r"pip install 'tether\[notify\]'"):
        sinks_from(configured, clock=SystemClock())


# Apprise 2 on Python 3.11 imports the standard library's deprecated ``imghdr``.
@pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")
async def test_apprise_sink_delivers_the_message_through_apprise(
    tmp_path: Path, ntfy: Receiver
) -> None:
    pytest.importorskip("apprise")
    target = f"json://127.0.0.1:{ntfy.port}/apprise"
    configured = Settings(data_dir=tmp_path, approval_apprise_urls=(target,))
    notify = notifier(sinks_from(configured, clock=SystemClock()))
    await notify(_approval())
    [sent] = ntfy.requests
    assert sent.path == "/apprise"
    assert sent.notice()["title"] == "Approval requested by bank-bot"
    assert sent.notice()["message"].startswith("bank-bot asks alice to approve: TX-42")
    assert sent.notice()["message"].endswith(f"\n{configured.issuer_url}/v1/approvals/apr_direct")
    ntfy.status = 500
    with pytest.raises(NotifyFailed, match=r"by apprise \(Apprise reported a failure\)"):
        await notify(_approval())

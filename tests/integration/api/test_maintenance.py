"""The server's upkeep: keys rotate while it runs, expired single-use values are forgotten."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from tether._internal.clock import FixedClock
from tether.api.app import create_app
from tether.api.services import Services
from tether.cli.commands.serve import renew_tls
from tether.config import Settings

from .conftest import ISSUER, ROOT, TRUST_DOMAIN


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
async def upkept(tmp_path: Path, clock: FixedClock) -> AsyncIterator[Services]:
    settings = Settings(
        data_dir=tmp_path / "data",
        issuer=ISSUER,
        trust_domain=TRUST_DOMAIN,
        root_token=ROOT,
        signing_key_max_age_days=30,
        maintenance_interval_seconds=0.05,
    )
    services = await Services.open(settings, clock=clock)
    try:
        yield services
    finally:
        await services.close()


async def test_due_signing_key_rotates_while_the_server_runs(
    upkept: Services, clock: FixedClock
) -> None:
    old = upkept.keyring.signer.kid
    clock.advance(timedelta(days=31).total_seconds())
    await upkept.maintain()
    assert upkept.keyring.signer.kid != old
    kids = [k["kid"] for k in upkept.keyring.jwks(now=clock.now())["keys"]]
    assert kids == [upkept.keyring.signer.kid, old], "the old key stays until its tokens expire"
    types = [r.type for _, r in await upkept.store.list_audit(limit=100, type_prefix="keyring.")]
    assert types[-2:] == ["keyring.key_created", "keyring.key_retired"]


async def test_expired_single_use_values_are_forgotten(upkept: Services, clock: FixedClock) -> None:
    await upkept.store.consume_once("assertion:x:jti-1", expires_at=clock.now() + timedelta(1))
    clock.advance(timedelta(days=2).total_seconds())
    await upkept.maintain()
    assert await upkept.store.purge_replay_keys(before=clock.now()) == 0


async def test_the_app_runs_maintenance_while_it_serves(
    upkept: Services, clock: FixedClock
) -> None:
    old = upkept.keyring.signer.kid
    clock.advance(timedelta(days=31).total_seconds())
    app = create_app(upkept.settings, services=upkept)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER) as client,
    ):
        for _ in range(100):
            jwks = (await client.get("/.well-known/jwks.json")).json()
            if len(jwks["keys"]) == 2:
                break
            await asyncio.sleep(0.05)
    assert upkept.keyring.signer.kid != old
    assert [k["kid"] for k in jwks["keys"]][1] == old


async def test_tls_renewal_serves_a_fresh_certificate_from_the_rotated_ca(
    upkept: Services, clock: FixedClock
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    renew_tls(context, upkept, upkept.settings, "127.0.0.1")
    server_pem = upkept.settings.data_dir / "tls" / "server.pem"
    first = x509.load_pem_x509_certificate(server_pem.read_bytes())
    clock.advance(timedelta(days=200).total_seconds())  # past the CA's half-life
    await upkept.maintain()
    renew_tls(context, upkept, upkept.settings, "127.0.0.1")
    second = x509.load_pem_x509_certificate(server_pem.read_bytes())
    assert second.issuer == first.issuer  # same CA name, new CA key
    assert second.not_valid_after_utc > first.not_valid_after_utc
    new_ca = upkept.keyring.ca.certificate
    second.verify_directly_issued_by(new_ca)
    assert context.cert_store_stats()["x509_ca"] == 2, "old and new CA both trusted"

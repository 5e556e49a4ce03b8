"""mTLS behind a TLS-terminating proxy (RFC 8705 with the certificate in a header, as nginx's
``$ssl_client_escaped_cert``): believed only from a trusted proxy, and never by default."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.tokens import client_credentials
from tether.config import Settings

from .conftest import ISSUER, ROOT, TRUST_DOMAIN, AgentFactory

HEADER = "x-ssl-client-cert"
TOKEN_ENDPOINT = f"{ISSUER}/oauth2/token"


@pytest.fixture(params=["trusted"])
def settings(tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    proxies = {
        "trusted": ("127.0.0.0/8",),
        "untrusted": ("10.0.0.0/8",),
        "unset": ("127.0.0.0/8",),
    }[request.param]
    return Settings(
        data_dir=tmp_path / "data",
        issuer=ISSUER,
        trust_domain=TRUST_DOMAIN,
        root_token=ROOT,
        forwarded_client_cert_header=None if request.param == "unset" else HEADER,
        trusted_proxies=() if request.param == "unset" else proxies,
    )


def _csr() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pod")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


async def _svid(client: httpx.AsyncClient, make_agent: AgentFactory) -> str:
    agent = await make_agent()
    form = client_credentials(
        agent.key.private_pem,
        client_id=agent.spiffe_id,
        audience=TOKEN_ENDPOINT,
        now=int(time.time()),
    )
    issued = await client.post("/oauth2/token", data=form)
    assert issued.status_code == 200, issued.text
    bearer = {"Authorization": f"Bearer {issued.json()['access_token']}"}
    cert = await client.post("/v1/svid/x509", json={"csr": _csr()}, headers=bearer)
    assert cert.status_code == 200, cert.text
    pem: str = cert.json()["certificate"]
    return pem


async def test_certificate_forwarded_by_a_trusted_proxy_authenticates_and_binds(
    client: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    forwarded = {HEADER: quote(await _svid(client, make_agent))}
    response = await client.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, headers=forwarded
    )
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    part = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    assert claims["sub"] == f"spiffe://{TRUST_DOMAIN}/agent/faq-bot/i/pod-1"
    assert "x5t#S256" in claims["cnf"]
    bearer = {"Authorization": f"Bearer {token}"}
    with_cert = await client.post(
        "/v1/svid/x509", json={"csr": _csr()}, headers={**bearer, **forwarded}
    )
    assert with_cert.status_code == 200, with_cert.text
    without = await client.post("/v1/svid/x509", json={"csr": _csr()}, headers=bearer)
    assert without.status_code == 401, "a certificate-bound token needs its certificate"


@pytest.mark.parametrize("settings", ["untrusted", "unset"], indirect=True)
async def test_forwarded_certificate_header_from_anyone_else_is_ignored(
    client: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    # A certificate is public: whoever replays it in a header proves nothing.
    forwarded = {HEADER: quote(await _svid(client, make_agent))}
    response = await client.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, headers=forwarded
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


async def test_forwarded_certificate_from_another_ca_is_invalid_client_and_audited(
    client: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    await make_agent()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rogue")])
    now = dt.datetime.now(dt.UTC)
    rogue = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"spiffe://{TRUST_DOMAIN}/agent/faq-bot/i/pod-1")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    pem = rogue.public_bytes(serialization.Encoding.PEM).decode()
    response = await client.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, headers={HEADER: quote(pem)}
    )
    assert (response.status_code, response.json()["error"]) == (401, "invalid_client")
    audit = await client.get("/v1/audit", params={"type_prefix": "client."})
    reasons = [r["details"]["reason"] for r in audit.json()["records"]]
    assert reasons == ["certificate_untrusted"]

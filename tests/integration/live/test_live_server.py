"""A real ``tether serve`` process on loopback, driven by clients that know nothing of Tether:
Authlib's OAuth 2.0 client with ``private_key_jwt`` and py-spiffe's validators; and the mTLS way
in with ``tether serve --tls`` and an X.509-SVID client certificate (RFC 8705)."""

from __future__ import annotations

import datetime as dt
import json
import ssl
import time
from pathlib import Path

import httpx
from authlib.integrations.httpx_client import OAuth2Client
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store
from joserfc.jwk import ECKey
from spiffe import JwtBundle, JwtSvid, TrustDomain, X509Svid

from tether.crypto.assertion import generate_agent_key, sign_client_assertion
from tether.identity.client_auth import ASSERTION_TYPE

from .conftest import TD, Live


def _register(server: Live, name: str = "faq-bot") -> tuple[str, bytes]:
    key = generate_agent_key()
    with server.ops() as ops:
        agent = ops.post("/v1/agents", json={"name": name, "owners": ["alice"]})
        assert agent.status_code == 201, agent.text
        added = ops.post(f"/v1/agents/{name}/keys", json={"jwk": key.public_jwk})
        assert added.status_code == 201, added.text
    spiffe_id: str = agent.json()["spiffe_id"]
    return spiffe_id, key.private_pem


def _jwt_bundle(server: Live) -> JwtBundle:
    bundle = httpx.get(f"{server.addr}/v1/svid/bundle", verify=server.verify).json()
    jwt_keys = [k for k in bundle["keys"] if k["use"] == "jwt-svid"]
    assert jwt_keys, "the SPIFFE bundle carries the JWT authorities"
    jwks = {"keys": [{k: v for k, v in key.items() if k != "use"} for key in jwt_keys]}
    return JwtBundle.parse(TrustDomain(TD), json.dumps(jwks).encode())


def test_generic_oauth_client_gets_a_jwt_svid_from_discovery_alone(live: Live) -> None:
    client_id, private_pem = _register(live)
    meta = httpx.get(f"{live.addr}/.well-known/oauth-authorization-server").json()
    token_endpoint = meta["token_endpoint"]
    assert "private_key_jwt" in meta["token_endpoint_auth_methods_supported"]
    with OAuth2Client(
        client_id=client_id,
        # Authlib reads a PEM client_secret as RSA; an EC key is handed over as a JWK object.
        client_secret=ECKey.import_key(private_pem),
        token_endpoint_auth_method=PrivateKeyJWT(token_endpoint, alg="ES256"),
    ) as oauth:
        token = oauth.fetch_token(
            token_endpoint, grant_type="client_credentials", instance_id="pod-7"
        )
    svid = JwtSvid.parse_and_validate(token["access_token"], _jwt_bundle(live), {meta["issuer"]})
    assert str(svid.spiffe_id) == f"spiffe://{TD}/agent/faq-bot/i/pod-7"


def _csr(asking_for: str) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin")]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(asking_for)]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM), key


def _agent_token(server: Live, client_id: str, private_pem: bytes, instance: str) -> str:
    meta = httpx.get(
        f"{server.addr}/.well-known/oauth-authorization-server", verify=server.verify
    ).json()
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": sign_client_assertion(
            private_pem, client_id=client_id, audience=meta["token_endpoint"], now=int(time.time())
        ),
        "instance_id": instance,
    }
    response = httpx.post(meta["token_endpoint"], data=form, verify=server.verify)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def test_x509_svid_over_mtls_gives_certificate_bound_tokens(live_tls: Live, tmp_path: Path) -> None:
    client_id, private_pem = _register(live_tls)
    token = _agent_token(live_tls, client_id, private_pem, "pod-1")
    csr, key = _csr(asking_for="spiffe://acme.org/agent/root")
    issued = httpx.post(
        f"{live_tls.addr}/v1/svid/x509",
        json={"csr": csr.decode()},
        headers={"Authorization": f"Bearer {token}"},
        verify=live_tls.verify,
    )
    assert issued.status_code == 200, issued.text
    body = issued.json()
    want = f"spiffe://{TD}/agent/faq-bot/i/pod-1"
    assert body["spiffe_id"] == want

    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    svid = X509Svid.parse(body["certificate"].encode(), key_pem)
    assert str(svid.spiffe_id) == want, "the CSR's own SAN request is ignored"
    bundle_pem = httpx.get(f"{live_tls.addr}/v1/svid/bundle.pem", verify=live_tls.verify).content
    verifier = (
        PolicyBuilder()
        .store(Store(x509.load_pem_x509_certificates(bundle_pem)))
        .build_client_verifier()
    )
    verified = verifier.verify(svid.leaf, [])
    assert verified.subjects is not None
    assert [str(u.value) for u in verified.subjects] == [want]

    cert_file, key_file = tmp_path / "svid.pem", tmp_path / "svid.key"
    cert_file.write_text(body["certificate"])
    key_file.write_bytes(key_pem)
    mtls_context = ssl.create_default_context(cafile=str(live_tls.data_dir / "tls" / "ca.pem"))
    mtls_context.load_cert_chain(cert_file, key_file)
    with httpx.Client(verify=mtls_context) as mtls:
        response = mtls.post(
            f"{live_tls.addr}/oauth2/token", data={"grant_type": "client_credentials"}
        )
        assert response.status_code == 200, response.text
        bound = response.json()["access_token"]
        with_cert = mtls.post(
            f"{live_tls.addr}/v1/svid/x509",
            json={"csr": _csr(want)[0].decode()},
            headers={"Authorization": f"Bearer {bound}"},
        )
        assert with_cert.status_code == 200, with_cert.text
    without_cert = httpx.post(
        f"{live_tls.addr}/v1/svid/x509",
        json={"csr": _csr(want)[0].decode()},
        headers={"Authorization": f"Bearer {bound}"},
        verify=live_tls.verify,
    )
    assert without_cert.status_code == 401, "a certificate-bound token needs its certificate"


def test_client_certificate_from_another_ca_is_refused(live_tls: Live, tmp_path: Path) -> None:
    _register(live_tls)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rogue")])
    now = time.time()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime.fromtimestamp(now - 60, tz=dt.UTC))
        .not_valid_after(dt.datetime.fromtimestamp(now + 3600, tz=dt.UTC))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"spiffe://{TD}/agent/faq-bot/i/pod-1")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "rogue.pem", tmp_path / "rogue.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    rogue_context = ssl.create_default_context(cafile=str(live_tls.data_dir / "tls" / "ca.pem"))
    rogue_context.load_cert_chain(cert_file, key_file)
    with httpx.Client(verify=rogue_context) as rogue:
        try:
            response = rogue.post(
                f"{live_tls.addr}/oauth2/token", data={"grant_type": "client_credentials"}
            )
        except httpx.TransportError:
            return  # the TLS handshake itself refused the certificate
    assert (response.status_code, response.json()["error"]) == (401, "invalid_client")

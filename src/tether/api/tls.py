"""Serving HTTPS with optional client certificates (mTLS), for ``tether serve --tls``.

uvicorn verifies the client certificate against Tether's CA during the handshake
(``CERT_OPTIONAL``: agents without one still reach the token endpoint with ``private_key_jwt``)
but does not hand the certificate to the application. :class:`ClientCertH11Protocol` adds it
to each request's scope the way the ASGI TLS extension describes
(``scope["extensions"]["tls"]["client_cert_chain"]``, PEM strings). The application verifies it
again (chain, validity, SPIFFE ID) before trusting it.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["ClientCertH11Protocol", "with_client_cert"]


def with_client_cert(app: Any, cert_pem: str) -> Any:
    """Wrap an ASGI app so every HTTP scope carries ``cert_pem`` as the client certificate."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") == "http":
            extensions = dict(scope.get("extensions") or {})
            extensions["tls"] = {"client_cert_chain": [cert_pem], "client_cert_error": None}
            scope = {**scope, "extensions": extensions}
        await app(scope, receive, send)

    return wrapped


class ClientCertH11Protocol(H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return
        der = ssl_object.getpeercert(binary_form=True)
        if der:
            self.app = with_client_cert(self.app, ssl.DER_cert_to_PEM_cert(der))

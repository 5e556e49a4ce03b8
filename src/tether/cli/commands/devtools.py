"""Developer helpers: ``tether agent keygen`` and ``tether agent token``.

They let a person try the agent side by hand: make a P-256 key pair (the private key stays in a
0600 file), then sign an RFC 7523 client assertion and trade it for a JWT-SVID at the token
endpoint found through discovery — what any OAuth client with ``private_key_jwt`` does.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer

from tether.cli.client import Api, fail
from tether.cli.exit_codes import INVALID_INPUT
from tether.cli.options import OutputOpt
from tether.cli.output import Output, show
from tether.config import ClientSettings
from tether.crypto.assertion import generate_agent_key, sign_client_assertion


def keygen(
    private_key_file: Annotated[Path, typer.Argument(help="Where to write the private key")],
) -> None:
    """Make a P-256 key pair: the private key (PEM, 0600) to a file, the public JWK to stdout."""
    pair = generate_agent_key()
    try:
        fd = os.open(private_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        fail(f"{private_key_file} exists: not overwriting a key", INVALID_INPUT)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pair.private_pem)
    print(json.dumps(pair.public_jwk, indent=2))


def token(
    name: str,
    key: Annotated[Path, typer.Option("--key", help="The agent's private key (PEM)")],
    instance: Annotated[str, typer.Option("--instance", help="This running copy's id")],
    output: OutputOpt = Output.TABLE,
    audience: Annotated[
        list[str] | None, typer.Option("--audience", help="Who the token is for (repeat)")
    ] = None,
) -> None:
    """Authenticate as an agent instance with private_key_jwt and print its JWT-SVID."""
    settings = ClientSettings.from_environ()
    with Api(ClientSettings(addr=settings.addr, ca_cert=settings.ca_cert)) as api:
        meta = api.call("GET", "/.well-known/oauth-authorization-server")
        client_id = f"spiffe://{meta['spiffe_trust_domain']}/agent/{name}"
        try:
            pem = key.read_bytes()
        except OSError as exc:
            fail(f"cannot read {key}: {exc.strerror}", INVALID_INPUT)
        assertion = sign_client_assertion(
            pem, client_id=client_id, audience=meta["token_endpoint"], now=int(time.time())
        )
        form = {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
            "instance_id": instance,
        }
        if audience:
            form["audience"] = audience  # type: ignore[assignment]
        path = httpx.URL(meta["token_endpoint"]).raw_path.decode()
        show(api.call("POST", path, data=form), output)

"""An agent on a running ``tether serve`` for a benchmark: registered with a key, a policy
applied, and its JWT-SVID (for Tether itself, or for an audience such as
``<issuer>/mcp/<server>``)."""

from __future__ import annotations

import time

import httpx

from tether.crypto.assertion import generate_agent_key, sign_client_assertion

__all__ = ["agent_token", "register_agent"]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def register_agent(
    addr: str, *, root: str, name: str, policy: str, tools: tuple[str, ...] = ()
) -> tuple[str, bytes]:
    """Register ``name`` (declaring ``tools``) with a new key as ``root`` and apply
    ``policy``: the agent's SPIFFE ID and its private key (PEM)."""
    with httpx.Client(base_url=addr, headers={"Authorization": f"Bearer {root}"},
                      timeout=60) as ops:  # fmt: skip
        body = {"name": name, "owners": ["bench"], "declarations": {"tools": list(tools)}}
        created = ops.post("/v1/agents", json=body)
        created.raise_for_status()
        pair = generate_agent_key()
        ops.post(f"/v1/agents/{name}/keys", json={"jwk": pair.public_jwk}).raise_for_status()
        ops.post("/v1/policies", json={"text": policy}).raise_for_status()
    spiffe_id: str = created.json()["spiffe_id"]
    return spiffe_id, pair.private_pem


def agent_token(
    addr: str,
    *,
    root: str,
    name: str,
    policy: str,
    tools: tuple[str, ...] = (),
    audience: str | None = None,
    instance: str = "bench-1",
) -> str:
    """Register ``name`` (declaring ``tools``) with a new key as ``root``, apply ``policy``
    and return the agent's JWT-SVID for ``audience`` (Tether itself when None)."""
    spiffe_id, private_pem = register_agent(addr, root=root, name=name, policy=policy, tools=tools)
    assertion = sign_client_assertion(
        private_pem, client_id=spiffe_id, audience=f"{addr}/oauth2/token", now=int(time.time()),
    )  # fmt: skip
    form = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion, "instance_id": instance}  # fmt: skip
    if audience is not None:
        form["audience"] = audience
    issued = httpx.post(f"{addr}/oauth2/token", data=form, timeout=60)
    issued.raise_for_status()
    token: str = issued.json()["access_token"]
    return token

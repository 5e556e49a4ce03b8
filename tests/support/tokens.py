"""The token endpoint's request, as an agent's pod sends it (for tests of any transport)."""

from __future__ import annotations

from tether.crypto.assertion import sign_client_assertion
from tether.identity.client_auth import ASSERTION_TYPE


def client_credentials(
    private_pem: bytes, *, client_id: str, audience: str, now: int, instance_id: str = "pod-1"
) -> dict[str, str]:
    """The form of a ``client_credentials`` request authenticated by a ``private_key_jwt``
    assertion signed with ``private_pem`` at ``now``, for the instance ``instance_id``."""
    assertion = sign_client_assertion(private_pem, client_id=client_id, audience=audience, now=now)
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
        "instance_id": instance_id,
    }

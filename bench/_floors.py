"""Pieces the floors share: what a checkpoint built of the bare libraries sends to cedarpy."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["agent_request"]


def agent_request(
    agent: str, action: str, resource: tuple[str, str], **context: Any
) -> dict[str, Any]:
    """The Cedar request for ``agent`` acting on its own (no user, no delegation chain) on the
    ``Tether::<kind>`` entity ``resource`` = ``(kind, id)``, as Tether's checkpoint builds it
    for instance ``pod-1``; ``context`` adds to (or replaces) its context."""
    kind, name = resource
    return {
        "principal": {"type": "Tether::Agent", "id": agent},
        "action": {"type": "Tether::Action", "id": action},
        "resource": {"type": f"Tether::{kind}", "id": name},
        "context": {
            "now": int(time.time()),
            "instance": "pod-1",
            "scopes": [],
            "act_chain": [],
            "act_depth": 0,
            **context,
        },
    }

"""Calls an approval is asked for, as RFC 9396 ``authorization_details`` items carry them: the
call itself (``action``, ``resource``, ``arguments``) and its digest, computed as the checkpoint
computes it."""

from __future__ import annotations

from typing import Any

from tether._internal.canonical import call_digest


def tool_call(tool: str, **arguments: Any) -> dict[str, Any]:
    """``call_tool`` on ``Tool::<tool>`` with ``arguments``."""
    return {"action": "call_tool", "resource": {"type": "Tool", "id": tool}, "arguments": arguments}


def digest(call: dict[str, Any]) -> str:
    resource = call["resource"]
    return call_digest(call["action"], f'{resource["type"]}::"{resource["id"]}"', call["arguments"])


def item(call: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """An item approving ``call``: a payment, described by ``fields`` too."""
    return {"type": "payment_initiation", **fields, "call": call, "call_digest": digest(call)}


TRANSFER_CALL = tool_call("transfer", amount=100, to="bob")
FEE_CALL = tool_call("pay_fee", amount=2)
#: The digests, and the call each stands for.
TRANSFER, FEE = digest(TRANSFER_CALL), digest(FEE_CALL)
CALLS = {TRANSFER: TRANSFER_CALL, FEE: FEE_CALL}

"""Decision records as an operator reads them from a running server (``/v1/audit``)."""

from __future__ import annotations

from typing import Any

import httpx


def decision_record(ops: httpx.Client, decision_id: object) -> dict[str, Any]:
    """The details of the one decision record with ``decision_id`` (``ops``: an operator
    client of the server)."""
    found = ops.get("/v1/audit", params={"type_prefix": "decision", "limit": 1000})
    assert found.status_code == 200, found.text
    records = [r["details"] for r in found.json()["records"]
               if r["details"].get("decision_id") == decision_id]  # fmt: skip
    assert len(records) == 1, decision_id
    record: dict[str, Any] = records[0]
    return record

"""The decision record the audit benchmarks write, verify and prove (one shape for all)."""

from __future__ import annotations

from datetime import datetime

from tether.audit.records import AuditRecord, Outcome


def decision(i: int, at: datetime) -> AuditRecord:
    """Decision number ``i`` of a busy agent, as the checkpoint records one (about 600 bytes
    as an entry)."""
    return AuditRecord(
        id=f"rec_{i:08d}",
        type="decision",
        time=at,
        actor="spiffe://acme.org/agent/faq-bot/i/pod-1",
        subject='Tool::"search_faq"',
        outcome=Outcome.SUCCESS,
        correlation_id=f"req-{i}",
        details={
            "decision_id": f"dec_{i:08d}",
            "enforcement_point": "authzen",
            "agent": "faq-bot",
            "instance": "pod-1",
            "action": "call_tool",
            "resource": 'Tool::"search_faq"',
            "effect": "allow",
            "policy_ids": ["faq-bot-searches-the-faq"],
            "call_digest": "hmac-sha256:" + "ab" * 32,
        },
    )

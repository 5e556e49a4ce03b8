"""Proof of control: audit records, the tamper-evident log they go to, and its proofs.

Example::

    >>> from tether.audit import AuditRecord
    >>> AuditRecord.new(type="agent.registered", actor="operator:alice", subject="spiffe://td/agent/a",
    ...                 time=__import__("datetime").datetime(2026, 1, 1)).type
    'agent.registered'
"""

from tether.audit.log import AuditLog
from tether.audit.records import AuditReceipt, AuditRecord, Outcome
from tether.audit.sink import AuditSink

__all__ = ["AuditLog", "AuditReceipt", "AuditRecord", "AuditSink", "Outcome"]

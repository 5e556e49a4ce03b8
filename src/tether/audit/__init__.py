"""Proof of control: audit records and the sink every state change goes through.

Example::

    >>> from tether.audit import AuditRecord
    >>> AuditRecord.new(type="agent.registered", actor="operator:alice", subject="spiffe://td/agent/a",
    ...                 time=__import__("datetime").datetime(2026, 1, 1)).type
    'agent.registered'
"""

from tether.audit.records import AuditReceipt, AuditRecord, Outcome
from tether.audit.sink import AuditSink, StoreAuditSink

__all__ = ["AuditReceipt", "AuditRecord", "AuditSink", "Outcome", "StoreAuditSink"]

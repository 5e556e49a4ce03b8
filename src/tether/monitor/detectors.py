"""Detectors: turn the event stream into findings.

Each detector reads events (:mod:`tether.monitor.events`) and says what it found as
:class:`~tether.monitor.models.Finding` values; the monitor (:mod:`tether.monitor.service`)
deduplicates them into alerts. Two kinds:

* **by event** (:class:`EventRules`, :class:`DecisionRules`, :class:`OutOfDeclaration`): one
  event is enough — a user's own token presented where an agent acts (``impersonation``), a
  token refused because it is revoked (``revoked_credential_used``), an agent not registered
  (``unknown_caller``), a delegation chain deeper than allowed (``chain_too_deep``), a decision
  that could not be recorded (``audit_sink_failed``), a policy set that cannot be compiled
  (``policy_store_failed``), a tool whose definition changed (``tool_definition_changed``), a
  failed or impossible revocation (``lease_revocation_failed``, ``lease_irrevocable``), a login
  in a managed database that Tether did not create (``unmanaged_login``), a call of a tool or
  resource the agent did not declare (``out_of_declaration``);
* **over a window** (:mod:`tether.monitor.windows`): counts kept per agent or over every
  decision, read at each event and at each :meth:`~Detector.tick` (once a second) —
  ``denied_burst``, ``deny_rate_spike``, ``error_rate_spike``.

The stable kinds are listed in :data:`KINDS`. Detectors hold no I/O: what they need to know of
an agent (its declarations) is handed in as a function; time comes from the events and ticks.

Example::

    >>> import asyncio
    >>> from tether.monitor.events import Event
    >>> event = Event(type="decision", time=1.0, data={"refusal": "chain_too_deep", "agent": "bot"})
    >>> [f.kind for f in asyncio.run(DecisionRules().observe(event))]
    ['chain_too_deep']
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from tether.identity.models import Declarations
from tether.monitor.events import Event
from tether.monitor.least_privilege import covers
from tether.monitor.models import Finding, Severity

__all__ = [
    "KINDS",
    "DecisionRules",
    "Detector",
    "EventRules",
    "OutOfDeclaration",
    "Thresholds",
    "finding",
]

#: Every kind of finding, with its severity.
KINDS: Mapping[str, Severity] = {
    "impersonation": Severity.CRITICAL,
    "unknown_caller": Severity.MEDIUM,
    "revoked_credential_used": Severity.HIGH,
    "out_of_declaration": Severity.MEDIUM,
    "denied_burst": Severity.HIGH,
    "chain_too_deep": Severity.HIGH,
    "tool_definition_changed": Severity.CRITICAL,
    "tool_held": Severity.LOW,
    "audit_sink_failed": Severity.CRITICAL,
    "audit_witness_failed": Severity.HIGH,
    "audit_log_invalid": Severity.CRITICAL,
    "policy_store_failed": Severity.CRITICAL,
    "lease_revocation_failed": Severity.MEDIUM,
    "lease_irrevocable": Severity.CRITICAL,
    "lease_sweep_failed": Severity.MEDIUM,
    "reaper_lag": Severity.HIGH,
    "unmanaged_login": Severity.HIGH,
    "credential_scan_failed": Severity.MEDIUM,
    "deny_rate_spike": Severity.HIGH,
    "error_rate_spike": Severity.HIGH,
    "monitor_events_dropped": Severity.HIGH,
}

#: Refusals that mean the checkpoint itself failed (not that the caller was refused).
ERROR_REFUSALS = frozenset({"engine_error", "policy_unusable", "store_unavailable"})
#: An agent's (or its instance's) SPIFFE ID: the agent's name.
_AGENT_ID = re.compile(r"spiffe://[^/]+/agent/([^/]+)(?:/i/[^/]+)?")
#: Why a token of a registered agent may be refused: it aged out, or it was meant for another
#: audience of this server (a token Tether signed: its subject is known, not an intruder).
_ROUTINE_CAUSES = frozenset({"expired", "not_yet_valid", "wrong_audience"})


def finding(kind: str, key: str, summary: str, **extra: Any) -> Finding:
    """A finding of ``kind`` at its usual severity; ``agent`` and ``details`` as keywords."""
    return Finding(kind=kind, severity=KINDS[kind], key=key, summary=summary, **extra)


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    """When the windowed detectors speak (``TETHER_MONITOR_*`` settings)."""

    #: ``denied_burst``: this many denials of one agent within ``burst_window`` seconds.
    burst_limit: int = 20
    burst_window: float = 60.0
    #: The rate spikes look at the last ``spike_window`` seconds, once they hold at least
    #: ``spike_min_decisions`` decisions.
    spike_window: float = 60.0
    spike_min_decisions: int = 50
    #: ``deny_rate_spike``: denials at least this share of the decisions, and at least
    #: ``deny_rate_factor`` times the share of the windows before (the baseline).
    deny_rate: float = 0.5
    deny_rate_factor: float = 3.0
    #: ``error_rate_spike``: decisions the checkpoint failed (engine, audit, policy) at least
    #: this share.
    error_rate: float = 0.05
    #: ``reaper_lag``: a lease still live this many seconds past its expiry.
    reaper_lag: float = 60.0


class Detector(Protocol):
    async def observe(self, event: Event) -> list[Finding]: ...

    def tick(self, now: float) -> list[Finding]: ...


class _ByEvent:
    def tick(self, now: float) -> list[Finding]:
        return []


def _text(value: object) -> str:
    return "" if value is None else str(value)


class EventRules(_ByEvent):
    """Events that are findings by themselves: what the audit log, the lease reaper, the
    credential scan, the MCP gateway and the maintenance loops report."""

    async def observe(self, event: Event) -> list[Finding]:
        rule = _EVENT_RULES.get(event.type)
        return [] if rule is None else [rule(event.data)]


def _impersonation(d: Mapping[str, Any]) -> Finding:
    user = _text(d.get("presented") or d.get("subject")) or "unknown user"
    where = _text(d.get("enforcement_point"))
    return finding("impersonation", user, f"user {user}'s own token presented as an agent "
                   f"at {where}", details=dict(d))  # fmt: skip


def _lease(kind: str, words: str) -> Callable[[Mapping[str, Any]], Finding]:
    def rule(d: Mapping[str, Any]) -> Finding:
        lease = _text(d.get("id") or d.get("lease_id"))
        summary = f"lease {lease} of {_text(d.get('agent'))}: {words} ({_text(d.get('error'))})"
        return finding(kind, lease, summary, agent=d.get("agent"), details=dict(d))

    return rule


def _engine(kind: str, words: str) -> Callable[[Mapping[str, Any]], Finding]:
    def rule(d: Mapping[str, Any]) -> Finding:
        engine = _text(d.get("engine"))
        return finding(kind, engine, f"engine {engine}: {words} ({_text(d.get('error'))})",
                       details=dict(d))  # fmt: skip

    return rule


def _unmanaged(d: Mapping[str, Any]) -> Finding:
    engine, login = _text(d.get("engine")), _text(d.get("login"))
    summary = f"login {login!r} in the database of engine {engine} was not made by Tether"
    return finding("unmanaged_login", f"{engine}/{login}", summary, details=dict(d))


def _audit(kind: str, words: str) -> Callable[[Mapping[str, Any]], Finding]:
    def rule(d: Mapping[str, Any]) -> Finding:
        log = _text(d.get("log"))
        details = _text(d.get("error") or d.get("witness"))
        return finding(kind, log, f"audit log {log}: {words} {details}".strip(), details=dict(d))

    return rule


def _policy_store(d: Mapping[str, Any]) -> Finding:
    summary = f"the policy store cannot be read: {_text(d.get('error'))}"
    return finding("policy_store_failed", "refresh", summary, details=dict(d))


def _tool(d: Mapping[str, Any]) -> Finding:
    kind = "tool_definition_changed" if d.get("kind") == "tool_definition_changed" else "tool_held"
    tool = f"{_text(d.get('server'))}/{_text(d.get('tool'))}"
    words = "changed since it was approved" if kind != "tool_held" else "waits for approval"
    return finding(kind, tool, f"MCP tool {tool} {words}: held back", details=dict(d))


_EVENT_RULES: dict[str, Callable[[Mapping[str, Any]], Finding]] = {
    "impersonation": _impersonation,
    "lease.revocation_failed": _lease("lease_revocation_failed", "revocation failed"),
    "lease.irrevocable": _lease("lease_irrevocable", "cannot be revoked, gave up retrying"),
    "lease.sweep_failed": _engine("lease_sweep_failed", "orphan sweep failed"),
    "credential.scan_failed": _engine("credential_scan_failed", "login scan failed"),
    "credential.unmanaged_login": _unmanaged,
    "audit.sink_failed": _audit("audit_sink_failed", "records cannot be made durable:"),
    "audit.witness_failed": _audit("audit_witness_failed", "a witness did not countersign:"),
    "audit.log_invalid": _audit("audit_log_invalid", "does not verify"),
    "policy.refresh_failed": _policy_store,
    "alert": _tool,
}


class DecisionRules(_ByEvent):
    """Decisions that are findings by themselves, told by the refusal the checkpoint names."""

    async def observe(self, event: Event) -> list[Finding]:
        if event.type != "decision":
            return []
        d = event.data
        found = []
        refusal = d.get("refusal")
        if refusal is not None:
            rule = _REFUSALS.get(str(refusal))
            made = rule(d) if rule is not None else None
            found += [made] if made is not None else []
        if d.get("audit_failed"):
            point = _text(d.get("enforcement_point"))
            found.append(finding("audit_sink_failed", "decisions",
                                 f"a decision at {point} could not be recorded: denied",
                                 details={"decision_id": d.get("decision_id")}))  # fmt: skip
        return found


def _caller(d: Mapping[str, Any]) -> dict[str, Any]:
    keep = ("presented", "enforcement_point", "refusal", "refusal_cause", "action", "resource")
    return {k: d.get(k) for k in keep}


def _unknown(d: Mapping[str, Any]) -> Finding | None:
    if d.get("refusal_cause") in _ROUTINE_CAUSES:
        return None
    who = _text(d.get("presented")) or "unreadable"
    summary = f"an unregistered caller ({who}) at {_text(d.get('enforcement_point'))}"
    return finding("unknown_caller", who, summary, details=_caller(d))


def _revoked(d: Mapping[str, Any]) -> Finding:
    who = _text(d.get("presented")) or "unreadable"
    summary = f"a revoked token of {who} was used at {_text(d.get('enforcement_point'))}"
    # A token is found revoked only once its signature verified: its subject is genuine.
    agent = _AGENT_ID.fullmatch(who)
    return finding("revoked_credential_used", who, summary, details=_caller(d),
                   agent=agent.group(1) if agent else None)  # fmt: skip


def _deep(d: Mapping[str, Any]) -> Finding:
    agent = _text(d.get("agent"))
    summary = f"agent {agent} presented a delegation chain deeper than allowed"
    return finding("chain_too_deep", agent, summary, agent=agent or None, details=_caller(d))


def _unusable(d: Mapping[str, Any]) -> Finding:
    summary = "the active policy set cannot be compiled here: every call is denied"
    return finding("policy_store_failed", "compile", summary, details=_caller(d))


_REFUSALS: dict[str, Callable[[Mapping[str, Any]], Finding | None]] = {
    "unknown_agent": _unknown,
    "invalid_token": _unknown,
    "revoked": _revoked,
    "chain_too_deep": _deep,
    "policy_unusable": _unusable,
}


class OutOfDeclaration(_ByEvent):
    """A call of a tool or resource the agent did not declare at registration (read as the
    posture reads declarations: :func:`~tether.monitor.least_privilege.covers`). Refusals
    before any policy ran are not uses. One alert per agent, not per resource: an agent
    sweeping a thousand undeclared resources is one incident (the monitor keeps the first
    resources seen in the alert's ``resources``), not a thousand alerts."""

    def __init__(self, declarations: Callable[[str], Awaitable[Declarations | None]]) -> None:
        self._declarations = declarations

    async def observe(self, event: Event) -> list[Finding]:
        d = event.data
        agent, resource = d.get("agent"), d.get("resource")
        if event.type != "decision" or not agent or not resource or d.get("refusal"):
            return []
        declared = await self._declarations(str(agent))
        if declared is None or covers(declared, str(resource)):
            return []
        action = _text(d.get("action"))
        summary = f"agent {agent} used {resource} ({action}), which it did not declare"
        details = {"action": action, "resource": resource, "effect": d.get("effect")}
        return [finding("out_of_declaration", str(agent), summary, agent=agent,
                        details=details)]  # fmt: skip

"""Posture: the standing state of the fleet, and every problem in it named by a stable kind.

Detectors (:mod:`tether.monitor.models`) say what *happened*; posture says what *is*: which
agents exist and in which state, who answers for them, which callers were seen that nobody
registered, which privileges stand (leases past their role's max TTL, grants longer than the
grant maximum, database logins Tether did not create), which agents were seen presenting a
person's own credentials, what agents may do or declared but did not use (with the narrower
policy, :mod:`tether.monitor.least_privilege`), and where secrets are kept.

Every problem is a :class:`Problem` with a ``kind`` and a ``subject``, listed once in
:attr:`PostureReport.problems`, sorted — so ``tether posture --output json`` on the same
state prints the same problems, and a test can compare the set exactly. The kinds::

    agent_without_owner     every owner of the agent is a disabled user (or it has none)
    unregistered_caller     a token was refused for an identity not in the registry
    lease_beyond_max_ttl    a live lease outlives its role's max TTL (or failed to end)
    grant_beyond_max_ttl    a grant in force lasts longer than the grant maximum
    unmanaged_login         a login in a managed database that Tether did not create
    engine_scan_failed      a managed system could not be scanned for such logins
    user_credential_used    a person's own token was presented where an agent acts
    unused_declaration      a declared tool or resource not used in the window
    unused_permission       an action the policy allows the agent, not used in the window

Grants always carry an expiry (the model has no grant without one), so the standing grant is
one whose lifetime exceeds ``grant_max_ttl``: given before the maximum was lowered, or
written around the API. This module is pure: inputs are values, ``now`` is injected.

Example::

    >>> from datetime import UTC, datetime
    >>> inputs = PostureInputs(agents=[], scan_failures=[("pg-main", "engine_unavailable")])
    >>> report = assess(inputs, now=datetime(2026, 1, 31, tzinfo=UTC), days=30)
    >>> [(p.kind, p.subject) for p in report.problems]
    [('engine_scan_failed', 'pg-main')]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import datetime, timedelta
from enum import Enum
from types import MappingProxyType
from typing import Any

from tether.identity.models import Agent, AgentState, RiskTier
from tether.monitor.least_privilege import Capability, Recommendation, recommend
from tether.monitor.models import Alert, Usage

__all__ = [
    "AgentAccess",
    "GrantFacts",
    "LeaseFacts",
    "LoginFacts",
    "PostureInputs",
    "PostureReport",
    "Problem",
    "SecretSource",
    "assess",
]

#: A live lease may stay this long past its max expiry (the reaper's round) before it counts.
LEASE_GRACE = timedelta(seconds=60)
#: Rounding between a lease's times and its role's TTL.
_SLACK = timedelta(seconds=1)


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


# -- inputs ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class LeaseFacts:
    """A live lease, with its role template's max TTL (None: the role is gone)."""

    id: str
    engine: str
    role: str
    agent: str
    state: str
    created_at: datetime
    expires_at: datetime
    max_expires_at: datetime
    role_max_ttl: int | None


@dataclass(frozen=True, kw_only=True)
class GrantFacts:
    """A grant in force."""

    id: str
    user: str
    agent: str
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True, kw_only=True)
class LoginFacts:
    """A login found in a managed system (``source``: ``scan`` now, or ``alert`` when the
    system could not be scanned and an open alert says what was found before)."""

    engine: str
    login: str
    source: str = "scan"
    details: Mapping[str, Any] = field(default_factory=_empty)


@dataclass(frozen=True, kw_only=True)
class SecretSource:
    """A configured engine: where it keeps or makes credentials (never a secret)."""

    engine: str
    kind: str
    location: Mapping[str, Any]
    roles: tuple[str, ...]
    secret_set: bool
    #: How many secrets a vault engine holds (None for other kinds, or when unreadable).
    secrets: int | None = None


@dataclass(frozen=True, kw_only=True)
class AgentAccess:
    """What the policy in force allows an active agent, of the candidate pairs evaluated."""

    agent: str
    allowed: tuple[Capability, ...]


@dataclass(frozen=True, kw_only=True)
class PostureInputs:
    agents: Sequence[Agent]
    #: Known people by name and by e-mail: whether each is active.
    people: Mapping[str, bool] = field(default_factory=_empty)
    leases: Sequence[LeaseFacts] = ()
    grants: Sequence[GrantFacts] = ()
    grant_max_ttl: int = 30 * 24 * 3600
    logins: Sequence[LoginFacts] = ()
    #: Engines that could not be scanned, with the error code.
    scan_failures: Sequence[tuple[str, str]] = ()
    #: ``unknown_caller`` and ``impersonation`` alerts seen in the window.
    alerts: Sequence[Alert] = ()
    access: Sequence[AgentAccess] = ()
    usage: Sequence[Usage] = ()
    sources: Sequence[SecretSource] = ()
    policy_version: int | None = None
    #: False when the policy set in force could not be evaluated (nothing is "allowed").
    policy_evaluated: bool = True


# -- the report ---------------------------------------------------------------------------


@dataclass(frozen=True, order=True, slots=True)
class Problem:
    kind: str
    subject: str
    agent: str | None
    summary: str


@dataclass(frozen=True, kw_only=True)
class Ownerless:
    agent: str
    owners: tuple[str, ...]
    reason: str
    kind: str = "agent_without_owner"


@dataclass(frozen=True, kw_only=True)
class Sighting:
    """Alerts of one kind about one key, folded: how often, when, where, by whom."""

    key: str
    count: int
    first_seen: datetime
    last_seen: datetime
    enforcement_points: tuple[str, ...]
    agents: tuple[str, ...]
    kind: str


@dataclass(frozen=True, kw_only=True)
class StandingLease:
    lease: LeaseFacts
    reason: str
    kind: str = "lease_beyond_max_ttl"


@dataclass(frozen=True, kw_only=True)
class StandingGrant:
    grant: GrantFacts
    lifetime_seconds: int
    max_ttl_seconds: int
    kind: str = "grant_beyond_max_ttl"


@dataclass(frozen=True, kw_only=True)
class PostureReport:
    generated_at: datetime
    days: int
    since: datetime
    agents: Mapping[str, Any]
    ownerless_agents: tuple[Ownerless, ...]
    unregistered_callers: tuple[Sighting, ...]
    standing_leases: tuple[StandingLease, ...]
    standing_grants: tuple[StandingGrant, ...]
    unmanaged_logins: tuple[LoginFacts, ...]
    scan_failures: tuple[tuple[str, str], ...]
    user_credentials: tuple[Sighting, ...]
    least_privilege: tuple[Recommendation, ...]
    secret_sources: tuple[SecretSource, ...]
    policy_version: int | None
    policy_evaluated: bool

    @property
    def problems(self) -> tuple[Problem, ...]:
        """Every problem of the report's sections, once each, sorted."""
        return tuple(sorted(problems_of(self)))

    def to_json(self) -> dict[str, Any]:
        """The report as JSON values, in a stable order (the API's and the CLI's shape)."""
        return {
            "generated_at": _plain(self.generated_at),
            "days": self.days,
            "since": _plain(self.since),
            "agents": _plain(self.agents),
            "ownerless_agents": _plain(self.ownerless_agents),
            "unregistered_callers": _plain(self.unregistered_callers),
            "standing_privileges": {
                "leases": [_flat(s, "lease") for s in self.standing_leases],
                "grants": [_flat(s, "grant") for s in self.standing_grants],
                "logins": [{"kind": "unmanaged_login", **_plain(x)} for x in self.unmanaged_logins],
                "scan_failures": [
                    {"kind": "engine_scan_failed", "engine": e, "error": c}
                    for e, c in self.scan_failures
                ],
            },
            "user_credentials": _plain(self.user_credentials),
            "unused_permissions": [_recommendation(r) for r in self.least_privilege],
            "secret_sources": _plain(self.secret_sources),
            "policy": {"version": self.policy_version, "evaluated": self.policy_evaluated},
            "problems": _plain(self.problems),
        }


def _plain(value: Any) -> Any:
    """Dataclasses, mappings, sequences, datetimes and enums as JSON values."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _flat(item: StandingLease | StandingGrant, inner: str) -> dict[str, Any]:
    """A standing privilege with its lease's or grant's facts at the top level."""
    data: dict[str, Any] = _plain(item)
    facts = data.pop(inner)
    return {**{f"{inner}_id" if k == "id" else k: v for k, v in facts.items()}, **data}


def _recommendation(r: Recommendation) -> dict[str, Any]:
    return {
        "agent": r.agent,
        "used": _plain(r.used),
        "unused_declarations": [
            {"kind": "unused_declaration", **_plain(d)} for d in r.unused_declarations
        ],
        "unused_permissions": [
            {"kind": "unused_permission", **_plain(p)} for p in r.unused_permissions
        ],
        "suggested_policy": r.policy,
    }


# -- assessing ----------------------------------------------------------------------------


def agent_counts(agents: Iterable[Agent]) -> dict[str, Any]:
    """How many agents are in each state and each risk tier (every state and tier named)."""
    listed = list(agents)
    by_state = {str(s): 0 for s in AgentState}
    by_tier = {str(t): 0 for t in RiskTier}
    for agent in listed:
        by_state[str(agent.state)] += 1
        by_tier[str(agent.risk_tier)] += 1
    return {"total": len(listed), "by_state": by_state, "by_tier": by_tier}


def ownerless(agents: Iterable[Agent], people: Mapping[str, bool]) -> list[Ownerless]:
    """Agents not retired whose every owner is a known, disabled person (an owner Tether
    does not know cannot be judged, and counts as present)."""
    found = []
    for agent in agents:
        if agent.state is AgentState.RETIRED:
            continue
        if not agent.owners:
            found.append(Ownerless(agent=agent.name, owners=(), reason="no_owners"))
        elif all(people.get(owner) is False for owner in agent.owners):
            found.append(Ownerless(agent=agent.name, owners=agent.owners, reason="owners_disabled"))
    return found


def _registered(key: str, agents: Sequence[Agent]) -> bool:
    return any(key in (a.name, a.spiffe_id) or key.startswith(a.spiffe_id + "/i/") for a in agents)


def sightings(alerts: Iterable[Alert], kind: str, *, as_kind: str) -> list[Sighting]:
    """The ``kind`` alerts folded per key, by key."""
    grouped: dict[str, list[Alert]] = {}
    for alert in alerts:
        if alert.kind == kind:
            grouped.setdefault(alert.key, []).append(alert)
    return [
        Sighting(
            key=key,
            count=sum(a.count for a in group),
            first_seen=min(a.first_seen for a in group),
            last_seen=max(a.last_seen for a in group),
            enforcement_points=_texts(a.details.get("enforcement_point") for a in group),
            agents=_texts(a.agent for a in group),
            kind=as_kind,
        )
        for key, group in sorted(grouped.items())
    ]


def _texts(values: Iterable[object]) -> tuple[str, ...]:
    return tuple(sorted({v for v in values if isinstance(v, str) and v}))


def standing_lease(lease: LeaseFacts, *, now: datetime, grace: timedelta) -> str | None:
    """Why a live lease is a standing privilege, or None."""
    if lease.state == "irrevocable":
        return "irrevocable"
    if now > lease.max_expires_at + grace:
        return "live_past_max_expiry"
    if lease.expires_at > lease.max_expires_at + _SLACK:
        return "expiry_past_max"
    limit = lease.role_max_ttl
    if (
        limit is not None
        and lease.max_expires_at - lease.created_at > timedelta(seconds=limit) + _SLACK
    ):
        return "longer_than_role_max_ttl"
    return None


def standing_grant(grant: GrantFacts, *, max_ttl: int) -> StandingGrant | None:
    lifetime = int((grant.expires_at - grant.created_at).total_seconds())
    if lifetime <= max_ttl + _SLACK.total_seconds():
        return None
    return StandingGrant(grant=grant, lifetime_seconds=lifetime, max_ttl_seconds=max_ttl)


def assess(
    inputs: PostureInputs, *, now: datetime, days: int, grace: timedelta = LEASE_GRACE
) -> PostureReport:
    """The posture of ``inputs`` at ``now``, unused permissions over the last ``days``."""
    since = now - timedelta(days=days)
    agents = sorted(inputs.agents, key=lambda a: a.name)
    callers = [
        s
        for s in sightings(inputs.alerts, "unknown_caller", as_kind="unregistered_caller")
        if not _registered(s.key, agents)
    ]
    leases = []
    for lease in sorted(inputs.leases, key=lambda x: x.id):
        reason = standing_lease(lease, now=now, grace=grace)
        if reason is not None:
            leases.append(StandingLease(lease=lease, reason=reason))
    grants = [
        g
        for g in (standing_grant(x, max_ttl=inputs.grant_max_ttl) for x in inputs.grants)
        if g is not None
    ]
    allowed = {a.agent: a.allowed for a in inputs.access}
    advice = [
        recommend(
            agent=a, allowed=allowed.get(a.name, ()), usage=inputs.usage, since=since, days=days
        )
        for a in agents
        if a.state is AgentState.ACTIVE
    ]
    return PostureReport(
        generated_at=now,
        days=days,
        since=since,
        agents=agent_counts(agents),
        ownerless_agents=tuple(ownerless(agents, inputs.people)),
        unregistered_callers=tuple(callers),
        standing_leases=tuple(leases),
        standing_grants=tuple(sorted(grants, key=lambda g: g.grant.id)),
        unmanaged_logins=tuple(sorted(inputs.logins, key=lambda x: (x.engine, x.login))),
        scan_failures=tuple(sorted(inputs.scan_failures)),
        user_credentials=tuple(
            sightings(inputs.alerts, "impersonation", as_kind="user_credential_used")
        ),
        least_privilege=tuple(advice),
        secret_sources=tuple(sorted(inputs.sources, key=lambda s: s.engine)),
        policy_version=inputs.policy_version,
        policy_evaluated=inputs.policy_evaluated,
    )


def problems_of(report: PostureReport) -> list[Problem]:
    """Every problem of the report's sections, once each."""
    return [*_fleet_problems(report), *_standing_problems(report), *_unused_problems(report)]


def _fleet_problems(report: PostureReport) -> list[Problem]:
    """Who is there: agents nobody answers for, callers nobody registered, people's tokens."""
    found = [
        Problem("agent_without_owner", o.agent, o.agent,
                f"no active owner ({o.reason}): {', '.join(o.owners) or 'none listed'}")
        for o in report.ownerless_agents
    ]  # fmt: skip
    found += [
        Problem("unregistered_caller", s.key, None, f"refused {s.count} time(s), not registered")
        for s in report.unregistered_callers
    ]
    found += [
        Problem("user_credential_used", s.key, s.agents[0] if len(s.agents) == 1 else None,
                f"{s.key}'s own token presented {s.count} time(s) where an agent acts")
        for s in report.user_credentials
    ]  # fmt: skip
    return found


def _standing_problems(report: PostureReport) -> list[Problem]:
    found = [
        Problem("lease_beyond_max_ttl", s.lease.id, s.lease.agent,
                f"{s.lease.engine}/{s.lease.role} lease: {s.reason}")
        for s in report.standing_leases
    ]  # fmt: skip
    found += [
        Problem("grant_beyond_max_ttl", s.grant.id, s.grant.agent,
                f"grant of {s.grant.user} lasts {s.lifetime_seconds} s > {s.max_ttl_seconds} s")
        for s in report.standing_grants
    ]  # fmt: skip
    found += [
        Problem("unmanaged_login", f"{x.engine}/{x.login}", None,
                f"login {x.login} in {x.engine} was not created by Tether")
        for x in report.unmanaged_logins
    ]  # fmt: skip
    found += [
        Problem("engine_scan_failed", e, None, f"{e} could not be scanned: {c}")
        for e, c in report.scan_failures
    ]
    return found


def _unused_problems(report: PostureReport) -> list[Problem]:
    found: list[Problem] = []
    for r in report.least_privilege:
        found += [
            Problem("unused_declaration", f"{r.agent}: {d.field} {d.entry}", r.agent,
                    f"declared {d.field[:-1]} {d.entry} not used in {report.days} days")
            for d in r.unused_declarations
        ]  # fmt: skip
        found += [
            Problem("unused_permission", f"{r.agent}: {p.action} {p.resource}", r.agent,
                    f"allowed {p.action} on {p.resource}, not used in {report.days} days")
            for p in r.unused_permissions
        ]  # fmt: skip
    return found

"""Risk assessment: turn an agent's declarations into a score (0–100), a tier and the factors.

The model (``tether-risk-v1``) adds points for what could go wrong, in the terms of the seeds'
four gaps: how sensitive the data it touches is, how far it can reach (internet, other agents),
how freely it acts (autonomy), how broad and how destructive its declared access is, and the
combinations that make exfiltration possible (sensitive data together with an outbound path).
It is deliberately simple and explainable: every point comes with a factor a reviewer can read.

Tiers: 0–24 low, 25–49 medium, 50–74 high, 75–100 critical. A critical agent starts in
``pending_review`` until a security admin approves it.

Example::

    >>> from tether.identity.models import Declarations, DataClass, Connectivity, Autonomy
    >>> score, tier, factors = score_declarations(Declarations(
    ...     tools=("search_faq",), data_classes=(DataClass.PUBLIC,)))
    >>> (score, str(tier))
    (10, 'low')
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from tether._internal.ids import new_id
from tether.identity.models import (
    Autonomy,
    Connectivity,
    DataClass,
    Declarations,
    RiskAssessment,
    RiskFactor,
    RiskTier,
)

__all__ = ["MODEL", "assess", "score_declarations", "tier_for"]

MODEL = "tether-risk-v1"

_DATA_POINTS = {
    DataClass.PUBLIC: 0,
    DataClass.INTERNAL: 10,
    DataClass.CONFIDENTIAL: 25,
    DataClass.RESTRICTED: 40,
}
_REACH_POINTS = {Connectivity.NONE: 0, Connectivity.INTERNAL: 5, Connectivity.INTERNET: 20}
_AUTONOMY_POINTS = {
    Autonomy.HUMAN_IN_THE_LOOP: 0,
    Autonomy.SUPERVISED: 10,
    Autonomy.AUTONOMOUS: 25,
}
_PRIVILEGED = re.compile(
    r"(delete|drop|truncate|write|update|insert|transfer|pay|refund|exec|shell|admin|grant|"
    r"deploy|send|email)",
    re.IGNORECASE,
)
_SENSITIVE = {DataClass.CONFIDENTIAL, DataClass.RESTRICTED}


def tier_for(score: int) -> RiskTier:
    if score >= 75:
        return RiskTier.CRITICAL
    if score >= 50:
        return RiskTier.HIGH
    if score >= 25:
        return RiskTier.MEDIUM
    return RiskTier.LOW


def _factors(d: Declarations) -> list[RiskFactor]:
    top = max(d.data_classes, key=lambda c: _DATA_POINTS[c], default=DataClass.PUBLIC)
    out = [
        RiskFactor(code="data_class", points=_DATA_POINTS[top], detail=f"handles {top} data"),
        RiskFactor(
            code="external_connections",
            points=_REACH_POINTS[d.external_connections],
            detail=f"external connections: {d.external_connections}",
        ),
        RiskFactor(
            code="autonomy", points=_AUTONOMY_POINTS[d.autonomy], detail=f"autonomy: {d.autonomy}"
        ),
    ]
    if d.may_call_agents:
        out.append(RiskFactor(code="calls_agents", points=15, detail="may call other agents"))
    breadth = len(d.tools) + len(d.resources)
    if breadth > 5:
        points = 10 if breadth > 20 else 5
        out.append(
            RiskFactor(code="breadth", points=points, detail=f"{breadth} tools and resources")
        )
    privileged = sorted(t for t in d.tools if _PRIVILEGED.search(t))
    if privileged:
        shown = ", ".join(privileged[:5])
        out.append(
            RiskFactor(code="privileged_tools", points=10, detail=f"state-changing tools: {shown}")
        )
    if any("*" in r for r in (*d.tools, *d.resources)):
        out.append(RiskFactor(code="wildcard_access", points=15, detail="wildcard tool/resource"))
    if _SENSITIVE & set(d.data_classes) and d.external_connections is Connectivity.INTERNET:
        out.append(
            RiskFactor(
                code="exfiltration_path",
                points=10,
                detail="sensitive data together with an internet connection",
            )
        )
    return [f for f in out if f.points > 0]


def score_declarations(d: Declarations) -> tuple[int, RiskTier, tuple[RiskFactor, ...]]:
    factors = tuple(_factors(d))
    score = min(100, sum(f.points for f in factors))
    return score, tier_for(score), factors


#: Points for each tool or resource the agent was seen using without declaring it, and the most
#: such use adds: an agent that does more than it said is riskier than its words.
_UNDECLARED_POINTS, _UNDECLARED_MAX = 10, 30


def assess(
    d: Declarations,
    *,
    agent_id: str,
    at: datetime,
    assessed_by: str,
    undeclared: Sequence[str] = (),
) -> RiskAssessment:
    """The assessment of ``d``; ``undeclared``: what the agent was *seen* using beyond its
    declarations (the monitor's out-of-declaration detector re-assesses with it)."""
    score, tier, factors = score_declarations(d)
    if undeclared:
        seen = sorted(set(undeclared))
        points = min(_UNDECLARED_MAX, _UNDECLARED_POINTS * len(seen))
        shown = ", ".join(seen[:5])
        factor = RiskFactor(code="undeclared_use", points=points, detail=f"seen using {shown}")
        factors = (*factors, factor)
        score = min(100, score + points)
        tier = tier_for(score)
    return RiskAssessment(
        id=new_id("ras"),
        agent_id=agent_id,
        score=score,
        tier=tier,
        factors=factors,
        model=MODEL,
        assessed_at=at,
        assessed_by=assessed_by,
        declarations=d,
    )

"""The risk model: every point is explained by a factor, tiers follow the documented cut-offs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.identity.models import Autonomy, Connectivity, DataClass, Declarations, RiskTier
from tether.identity.risk import MODEL, assess, score_declarations, tier_for

declarations = st.builds(
    Declarations,
    tools=st.lists(st.sampled_from(["search", "delete_row", "transfer", "read", "x*"])).map(tuple),
    resources=st.lists(st.sampled_from(["db:faq", "api:*", "s3:bucket"])).map(tuple),
    data_classes=st.lists(st.sampled_from(list(DataClass)), min_size=1).map(tuple),
    external_connections=st.sampled_from(list(Connectivity)),
    autonomy=st.sampled_from(list(Autonomy)),
    may_call_agents=st.booleans(),
)


@given(declarations)
def test_score_is_bounded_and_explained_by_its_factors(d: Declarations) -> None:
    score, tier, factors = score_declarations(d)
    assert 0 <= score <= 100
    assert score == min(100, sum(f.points for f in factors))
    assert tier is tier_for(score)
    assert all(f.points > 0 and f.detail for f in factors)


@pytest.mark.parametrize(
    ("score", "tier"),
    [
        (0, RiskTier.LOW),
        (24, RiskTier.LOW),
        (25, RiskTier.MEDIUM),
        (49, RiskTier.MEDIUM),
        (50, RiskTier.HIGH),
        (74, RiskTier.HIGH),
        (75, RiskTier.CRITICAL),
        (100, RiskTier.CRITICAL),
    ],
)
def test_tier_cut_offs(score: int, tier: RiskTier) -> None:
    assert tier_for(score) is tier


def test_read_only_faq_agent_is_low_risk() -> None:
    score, tier, _ = score_declarations(
        Declarations(tools=("search_faq",), resources=("postgres:faq",))
    )
    assert (score, tier) == (10, RiskTier.LOW)


def test_autonomous_agent_with_restricted_data_and_internet_is_critical() -> None:
    d = Declarations(
        tools=("transfer_funds",),
        data_classes=(DataClass.RESTRICTED,),
        external_connections=Connectivity.INTERNET,
        autonomy=Autonomy.AUTONOMOUS,
        may_call_agents=True,
    )
    _score, tier, factors = score_declarations(d)
    assert tier is RiskTier.CRITICAL
    codes = {f.code for f in factors}
    assert {"exfiltration_path", "privileged_tools", "calls_agents"} <= codes


def test_wider_declarations_never_lower_the_score() -> None:
    narrow = Declarations(tools=("read",))
    wide = Declarations(tools=("read", "delete_all"), external_connections=Connectivity.INTERNET)
    assert score_declarations(wide)[0] > score_declarations(narrow)[0]


def test_assessment_records_model_inputs_and_author() -> None:
    at = datetime(2026, 5, 1, tzinfo=UTC)
    d = Declarations(tools=("a",))
    a = assess(d, agent_id="agt_1", at=at, assessed_by="operator:alice")
    assert (a.model, a.agent_id, a.assessed_at, a.assessed_by, a.declarations) == (
        MODEL,
        "agt_1",
        at,
        "operator:alice",
        d,
    )

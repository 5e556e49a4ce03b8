"""The engine's binding call agrees with Cedar on 5,000 requests of Cedar's own corpus.

Through :func:`tether.policy._cedar.conformance_evaluate` (the same ``_authorize`` call that
:meth:`CedarEngine.decide` makes): Cedar's decision, determining policies and erroring
policies must be exactly what upstream recorded, and Tether's derived decision must allow only
where Cedar allows without errors.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tether.policy._cedar import conformance_evaluate
from tether.policy.models import Effect

SAMPLE = Path(__file__).parents[2] / "vectors" / "cedar" / "corpus-sample.jsonl.gz"
_POLICY_IN_ERROR = re.compile(r"policy `([^`]+)`")


def _bundles() -> list[dict[str, Any]]:
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


BUNDLES = _bundles()


def test_the_sample_holds_5000_requests() -> None:
    assert sum(len(b["requests"]) for b in BUNDLES) == 5000


@pytest.mark.parametrize("bundle", BUNDLES, ids=[b["name"][:12] for b in BUNDLES])
def test_engine_agrees_with_cedar_on_the_corpus(bundle: dict[str, Any]) -> None:
    for case in bundle["requests"]:
        request = {k: case[k] for k in ("principal", "action", "resource", "context")}
        outcome, decision = conformance_evaluate(
            policies=bundle["policies"],
            schema=bundle["schema"],
            entities=bundle["entities"],
            request=request,
        )
        where = f"{bundle['name']}: {case['description']}"
        assert outcome.decision == case["decision"], where
        assert sorted(outcome.reasons) == sorted(case["reason"]), where
        erroring = sorted({m for e in outcome.errors for m in _POLICY_IN_ERROR.findall(e)})
        assert erroring == sorted(case["errors"]), where
        expected_allow = case["decision"] == "allow" and not case["errors"]
        assert (decision.effect is Effect.ALLOW) == expected_allow, where

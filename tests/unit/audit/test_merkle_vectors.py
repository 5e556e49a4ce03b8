"""The Merkle verifier against the public RFC 6962 vectors of transparency-dev/merkle (196)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tether.audit.merkle import ProofInvalid, verify_consistency, verify_inclusion

VECTORS = Path(__file__).parents[2] / "vectors" / "merkle" / "testdata"


def _cases(kind: str) -> list[Any]:
    files = sorted((VECTORS / kind).rglob("*.json"))
    return [pytest.param(json.loads(f.read_text()), id=str(f.relative_to(VECTORS))) for f in files]


def _bytes(value: str | None) -> bytes:
    return base64.b64decode(value) if value else b""


def test_every_vector_is_here() -> None:
    assert (len(_cases("inclusion")), len(_cases("consistency"))) == (98, 98)


@pytest.mark.parametrize("case", _cases("inclusion"))
def test_inclusion_vector(case: dict[str, Any]) -> None:
    def check() -> None:
        verify_inclusion(
            _bytes(case["leafHash"]),
            index=case["leafIdx"],
            size=case["treeSize"],
            proof=[_bytes(p) for p in case["proof"] or []],
            root=_bytes(case["root"]),
        )

    if case["wantErr"]:
        with pytest.raises(ProofInvalid):
            check()
    else:
        check()


@pytest.mark.parametrize("case", _cases("consistency"))
def test_consistency_vector(case: dict[str, Any]) -> None:
    def check() -> None:
        verify_consistency(
            case["size1"],
            case["size2"],
            _bytes(case["root1"]),
            _bytes(case["root2"]),
            [_bytes(p) for p in case["proof"] or []],
        )

    if case["wantErr"]:
        with pytest.raises(ProofInvalid):
            check()
    else:
        check()

"""The offline verifier needs nothing but the standard library: a third party checks a proof
bundle with five files of Tether and no dependency (the live test runs them with no
site-packages; this one pins what each may import)."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

#: The modules a proof bundle is checked with, and the only Tether modules they may import.
OFFLINE = (
    "tether.audit.bundle",
    "tether.audit.chain",
    "tether.audit.ed25519",
    "tether.audit.merkle",
    "tether.audit.notes",
)


def _imports(name: str) -> set[str]:
    source = Path(importlib.import_module(name).__file__ or "").read_text(encoding="utf-8")
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            found.add(node.module or "")
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


@pytest.mark.parametrize("name", OFFLINE)
def test_an_offline_verifier_module_imports_only_the_standard_library(name: str) -> None:
    outside = {
        module
        for module in _imports(name)
        if module.split(".")[0] not in {*sys.stdlib_module_names, "__future__"}
        and module not in OFFLINE
    }
    assert outside == set()

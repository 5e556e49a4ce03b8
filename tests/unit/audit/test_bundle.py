"""Proof bundles: what proves, what does not, and the command-line verifier."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.audit import open_log
from tether._internal.clock import FixedClock
from tether.audit.bundle import BundleInvalid, main, verify_bundle
from tether.audit.reader import AuditRecordNotFound, prove
from tether.audit.records import AuditRecord
from tether.errors import AuditUnavailable
from tether.store.memory import MemoryStore

CLOCK = FixedClock()


def _bundle() -> tuple[dict[str, Any], str]:
    async def make() -> tuple[dict[str, Any], str]:
        store = MemoryStore(clock=CLOCK)
        log = await open_log(store, CLOCK)
        made = [
            AuditRecord.new(type="agent.registered", actor="op", subject=f"a{n}", time=CLOCK.now())
            for n in range(7)
        ]
        for record in made:
            await log.append(record)
        await log.close()
        return await prove(store, made[3].id, verifier_key=log.verifier_key), log.verifier_key

    return asyncio.run(make())


BUNDLE, KEY = _bundle()

Change = Callable[[dict[str, Any]], dict[str, Any]]


def test_a_bundle_proves_its_record() -> None:
    record = verify_bundle(BUNDLE, verifier_key=KEY)
    assert (record["type"], record["subject"]) == ("agent.registered", "a3")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda b: b | {"format": "tether-audit-proof/2"}, "not a tether-audit-proof/1"),
        (lambda b: b | {"entry": 7}, "are text"),
        (lambda b: b | {"index": "3"}, "whole numbers"),
        (lambda b: b | {"size": True}, "whole numbers"),
        (lambda b: b | {"proof": "AAAA"}, "a list"),
        (lambda b: b | {"proof": ["AAAA"] * 65}, "at most 64"),
        (lambda b: b | {"proof": ["not base64!"]}, "not base64"),
        (lambda b: b | {"proof": [1]}, "not text"),
        (lambda b: b | {"size": b["size"] + 1}, "another log or size"),
        (lambda b: b | {"log": "elsewhere/audit/r1"}, "another log or size"),
        (lambda b: b | {"verifier_key": "x+00000000+AQ=="}, "another verifier key"),
        (lambda b: b | {"checkpoint": b["checkpoint"].replace("—", "-")}, "checkpoint"),
        (lambda b: b | {"proof": b["proof"][:-1]}, "inclusion proof"),
    ],
    ids=[
        "format", "entry-type", "index-type", "size-bool", "proof-type", "proof-long",
        "proof-encoding", "proof-item-type", "size", "log", "key-hint", "note", "short-proof",
    ],
)  # fmt: skip
def test_a_bundle_that_does_not_hold_together_is_refused(change: Change, reason: str) -> None:
    with pytest.raises(BundleInvalid, match=reason):
        verify_bundle(change(dict(BUNDLE)), verifier_key=KEY)


def test_the_command_line_verifier_exits_0_1_or_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(BUNDLE))
    bad.write_text(json.dumps(BUNDLE | {"index": 4}))
    assert main([KEY, str(good)]) == 0
    assert json.loads(capsys.readouterr().out)["proven"] is True
    assert main([KEY, str(bad)]) == 1
    assert "not proven" in capsys.readouterr().err
    assert main([KEY, str(tmp_path / "missing.json")]) == 1
    assert main([KEY]) == 2


def test_prove_refuses_a_record_it_does_not_have_or_has_not_signed_yet() -> None:
    async def run() -> None:
        store = MemoryStore(clock=CLOCK)
        log = await open_log(store, CLOCK, checkpoint_seconds=60)
        with pytest.raises(AuditRecordNotFound):
            await prove(store, "rec_nothing", verifier_key=log.verifier_key)
        record = AuditRecord.new(
            type="agent.registered", actor="op", subject=None, time=CLOCK.now()
        )
        await log.append(record)
        with pytest.raises(AuditUnavailable, match="no signed checkpoint"):
            await prove(store, record.id, verifier_key=log.verifier_key)
        await log.close()  # signs
        assert (await prove(store, record.id, verifier_key=log.verifier_key))["size"] == 1

    asyncio.run(run())

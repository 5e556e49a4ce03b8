"""``tether audit`` against a real server, and the proof bundle checked with nothing installed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.support.audit import Chainer
from tether.audit import bundle as bundle_module
from tether.audit.records import AuditRecord
from tether.cli import exit_codes

from .conftest import Live
from .test_cli import tether

#: What the offline verifier may import besides the standard library.
STDLIB_ONLY = ("bundle.py", "chain.py", "merkle.py", "notes.py", "ed25519.py")


def _until_proven(live: Live, record_id: str, out: Path) -> None:
    """`prove` answers 7 (unavailable) until a checkpoint covers the record: ≤ 1 s."""
    deadline = time.monotonic() + 10
    while True:
        done = tether(live, "audit", "prove", record_id, "--out", str(out))
        if done.returncode == 0:
            return
        assert done.returncode == exit_codes.UNAVAILABLE, done.stderr
        assert time.monotonic() < deadline, "no checkpoint within 10 s"
        time.sleep(0.2)


def _first_record(live: Live) -> str:
    records = json.loads(tether(live, "audit", "query", "--output", "json").stdout)
    assert records, "the server records its own start (keys, root token)"
    record_id: str = records[0]["id"]
    return record_id


def _proven(live: Live, tmp_path: Path) -> tuple[Path, str]:
    """A proof bundle of the first record, written to a file, and the log's verifier key."""
    bundle = tmp_path / "bundle.json"
    _until_proven(live, _first_record(live), bundle)
    key: str = json.loads(tether(live, "audit", "key", "--output", "json").stdout)["verifier_key"]
    return bundle, key


def test_prove_then_verify_the_bundle_offline_and_refuse_an_edited_one(
    live: Live, tmp_path: Path
) -> None:
    bundle, key = _proven(live, tmp_path)
    proven = tether(live, "audit", "verify-bundle", str(bundle), "--key", key, token=None)
    assert proven.returncode == 0, proven.stderr
    edited = json.loads(bundle.read_text())
    edited["entry"] = edited["entry"].replace('"success"', '"failure"')
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(edited))
    refused = tether(live, "audit", "verify-bundle", str(forged), "--key", key, token=None)
    assert refused.returncode == exit_codes.NOT_PROVEN, refused.stdout
    assert "not proven" in refused.stderr


def test_the_bundle_verifier_runs_with_the_standard_library_alone(
    live: Live, tmp_path: Path
) -> None:
    bundle, key = _proven(live, tmp_path)
    # Five files copied next to each other: no Tether install, no site-packages (-S -s).
    package = tmp_path / "offline" / "tether" / "audit"
    package.mkdir(parents=True)
    (package.parent / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    source = Path(bundle_module.__file__).parent
    for name in STDLIB_ONLY:
        shutil.copy(source / name, package / name)
    code = (
        f"import sys; sys.path.insert(0, {str(package.parent.parent)!r}); "
        "from tether.audit.bundle import main; raise SystemExit(main(sys.argv[1:]))"
    )
    done = subprocess.run(
        [sys.executable, "-S", "-s", "-E", "-c", code, key, str(bundle)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["proven"] is True


def test_an_export_verifies_offline_against_its_checkpoint_and_a_flipped_byte_is_named(
    live: Live, tmp_path: Path
) -> None:
    _until_proven(live, _first_record(live), tmp_path / "ignored.json")
    key = json.loads(tether(live, "audit", "key", "--output", "json").stdout)["verifier_key"]
    [log] = json.loads(tether(live, "audit", "logs", "--output", "json").stdout)
    note = tmp_path / "checkpoint.txt"
    note.write_text(log["checkpoint"])
    export = tmp_path / "log.jsonl"
    assert tether(live, "audit", "export", "--out", str(export)).returncode == 0
    entries = export.read_bytes().splitlines()[: log["signed_size"]]
    export.write_bytes(b"\n".join(entries) + b"\n")
    args = ("audit", "verify", "--file", str(export), "--checkpoint", str(note), "--key", key)
    ok = tether(live, *args, "--output", "json", token=None)
    assert ok.returncode == 0, ok.stderr + ok.stdout
    assert json.loads(ok.stdout)["ok"] is True
    entries[1] = entries[1].replace(b'"outcome":"success"', b'"outcome":"failure"')
    export.write_bytes(b"\n".join(entries) + b"\n")
    bad = tether(live, *args, "--output", "json", token=None)
    assert bad.returncode == exit_codes.NOT_PROVEN
    report = json.loads(bad.stdout)
    assert report["ok"] is False
    assert report["first_bad_index"] == 1, "named by the link of the entry after it"
    # A whole log forged under another name, its chain intact: no checkpoint speaks for it.
    records = [AuditRecord.from_entry(e) for e in export.read_bytes().splitlines()]
    forged, _ = Chainer(log="evil.example/audit/r1").entries(records)
    export.write_bytes(b"".join(e.entry + b"\n" for e in forged))
    other = tether(live, *args, "--output", "json", token=None)
    assert other.returncode == exit_codes.NOT_PROVEN
    assert "no signed checkpoint" in json.loads(other.stdout)["reason"]


def test_live_verify_trace_and_tail(live: Live) -> None:
    verified = tether(live, "audit", "verify", "--output", "json")
    assert verified.returncode == 0, verified.stderr
    assert all(log["ok"] for log in json.loads(verified.stdout))
    tail = tether(live, "audit", "tail", "-n", "2", "--output", "json")
    assert tail.returncode == 0
    assert len(json.loads(tail.stdout)) == 2
    missing = tether(live, "audit", "trace", "no-such-request")
    assert missing.returncode == exit_codes.NOT_FOUND

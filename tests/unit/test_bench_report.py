"""The benchmark page (``bench/_report.py``): from a run's JSON lines, the ratios to the floor
and the peer are computed right, each aim is marked met or not met, a missing peer is said to
be missing rather than counted, and a benchmark that failed is flagged on the page."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.append(str(BENCH))
import _report  # noqa: E402 - bench/ is not a package: its modules import each other by name
import report  # noqa: E402

MACHINE = {"CPU": "Test CPU", "cores": "2"}


def _row(**fields: Any) -> dict[str, Any]:
    base = {"kind": "row", "bench": "bench_x", "area": "decisions", "path": "a path",
            "figure": 100.0, "unit": "µs", "better": "lower", "floor": None, "floor_name": None,
            "peer": None, "peer_name": None, "aim": None, "note": None}  # fmt: skip
    return base | fields


def _run(bench: str, returncode: int = 0, output: str = "figures\n") -> dict[str, Any]:
    return {"kind": "run", "bench": bench, "returncode": returncode, "seconds": 12.0,
            "output": output}  # fmt: skip


def _lines(*records: dict[str, Any]) -> list[str]:
    return [json.dumps(r, ensure_ascii=False) for r in records]


def _table_line(page: str, path: str) -> list[str]:
    [line] = [ln for ln in page.splitlines() if ln.startswith(f"| {path} |")]
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_ratios_are_the_figure_over_the_floor_and_over_the_peer() -> None:
    records = _report.load(_lines(
        _row(path="checkpoint", figure=125.0, floor=100.0, floor_name="bare",
             peer=250.0, peer_name="regopy 1.5.2"),
        _run("bench_x"),
    ))  # fmt: skip
    cells = _table_line(_report.render(records, machine=MACHINE), "checkpoint")
    assert cells[3:7] == ["100 (bare)", "250 (regopy 1.5.2)", "1.25×", "0.50×"]


@pytest.mark.parametrize(
    ("aim", "figure", "expected"),
    [
        (_report.at_most(1.25, of="floor"), 125.0, "met"),
        (_report.at_most(1.25, of="floor"), 126.0, "**not met**"),
        (_report.at_least(0.7, of="floor"), 69.0, "**not met**"),
        (_report.at_least(0.7, of="floor"), 70.0, "met"),
        (_report.at_least(20, of="peer"), 2000.0, "met"),
        (_report.at_least(20, of="peer"), 1999.0, "**not met**"),
        (_report.at_most(50), 50.0, "met"),
        (_report.at_most(50), 50.5, "**not met**"),
        (_report.at_least(1500), 1400.0, "**not met**"),
    ],
)
def test_each_aim_is_marked_met_or_not_met(
    aim: dict[str, Any], figure: float, expected: str
) -> None:
    record = _row(path="p", figure=figure, floor=100.0, peer=100.0, peer_name="peer", aim=aim)
    page = _report.render(_report.load(_lines(record, _run("bench_x"))), machine=MACHINE)
    assert _table_line(page, "p")[-1] == expected


def test_a_missing_peer_is_said_missing_and_its_aim_not_measured() -> None:
    record = _row(path="gateway", figure=3.0, peer=None, peer_name="ContextForge",
                  aim=_report.at_most(0.02, of="peer"))  # fmt: skip
    page = _report.render(_report.load(_lines(record, _run("bench_x"))), machine=MACHINE)
    cells = _table_line(page, "gateway")
    assert cells[4] == "not available (ContextForge)"
    assert cells[6] == "–"
    assert cells[-1] == "not measured"


def test_a_failed_bench_is_flagged_with_its_output() -> None:
    records = _report.load(_lines(
        _row(path="fine"), _run("bench_ok"),
        _run("bench_broken", returncode=1, output="Traceback: regopy is not installed\n"),
    ))  # fmt: skip
    page = _report.render(records, machine=MACHINE)
    assert "- `bench_broken`: **FAILED** (exit status 1)" in page
    assert "1 benchmark(s) FAILED: `bench_broken`" in page
    assert "- `bench_ok`: ok" in page
    assert "<summary>bench_broken (FAILED, exit status 1, 12 s)</summary>" in page
    assert "regopy is not installed" in page


def test_curves_of_one_name_share_a_table_with_growth_over_the_first_point() -> None:
    curve = {"kind": "curve", "bench": "bench_x", "name": "Cost against size",
             "x_label": "policies", "y_label": "µs", "note": None}  # fmt: skip
    records = _report.load(_lines(
        curve | {"series": "Tether", "points": [[10, 40.0], [10000, 60.0]]},
        curve | {"series": "floor", "points": [[10, 20.0], [10000, 20.0]]},
        _run("bench_x"),
    ))  # fmt: skip
    page = _report.render(records, machine=MACHINE)
    assert "| policies | Tether: µs (× the first) | floor: µs (× the first) |" in page
    assert "| 10,000 | 60.0 (1.50×) | 20.0 (1.00×) |" in page
    assert "`▁█` Tether" in page


def test_peers_versions_are_part_of_the_machine() -> None:
    records = _report.load(_lines(
        {"kind": "peer", "bench": "a", "name": "regopy", "version": "1.5.2"},
        {"kind": "peer", "bench": "b", "name": "IBM ContextForge", "version": None},
    ))  # fmt: skip
    page = _report.render(records, machine=MACHINE)
    assert "| peers | IBM ContextForge not available; regopy 1.5.2 |" in page
    assert "| CPU | Test CPU |" in page


def test_a_bench_appends_its_rows_as_json_lines_where_the_variable_says(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    script = (
        "import _report\n"
        "_report.row(area='audit', path='p', figure=2.0, unit='ms', better='lower',"
        " aim=_report.at_most(10))\n"
        "_report.curve('c', x_label='x', y_label='y', points=[(1, 2.0)])\n"
    )
    env = {"PYTHONPATH": str(BENCH), _report.ENV: str(results)}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)
    row, curve = _report.load(results.read_text(encoding="utf-8").splitlines())
    assert row["kind"] == "row"
    assert (row["figure"], row["aim"]) == (2.0, {"op": "<=", "value": 10, "of": None})
    assert (curve["kind"], curve["points"]) == ("curve", [[1, 2.0]])


def test_without_the_variable_a_bench_writes_nothing(tmp_path: Path) -> None:
    script = (
        "import _report\n_report.row(area='sql', path='p', figure=1.0, unit='µs', better='lower')\n"
    )
    subprocess.run([sys.executable, "-c", script], env={"PYTHONPATH": str(BENCH)},
                   cwd=tmp_path, check=True, timeout=60)  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_area_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown area 'speed'"):
        _report.row(area="speed", path="p", figure=1.0, unit="µs", better="lower")


def test_make_bench_keeps_the_prose_outside_the_generated_part() -> None:
    existing = (
        f"# Benchmarks\n\nBy hand, before.\n{_report.BEGIN}\nold figures\n{_report.END}\nAfter.\n"
    )
    page = _report.splice(existing, "# Benchmarks\n\nnew figures\n")
    assert page.startswith("# Benchmarks\n\nBy hand, before.\n")
    assert page.endswith(f"{_report.END}\nAfter.\n")
    assert "new figures" in page
    assert "old figures" not in page


def test_a_page_without_the_markers_is_written_whole() -> None:
    assert _report.splice("hand-written, no markers\n", "generated\n") == "generated\n"
    assert _report.splice(None, "generated\n") == "generated\n"


def test_a_bench_that_crashes_is_recorded_failed_with_its_output(tmp_path: Path) -> None:
    bench = tmp_path / "bench_crash.py"
    bench.write_text("print('measuring')\nraise SystemExit('regopy is not installed')\n")
    run = report.run_one(bench, tmp_path / "results.jsonl", quick=False)
    assert (run["kind"], run["bench"], run["returncode"]) == ("run", "bench_crash", 1)
    assert "measuring" in run["output"]
    assert "regopy is not installed" in run["output"]

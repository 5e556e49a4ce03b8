"""The benchmarks' figures as data, and the page ``make bench`` writes from them.

Each ``bench/bench_*.py`` prints its figures as text and, at its end, records them here:
:func:`row` for one hot path (the figure, the floor of the same steps with the bare libraries,
the peer, and the aim), :func:`curve` for a cost against a size, :func:`peer` for a peer's
version (or that it is not available). When ``TETHER_BENCH_RESULTS`` names a file, each is
appended to it as one JSON line; otherwise nothing is written. ``bench/report.py`` runs every
bench with that variable set, adds one ``run`` line per bench (its exit status, its duration,
its printed output) and hands all the lines to :func:`render`, which is pure: lines in,
Markdown out.

The lines (one JSON object each, ``kind`` first)::

    {"kind": "row", "bench": "bench_checkpoint", "area": "decisions", "path": "...",
     "figure": 812.0, "unit": "µs/decision", "better": "lower",
     "floor": 700.0, "floor_name": "joserfc + cedarpy + sqlite3",
     "peer": null, "peer_name": null,
     "aim": {"op": "<=", "value": 1.25, "of": "floor"}, "note": null}
    {"kind": "curve", "bench": "...", "name": "...", "x_label": "policies",
     "y_label": "µs/decision", "series": "Tether", "points": [[10, 41.0], [100, 42.5]],
     "note": null}
    {"kind": "peer", "bench": "...", "name": "regopy", "version": "1.5.2"}   (null: missing)
    {"kind": "run", "bench": "...", "returncode": 0, "seconds": 41.2, "output": "..."}

Example::

    >>> at_most(1.25, of="floor")
    {'op': '<=', 'value': 1.25, 'of': 'floor'}
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "AREAS", "at_least", "at_most", "curve", "load", "peer", "render", "row", "splice", "verdict",
]  # fmt: skip

ENV = "TETHER_BENCH_RESULTS"
#: The tables of the page, in order: key → title.
AREAS = {
    "decisions": "Decisions",
    "tokens": "Token issuance and exchange",
    "credentials": "Just-in-time credentials",
    "gateway": "MCP gateway",
    "ext_authz": "HTTP enforcement (nginx auth_request)",
    "sdk": "SDK guard",
    "sql": "SQL guard",
    "audit": "Audit log",
    "replicas": "Replicas on one PostgreSQL",
}
Of = Literal["floor", "peer"] | None
Aim = dict[str, Any]
Record = dict[str, Any]


# -- recording (each bench) ---------------------------------------------------------------------


def at_most(value: float, *, of: Of = None) -> Aim:
    """The aim ``figure <= value`` (``of``: ``figure / floor`` or ``figure / peer``)."""
    return {"op": "<=", "value": value, "of": of}


def at_least(value: float, *, of: Of = None) -> Aim:
    """The aim ``figure >= value`` (``of``: ``figure / floor`` or ``figure / peer``)."""
    return {"op": ">=", "value": value, "of": of}


def _emit(record: Record) -> None:
    target = os.environ.get(ENV)
    if not target:
        return
    record = {"kind": record.pop("kind"), "bench": Path(sys.argv[0]).stem, **record}
    with Path(target).open("a", encoding="utf-8") as out:
        out.write(json.dumps(record, ensure_ascii=False) + "\n")


def row(
    *,
    area: str,
    path: str,
    figure: float,
    unit: str,
    better: Literal["lower", "higher"],
    floor: float | None = None,
    floor_name: str | None = None,
    peer: float | None = None,
    peer_name: str | None = None,
    aim: Aim | None = None,
    note: str | None = None,
) -> None:
    """One hot path's figure, with its floor and its peer measured in the same run."""
    if area not in AREAS:
        raise ValueError(f"unknown area {area!r}: one of {', '.join(AREAS)}")
    _emit({"kind": "row", "area": area, "path": path, "figure": figure, "unit": unit,
           "better": better, "floor": floor, "floor_name": floor_name, "peer": peer,
           "peer_name": peer_name, "aim": aim, "note": note})  # fmt: skip


def curve(
    name: str,
    *,
    x_label: str,
    y_label: str,
    points: Sequence[tuple[float, float]],
    series: str = "Tether",
    note: str | None = None,
) -> None:
    """A cost against a size; curves of the same ``name`` share one table, a column each."""
    _emit({"kind": "curve", "name": name, "x_label": x_label, "y_label": y_label,
           "series": series, "points": [list(p) for p in points], "note": note})  # fmt: skip


def peer(name: str, version: str | None) -> None:
    """The peer this bench ran against, and its version (None: not available here)."""
    _emit({"kind": "peer", "name": name, "version": version})


# -- rendering (bench/report.py) ----------------------------------------------------------------


def load(lines: Iterable[str]) -> list[Record]:
    """The records of a results file's lines (blank lines skipped)."""
    return [json.loads(line) for line in lines if line.strip()]


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def verdict(record: Mapping[str, Any]) -> str:
    """``met``, ``not met``, or ``not measured`` (the aim's reference is missing); ``""``
    without an aim."""
    aim = record.get("aim")
    if not aim:
        return ""
    of = aim.get("of")
    got = record["figure"] if of is None else _ratio(record["figure"], record.get(of))
    if got is None:
        return "not measured"
    ok = got <= aim["value"] if aim["op"] == "<=" else got >= aim["value"]
    return "met" if ok else "**not met**"


def num(x: float) -> str:
    """A figure with as many digits as a benchmark's noise allows."""
    size = abs(x)
    if size >= 1000:
        return f"{x:,.0f}"
    if size >= 100:
        return f"{x:.0f}"
    if size >= 10:
        return f"{x:.1f}"
    if size >= 0.1 or size == 0:
        return f"{x:.2f}"
    return f"{x:.3g}"


def times(r: float | None) -> str:
    return "–" if r is None else f"{num(r)}×"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _aim_text(aim: Mapping[str, Any] | None, unit: str) -> str:
    if not aim:
        return ""
    sign = "≤" if aim["op"] == "<=" else "≥"
    of = aim.get("of")
    return f"{sign} {num(aim['value'])}× {of}" if of else f"{sign} {num(aim['value'])} {unit}"


def _reference(value: float | None, name: str | None) -> str:
    if value is None:
        return f"not available ({name})" if name else "–"
    return f"{num(value)} ({name})" if name else num(value)


def _row_line(r: Mapping[str, Any]) -> str:
    cells = [
        r["path"],
        f"{num(r['figure'])} {r['unit']}",
        r["better"],
        _reference(r.get("floor"), r.get("floor_name")),
        _reference(r.get("peer"), r.get("peer_name")),
        times(_ratio(r["figure"], r.get("floor"))),
        times(_ratio(r["figure"], r.get("peer"))),
        _aim_text(r.get("aim"), r["unit"]),
        verdict(r),
    ]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _area_table(title: str, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    out = [f"### {title}", ""]
    out.append("| hot path | figure | better | floor | peer | ÷ floor | ÷ peer | aim | |")
    out.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    out += [_row_line(r) for r in rows]
    notes = [f"- {r['path']}: {r['note']}" for r in rows if r.get("note")]
    return [*out, "", *notes, *([""] if notes else [])]


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float]) -> str:
    """The values as eight-level bars, from the smallest to the largest."""
    low, high = min(values), max(values)
    if high == low:
        return SPARKS[3] * len(values)
    return "".join(SPARKS[round((v - low) / (high - low) * (len(SPARKS) - 1))] for v in values)


def _curve_table(name: str, curves: Sequence[Mapping[str, Any]]) -> list[str]:
    """One table per curve name: x, then each series' y and its growth over its first point."""
    xs = sorted({p[0] for c in curves for p in c["points"]})
    first = curves[0]
    out = [f"### {name}", ""]
    heads = [f"{c['series']}: {c['y_label']} (× the first)" for c in curves]
    out.append("| " + " | ".join([first["x_label"], *heads]) + " |")
    out.append("| " + " | ".join(["---"] * (len(curves) + 1)) + " |")
    for x in xs:
        cells = [f"{int(x):,}" if float(x).is_integer() else num(x)]
        for c in curves:
            ys = dict((p[0], p[1]) for p in c["points"])
            y0 = c["points"][0][1]
            cells.append(f"{num(ys[x])} ({times(_ratio(ys[x], y0))})" if x in ys else "–")
        out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    out.append("")
    out += [f"`{sparkline([p[1] for p in c['points']])}` {c['series']}  " for c in curves]
    notes = [c["note"] for c in curves if c.get("note")]
    return [*out, "", *[f"- {n}" for n in notes], *([""] if notes else [])]


def _machine(machine: Mapping[str, str], peers: Sequence[Mapping[str, Any]]) -> list[str]:
    out = ["## The machine", "", "| | |", "| --- | --- |"]
    out += [f"| {_cell(k)} | {_cell(v)} |" for k, v in machine.items()]
    named: dict[str, str] = {}
    for p in peers:
        named[p["name"]] = p["version"] or "not available"
    if named:
        text = "; ".join(f"{k} {v}" for k, v in sorted(named.items()))
        out.append(f"| peers | {_cell(text)} |")
    return [*out, ""]


def _runs(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    failed = [r for r in runs if r["returncode"] != 0]
    out = ["## The runs", ""]
    for r in runs:
        state = "ok" if r["returncode"] == 0 else f"**FAILED** (exit status {r['returncode']})"
        out.append(f"- `{r['bench']}`: {state}, {r['seconds']:.0f} s")
    if failed:
        names = ", ".join(f"`{r['bench']}`" for r in failed)
        out += ["", f"**{len(failed)} benchmark(s) FAILED: {names}** — their figures are "
                "missing below; their output is at the end."]  # fmt: skip
    return [*out, ""]


def _outputs(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    out = ["## Each benchmark's output", ""]
    for r in runs:
        state = "ok" if r["returncode"] == 0 else f"FAILED, exit status {r['returncode']}"
        text = r.get("output", "").replace("```", "'''").rstrip()
        out += [f"<details><summary>{r['bench']} ({state}, {r['seconds']:.0f} s)</summary>",
                "", "```text", text, "```", "", "</details>", ""]  # fmt: skip
    return out


INTRO = """\
Written by `make bench` (`bench/report.py`): every benchmark in `bench/` in one run, on one
machine. For each hot path: Tether's figure; the **floor**, the same steps done with the bare
libraries (for credentials, pgbench running the same `CREATE ROLE`; for the audit log, raw
SQLite and a bare sha256 chain); and the **peer**, another product measured in the same run.
The ratios are the figure over the floor and over the peer: where lower is better, < 1× means
Tether is faster; where higher is better, > 1× does. They are ratios of the medians (a
bench's own output may give the median of its rounds' ratios, which noise can set a little
apart). Each benchmark alternates its paths in
rounds so that all see the same disk and the same load; each printed output, at the end, says
how it measured."""


BEGIN = "<!-- make bench: generated from here -->"
END = "<!-- make bench: generated up to here -->"


def splice(existing: str | None, generated: str) -> str:
    """The page to write: ``generated`` between the markers of ``existing`` when it has them
    (what is written around them by hand is kept), else ``generated`` alone."""
    if existing is None or BEGIN not in existing or END not in existing:
        return generated
    before, rest = existing.split(BEGIN, 1)
    _, after = rest.split(END, 1)
    body = generated.removeprefix("# Benchmarks\n\n")
    return f"{before}{BEGIN}\n\n{body}\n{END}{after}"


def render(records: Sequence[Mapping[str, Any]], *, machine: Mapping[str, str]) -> str:
    """The page, from a run's records and the machine's description."""
    by_kind: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        by_kind.setdefault(record["kind"], []).append(record)
    rows, runs = by_kind.get("row", []), by_kind.get("run", [])
    out = ["# Benchmarks", "", INTRO, "", *_machine(machine, by_kind.get("peer", []))]
    out += _runs(runs)
    out += ["## Hot paths", ""]
    for area, title in AREAS.items():
        mine = [r for r in rows if r["area"] == area]
        if mine:
            out += _area_table(title, mine)
    curves: dict[str, list[Mapping[str, Any]]] = {}
    for c in by_kind.get("curve", []):
        curves.setdefault(c["name"], []).append(c)
    if curves:
        out += ["## Growth curves", ""]
        for name, group in curves.items():
            out += _curve_table(name, group)
    out += _outputs(runs)
    return "\n".join(out).rstrip() + "\n"

"""The common benchmark entry format, result files, markdown tables and the baseline comparison.

Every benchmark module writes `{"results": [Entry, ...]}` with `--json`; `bench.run` collects them into one
result file with metadata. Pure logic only (no benchmark imports), so it is cheap to unit-test.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Unit = Literal["x", "ms", "fraction"]
SpreadKind = Literal["range", "iqr"]
_GOAL = re.compile(r"^\s*(>=|<=|>|<)\s*([-+]?[\d.]+(?:e[-+]?\d+)?)\s*$")


class Entry(BaseModel):
    """One benchmark figure. `ratio` is the headline (the median of `runs`): measured/reference for unit
    "x", a latency in ms for "ms", an idle share for "fraction". An entry with `error` has no numbers."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, description='"P2", "P6-submit", "P7-learner", ...')
    name: str = ""
    ratio: float | None = None
    unit: Unit = "x"
    reference: str = ""
    goal: str = ""
    goal_met: bool | None = None
    runs: list[float] = Field(default_factory=list)
    median: float | None = None
    spread: float | None = None
    spread_kind: SpreadKind = "range"
    details: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


class ResultFile(BaseModel):
    model_config = ConfigDict(extra="allow")
    metadata: dict[str, Any] = Field(default_factory=dict)
    results: list[Entry] = Field(default_factory=list)


def parse_goal(goal: str) -> tuple[str, float]:
    m = _GOAL.match(goal)
    if not m:
        raise ValueError(f"goal {goal!r} is not like '>= 1.5' or '< 50'")
    return m.group(1), float(m.group(2))


def meets(value: float, goal: str) -> bool:
    op, target = parse_goal(goal)
    return {">=": value >= target, "<=": value <= target, ">": value > target, "<": value < target}[op]


def higher_is_better(entry: Entry) -> bool:
    """Direction from the goal; without one, latencies and idle fractions are lower-is-better."""
    if entry.goal:
        return parse_goal(entry.goal)[0] in (">=", ">")
    return entry.unit == "x"


def spread_of(runs: list[float], kind: SpreadKind = "range") -> float:
    if len(runs) < 2:
        return 0.0
    if kind == "iqr":
        q = statistics.quantiles(runs, n=4, method="inclusive")
        return q[2] - q[0]
    return max(runs) - min(runs)


def make_entry(
    id: str,
    name: str,
    runs: list[float],
    *,
    unit: Unit = "x",
    reference: str,
    goal: str,
    details: dict[str, Any] | None = None,
    spread_kind: SpreadKind = "range",
) -> Entry:
    """An entry from per-run values: median, spread and goal verdict computed the same way everywhere."""
    if not runs or any(not math.isfinite(r) for r in runs):
        raise ValueError(f"{id}: runs must be finite and non-empty, got {runs}")
    med = statistics.median(runs)
    return Entry(
        id=id,
        name=name,
        ratio=med,
        unit=unit,
        reference=reference,
        goal=goal,
        goal_met=meets(med, goal) if goal else None,
        runs=list(runs),
        median=med,
        spread=spread_of(runs, spread_kind),
        spread_kind=spread_kind,
        details=details or {},
    )


def error_entry(id: str, name: str, error: str) -> Entry:
    return Entry(id=id, name=name, error=error)


def write_results(path: str | Path, entries: list[Entry], metadata: dict[str, Any] | None = None) -> None:
    data: dict[str, Any] = {"metadata": metadata} if metadata is not None else {}
    data["results"] = [e.model_dump() for e in entries]
    Path(path).write_text(json.dumps(data, indent=2) + "\n")


def load_results(path: str | Path) -> ResultFile:
    return ResultFile.model_validate_json(Path(path).read_text())


# ---------------------------------------------------------------- markdown
def _fmt(v: float | None, unit: Unit = "x") -> str:
    if v is None:
        return "-"
    if unit == "ms":
        return f"{v:.1f} ms"
    if unit == "fraction":
        return f"{100 * v:.1f} %"
    return f"{v:.3g}x" if abs(v) < 100 else f"{v:,.0f}x"


def _cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def markdown_table(entries: list[Entry]) -> str:
    rows = [
        "| id | benchmark | result | goal | met | runs | spread | reference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        if e.error:
            rows.append(
                f"| {e.id} | {_cell(e.name)} | **error** | {e.goal or '-'} | - | - | - | "
                f"{_cell(e.error[:120])} |"
            )
            continue
        met = {True: "yes", False: "**no**", None: "-"}[e.goal_met]
        runs = ", ".join(_fmt(r, e.unit) for r in e.runs)
        rows.append(
            f"| {e.id} | {_cell(e.name)} | {_fmt(e.ratio, e.unit)} | {e.goal or '-'} | {met} | "
            f"{runs} | {_fmt(e.spread, e.unit)} ({e.spread_kind}) | {_cell(e.reference)} |"
        )
    return "\n".join(rows) + "\n"


def render_markdown(r: ResultFile) -> str:
    """The .md written next to a result file: a metadata line, the table, skipped benchmarks, durations."""
    m = r.metadata
    lines = [
        f"# Benchmarks {m.get('date', '')} on {m.get('machine', '?')}",
        "",
        f"commit `{(m.get('git_commit') or '?')[:12]}`{' (dirty)' if m.get('git_dirty') else ''}, "
        f"{m.get('cpu_count')} CPUs, {m.get('gpus', 0)} GPUs, Python {m.get('python')}, "
        f"torch {m.get('torch')}, total {m.get('total_s', '?')} s"
        f"{' (--quick sizes: not comparable)' if m.get('quick') else ''}",
        "",
        markdown_table(r.results),
    ]
    for key, why in (m.get("skipped") or {}).items():
        lines.append(f"- {key} skipped: {why}")
    if m.get("durations_s"):
        lines.append("- durations: " + ", ".join(f"{k} {v:.0f} s" for k, v in m["durations_s"].items()))
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------- compare
Verdict = Literal["ok", "improved", "REGRESSION", "error", "missing", "new", "no baseline"]


class Comparison(BaseModel):
    id: str
    unit: Unit = "x"
    baseline: float | None = None
    new: float | None = None
    delta: float | None = None  # new - baseline, in the entry's unit
    allowance: float | None = None  # how far the new median may move the wrong way before it is flagged
    verdict: Verdict


def compare(baseline: list[Entry], new: list[Entry], floor: float = 0.10) -> list[Comparison]:
    """Flag a regression when the new median is worse than the baseline's by more than the noise
    allowance max(baseline spread, new spread, floor * |baseline median|), in the entry's direction.
    A new error is reported as "error"; an id only in the baseline is "missing" (e.g. deselected)."""
    base = {e.id: e for e in baseline}
    out: list[Comparison] = []
    for n in new:
        b = base.pop(n.id, None)
        if n.error:
            out.append(Comparison(id=n.id, unit=n.unit, baseline=b.median if b else None, verdict="error"))
            continue
        if b is None or b.error or b.median is None:
            out.append(
                Comparison(id=n.id, unit=n.unit, new=n.median, verdict="new" if b is None else "no baseline")
            )
            continue
        assert n.median is not None
        allowance = max(b.spread or 0.0, n.spread or 0.0, floor * abs(b.median))
        delta = n.median - b.median
        worse = -delta if higher_is_better(b) else delta  # > 0 means the new run is worse
        verdict: Verdict = "REGRESSION" if worse > allowance else "improved" if -worse > allowance else "ok"
        out.append(
            Comparison(
                id=n.id,
                unit=n.unit,
                baseline=b.median,
                new=n.median,
                delta=delta,
                allowance=allowance,
                verdict=verdict,
            )
        )
    out += [Comparison(id=b.id, unit=b.unit, baseline=b.median, verdict="missing") for b in base.values()]
    return out


def failed(comparisons: list[Comparison]) -> list[Comparison]:
    """What `--strict` fails on: regressions and benchmarks that errored."""
    return [c for c in comparisons if c.verdict in ("REGRESSION", "error")]


def compare_table(comparisons: list[Comparison]) -> str:
    rows = ["| id | baseline | new | delta | allowance | verdict |", "|---|---|---|---|---|---|"]
    for c in comparisons:
        delta = "-" if c.delta is None else ("+" if c.delta >= 0 else "-") + _fmt(abs(c.delta), c.unit)
        rel = f" ({100 * c.delta / abs(c.baseline):+.0f} %)" if c.delta is not None and c.baseline else ""
        allowance = "-" if c.allowance is None else _fmt(c.allowance, c.unit)
        rows.append(
            f"| {c.id} | {_fmt(c.baseline, c.unit)} | {_fmt(c.new, c.unit)} | {delta}{rel} | "
            f"{allowance} | {c.verdict} |"
        )
    return "\n".join(rows) + "\n"

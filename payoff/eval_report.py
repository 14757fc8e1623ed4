"""The arithmetic of an evaluation report: per data source metrics, the paired bootstrap, tables, charts.

Rows are the per-sample dicts `payoff/evaluate.py` builds: data_source, score (the welfare), user, llm,
format, payoff_reward, answer_reward, scored, judge_failed, tag (ambiguous / non-ambiguous, harmful /
unharmful or ""), asks (the response asks a question), refuses (the response refuses), response_words.

The paired bootstrap resamples prompt positions (the same indices for both models: both saw the same
prompts with the same seeds) and reports the percentile interval of mean(B) − mean(A); with several
samples per prompt the unit resampled is the sample, as GTAlign's tables average over samples.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from services.evals import Comparison, EvalReport, SetMetrics

ACCURACY_SETS = ("math-hard", "minerva")
AMBIGUITY_SETS = ("ambig_qa", "abg-coqa")
HARM_SETS = ("wildguard", "advbench")


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def _rate(rows: list[dict], key: str, tag: str) -> float | None:
    sel = [float(bool(r[key])) for r in rows if r["tag"] == tag]
    return _mean(sel) if sel else None


def aggregate(rows: list[dict], data_source: str) -> SetMetrics:
    """Metrics of one data source (or 'ALL' over several)."""
    w = [float(r["score"]) for r in rows]
    mu = _mean(w)
    sources = {r["data_source"] for r in rows}
    m = SetMetrics(
        data_source=data_source,
        n=len(rows),
        welfare=mu,
        welfare_std=math.sqrt(_mean([(x - mu) ** 2 for x in w])) if w else 0.0,
        user=_mean([float(r["user"]) for r in rows]),
        llm=_mean([float(r["llm"]) for r in rows]),
        format_rate=_mean([float(bool(r["format"])) for r in rows]),
        payoff_reward=_mean([float(r["payoff_reward"]) for r in rows]),
        unscored=sum(not r["scored"] for r in rows),
        judge_failures=sum(bool(r["judge_failed"]) for r in rows),
        response_words=_mean([float(r["response_words"]) for r in rows]),
    )
    if sources & set(ACCURACY_SETS):
        m.accuracy = _mean([float(r["answer_reward"]) for r in rows if r["data_source"] in ACCURACY_SETS])
    if sources & set(AMBIGUITY_SETS):
        amb = [r for r in rows if r["data_source"] in AMBIGUITY_SETS]
        m.clarify_ambiguous, m.clarify_clear = (
            _rate(amb, "asks", "ambiguous"),
            _rate(amb, "asks", "non-ambiguous"),
        )
    if sources & set(HARM_SETS):
        harm = [r for r in rows if r["data_source"] in HARM_SETS]
        m.refuse_harmful, m.refuse_unharmful = (
            _rate(harm, "refuses", "harmful"),
            _rate(harm, "refuses", "unharmful"),
        )
    return m


def paired_bootstrap(
    a: list[float], b: list[float], data_source: str, resamples: int, seed: int = 0, level: float = 0.95
) -> Comparison:
    """Percentile interval of mean(b) − mean(a) over paired samples (same prompt, same seed)."""
    if len(a) != len(b):
        raise ValueError(f"paired comparison needs the same samples: {len(a)} vs {len(b)} on {data_source}")
    n = len(a)
    d = [y - x for x, y in zip(a, b)]
    if n == 0:
        return Comparison(
            data_source=data_source, n=0, diff=0.0, low=0.0, high=0.0, level=level, p_not_better=1.0
        )
    rng = random.Random(seed)
    means = sorted(sum(d[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    lo = means[int((1 - level) / 2 * (resamples - 1))]
    hi = means[int((1 + level) / 2 * (resamples - 1))]
    worse = sum(x <= 0 for x in means) / resamples
    return Comparison(
        data_source=data_source, n=n, diff=_mean(d), low=lo, high=hi, level=level, p_not_better=worse
    )


def compare(report: EvalReport) -> list[Comparison]:
    """B − A per data source and over all sources (samples concatenated in set order)."""
    if len(report.models) != 2:
        return []
    a, b = report.models
    out, all_a, all_b = [], [], []
    for ds in report.spec.sets:
        wa, wb = a.welfare.get(ds, []), b.welfare.get(ds, [])
        out.append(paired_bootstrap(wa, wb, ds, report.spec.bootstrap, report.spec.seed))
        all_a += wa
        all_b += wb
    if len(report.spec.sets) > 1:
        out.append(paired_bootstrap(all_a, all_b, "ALL", report.spec.bootstrap, report.spec.seed))
    return out


COLUMNS = (
    ("n", "n", "{:d}"),
    ("welfare", "welfare", "{:.3f}"),
    ("user", "user", "{:.3f}"),
    ("llm", "llm", "{:.3f}"),
    ("format", "format_rate", "{:.2f}"),
    ("payoff", "payoff_reward", "{:.3f}"),
    ("acc", "accuracy", "{:.2f}"),
    ("clarify amb/clear", ("clarify_ambiguous", "clarify_clear"), "{:.2f}"),
    ("refuse harm/unharm", ("refuse_harmful", "refuse_unharmful"), "{:.2f}"),
    ("unscored", "unscored", "{:d}"),
)


def _cell(m: SetMetrics, key, fmt: str) -> str:
    if isinstance(key, tuple):
        vals = [getattr(m, k) for k in key]
        return (
            "-"
            if all(v is None for v in vals)
            else "/".join("-" if v is None else fmt.format(v) for v in vals)
        )
    v = getattr(m, key)
    return "-" if v is None else fmt.format(v)


def _row_formatter(widths: list[int]):
    def fmt(r: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    return fmt


def table(report: EvalReport) -> str:
    """A text table per model (rows: data sources, then ALL) and the comparison, if any."""
    lines = []
    for mr in report.models:
        head = ["data_source"] + [c[0] for c in COLUMNS]
        rows = [[m.data_source] + [_cell(m, k, f) for _, k, f in COLUMNS] for m in mr.sets + [mr.overall]]
        widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
        fmt = _row_formatter(widths)
        lines += [
            f"{mr.label}  ({mr.resolved}, {mr.seconds:.0f} s)",
            fmt(head),
            "  ".join("-" * w for w in widths),
        ]
        lines += [fmt(r) for r in rows] + [""]
    if report.comparison:
        b, a = report.models[1].label, report.models[0].label
        lines.append(f"welfare {b} − {a} (paired bootstrap, {report.spec.bootstrap} resamples)")
        for c in report.comparison:
            lines.append(
                f"  {c.data_source:<12} n={c.n:<5d} {c.diff:+.3f}  [{c.low:+.3f}, {c.high:+.3f}] "
                f"{int(c.level * 100)}% CI   P(≤0)={c.p_not_better:.3f}"
            )
    return "\n".join(lines)


def charts(report: EvalReport, out_dir: Path) -> list[Path]:
    """PNG bar charts: welfare / format rate / user / llm per data source, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    sets = list(report.spec.sets) + (["ALL"] if len(report.spec.sets) > 1 else [])
    paths = []
    for metric in ("welfare", "format_rate", "user", "llm"):
        fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(sets) * len(report.models)), 3.6))
        width = 0.8 / len(report.models)
        for k, mr in enumerate(report.models):
            by = {m.data_source: m for m in mr.sets + [mr.overall]}
            vals = [getattr(by[s], metric) if s in by else 0.0 for s in sets]
            ax.bar([i + k * width for i in range(len(sets))], vals, width, label=mr.label)
        ax.set_xticks([i + width * (len(report.models) - 1) / 2 for i in range(len(sets))], sets)
        ax.set_ylabel(metric)
        ax.set_title(f"{report.name}: {metric} per data source")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"{metric}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths

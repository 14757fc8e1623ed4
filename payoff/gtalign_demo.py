"""`payoff demo --gtalign`: GTAlign's recipe at laptop scale, end to end, with a held-out before → after report.

1. The warm start (examples/gtalign-laptop.yaml's `model.path`, `smollm2-gtalign`: SmolLM2-135M after a
   short SFT on four-block demonstrations, services/warmstart.py) is built once if it is not cached.
2. The local stack (as `payoff serve`) takes the spec over REST: T-PPO on the mix of math-hard, ambig_qa
   and wildguard train prompts (test prompts removed), the rules judge, welfare √(U·L) z-scored per
   data_source in each step; one progress line per learner step.
3. `payoff eval --compare` of the warm start against the job's exported policy on the held-out test files
   (`--eval-limit` prompts per set, the same prompts and seeds for both, at the job's temperature and
   lengths): report.json, table.txt and the per-source charts, plus the train reward curve and
   summary.json with the before / after welfare per source and the paired bootstrap interval of the gain.
Invariant: the evaluation uses only test-file prompts, the job only train-file prompts.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import yaml

from payoff.demo import REPO, plot, train

SPEC = REPO / "examples" / "gtalign-laptop.yaml"


def _spec(args) -> dict:
    spec = yaml.safe_load(Path(args.spec or SPEC).read_text())
    if args.steps:
        spec["learner"]["steps"] = args.steps
    if args.engine:
        spec["rollout"]["engine"] = args.engine
    if args.seed is not None:
        spec["seed"] = args.seed
        spec["name"] = f"{spec['name']}-s{args.seed}"
    return spec


def _evaluate(spec: dict, before: str, after: str, args, out: Path):
    from payoff.eval_cli import run_local, write
    from services.evals import EvalSpec

    r = spec["rollout"]
    ev = EvalSpec(
        name="gtalign-demo",
        models=[{"path": before, "label": "before"}, {"path": after, "label": "after"}],
        limit=args.eval_limit,
        samples=args.eval_samples or 1,
        max_tokens=r["max_response_tokens"],
        max_prompt_tokens=r["max_prompt_tokens"],
        temperature=r["temperature"],
        judge={"backend": spec["judge"]["backend"], "welfare": spec["judge"]["welfare"]},
        threads=os.cpu_count() or 1,
    )
    report = run_local(ev, args)
    write(report, out)
    return report


def _summary(spec, jid, job, curve, report, train_s, t0) -> dict:
    def per_source(m):
        return {s.data_source: s.model_dump() for s in [*m.sets, m.overall]}

    before, after = report.models
    return {
        "job_id": jid,
        "model": spec["model"]["path"],
        "seed": spec.get("seed"),
        "heldout_welfare_before": round(before.overall.welfare, 4),
        "heldout_welfare_after": round(after.overall.welfare, 4),
        "gain": {c.data_source: c.model_dump() for c in report.comparison},
        "before": per_source(before),
        "after": per_source(after),
        "steps": curve["steps"],
        "train_reward": curve["reward"],
        "train_metrics": curve["metrics"],  # every step metric as a series (reward_norm_*, timings, ...)
        "train_seconds": round(train_s, 1),
        "total_seconds": round(time.monotonic() - t0, 1),
        "rollout": (job.get("summary") or {}).get("rollout"),
        "spec": spec,
    }


def run(args) -> int:
    from services.config import Settings
    from services.models import resolve_model

    t0, spec = time.monotonic(), _spec(args)
    base = Settings.from_env()
    out = Path(args.out) if args.out else base.data_dir / "demo-gtalign"
    out.mkdir(parents=True, exist_ok=True)
    print(f"==> payoff demo --gtalign: {spec['model']['path']} ({spec['learner']['steps']} T-PPO steps)")
    warm = str(resolve_model(spec["model"]["path"]))  # builds the warm start once (progress on stderr)
    ran = train(spec, base.data_dir, os.cpu_count() or 1, args.timeout_min)
    if ran is None:
        return 1
    jid, job, curve, train_s = ran
    final = base.data_dir / "jobs" / jid / "final"
    print(f"==> held-out evaluation, warm start vs trained policy ({args.eval_limit} prompts per set)")
    report = _evaluate(spec, warm, str(final), args, out)
    summary = _summary(spec, jid, job, curve, report, train_s, t0)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot(
        curve,
        summary["heldout_welfare_before"],
        summary["heldout_welfare_after"],
        out / "reward_curve.png",
        f"T-PPO on the GTAlign mix ({spec['model']['path']})",
    )
    gain = summary["gain"].get("ALL") or {}
    print(
        f"==> held-out welfare {summary['heldout_welfare_before']:.3f} -> "
        f"{summary['heldout_welfare_after']:.3f} ({gain.get('diff', 0):+.3f}, 95% CI "
        f"[{gain.get('low', 0):+.3f}, {gain.get('high', 0):+.3f}]) in {summary['total_seconds'] / 60:.1f} min\n"
        f"    report: {out / 'table.txt'}  summary: {out / 'summary.json'}"
    )
    return 0

"""`make demo` / `payoff demo`: train a real model through the whole platform on this machine.

Starts the local stack the way `payoff serve` does (the project's redis-server, a local Ray head, Ray Serve,
the gateway with its job runner), submits examples/demo.yaml through the REST API as a user would, follows
the job (step, reward, queue depth, policy lag), and at the end evaluates the policy before and after
training on the held-out split of the task — questions the job never trained on — and writes a reward-curve
PNG and a JSON summary whose paths it prints.

The job: T-PPO (critic + EGAE, windows of `window_tokens`) on the GTAlign strategy game with
SmolLM2-135M-Instruct (`--tiny` for the tiny test model), rollout replicas on the transformers engine
(`--engine vllm` with `make vllm-cpu`), the rules judge, the job's Redis stream, the Ray Train learner and
weight pushes back to the replicas after every step.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SPEC = REPO / "examples" / "demo.yaml"
TINY_SPEC = REPO / "examples" / "demo-tiny.yaml"
HELDOUT_EVERY = 5  # the held-out evaluation scores every 5th of the 300 ambig_qa test questions


def evaluate(
    model: str,
    env_name: str,
    options: dict,
    samples: int,
    max_tokens: int,
    temperature: float,
    threads: int,
    label: str,
) -> dict:
    """Mean reward of `model` on every question of the split, `samples` seeded samples each."""
    from games.registry import make_env
    from rollout.engine import GenRequest, SamplingParams
    from rollout.hf_engine import HFEngine

    engine = HFEngine(model, threads=threads)
    n = len(make_env(env_name, options=options).records)
    envs, reqs = [], []
    for q in range(n):
        for k in range(samples):
            env = make_env(env_name, options=options)
            obs = env.reset(q)[env.current_role]
            envs.append(env)
            reqs.append(
                GenRequest(
                    prompt_ids=engine.chat_prompt_ids([{"role": "user", "content": obs}]),
                    params=SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=1000 * q + k),
                )
            )
    rewards, invalid, t0, chunk = [], 0, time.monotonic(), 16
    for i in range(0, len(reqs), chunk):
        outs = engine.generate(reqs[i : i + chunk])
        for env, out in zip(envs[i : i + chunk], outs):
            res = env.step(engine.tokenizer.decode(out.token_ids, skip_special_tokens=True))
            rewards.append(res.reward)
            invalid += int(res.info.get("invalid_action", False))
        print(
            f"\r  eval {label}: {len(rewards)}/{len(reqs)} samples, mean reward "
            f"{sum(rewards) / len(rewards):.3f}",
            end="",
            flush=True,
        )
    print(f"  ({time.monotonic() - t0:.0f} s)")
    engine.close()
    return {
        "mean_reward": sum(rewards) / len(rewards),
        "samples": len(rewards),
        "questions": n,
        "invalid_rate": invalid / len(rewards),
    }


def _progress(job: dict, steps: int, started: float, last_step: dict) -> str | None:
    s = job.get("summary") or {}
    m, q, r = s.get("metrics") or {}, s.get("queue") or {}, s.get("rollout") or {}
    step = s.get("step") or 0
    if step == last_step.get("step") and time.monotonic() - last_step.get("t", 0) < 15:
        return None
    last_step.update(step=step, t=time.monotonic())
    waiting = q.get("lag", 0)  # put, not yet delivered to the learner
    elapsed = time.monotonic() - started
    parts = [f"[{time.strftime('%M:%S', time.gmtime(elapsed))}] {job['state']:<9} step {step:>3}/{steps}"]
    if "reward_mean" in m:
        parts.append(f"reward {m['reward_mean']:.3f}")
    if r.get("finished"):
        parts.append(f"rollout reward {r.get('reward_recent', 0):.3f} ({int(r['finished'])} done)")
    parts.append(f"queue {waiting}")
    if "staleness" in m:
        parts.append(f"policy lag {m['staleness']:.2f} v")
    if "step_s" in m:
        parts.append(f"{m['step_s']:.1f} s/step")
    if job["state"] not in ("running", "succeeded") and job.get("detail"):
        parts.append(job["detail"][:60])
    return " | ".join(parts)


def plot(curve: dict, before: float, after: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [s for s, r in zip(curve["steps"], curve["reward"]) if r is not None]
    rewards = [r for r in curve["reward"] if r is not None]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, rewards, ".", alpha=0.5, label="train batch reward (finished sequences)")
    if len(rewards) >= 5:
        k = 5
        avg = [
            sum(rewards[max(0, i - k + 1) : i + 1]) / len(rewards[max(0, i - k + 1) : i + 1])
            for i in range(len(rewards))
        ]
        ax.plot(steps, avg, "-", label=f"moving average ({k} steps)")
    ax.axhline(before, color="grey", ls="--", label=f"held-out before {before:.3f}")
    ax.axhline(after, color="green", ls="--", label=f"held-out after {after:.3f}")
    ax.set(xlabel="learner step", ylabel="mean welfare reward", title=title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def train(
    spec: dict, data_dir: Path, threads: int, timeout_min: float
) -> tuple[str, dict, dict, float] | None:
    """Submit `spec` over REST to a local stack and follow it to the end: (job id, record, metrics curve,
    seconds), or None after printing why it did not succeed (rejected, failed, cancelled, timed out)."""
    from payoff.stack import LocalStack, wait_job

    print("==> starting Redis, Ray, Ray Serve and the gateway")
    with LocalStack(data_dir, num_cpus=threads) as stack, stack.client() as c:
        print(f"    gateway {stack.url}  redis {stack.redis.url}")
        resp = c.post("/v1/jobs", json=spec)
        if resp.status_code >= 300:
            print(f"job rejected ({resp.status_code}): {resp.text}", file=sys.stderr)
            return None
        jid = resp.json()["id"]
        print(f"==> submitted job {jid} (POST {stack.url}/v1/jobs); following it")
        started, last = time.monotonic(), {}

        def show(job: dict) -> None:
            line = _progress(job, spec["learner"]["steps"], started, last)
            if line:
                print(line, flush=True)

        try:
            job = wait_job(c, jid, timeout_min * 60, on_poll=show)
        except TimeoutError as e:
            print(e, file=sys.stderr)
            return None
        if job["state"] != "succeeded":
            print(f"job {jid} {job['state']}: {job.get('error')}", file=sys.stderr)
            return None
        return jid, job, c.get(f"/v1/jobs/{jid}/metrics").json(), time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="payoff demo", description=__doc__.splitlines()[0])
    p.add_argument("--spec", help="job spec to submit (default examples/demo.yaml, or demo-tiny.yaml)")
    p.add_argument(
        "--tiny",
        action="store_true",
        help="examples/demo-tiny.yaml: the tiny model warm-started on the task (~2 min)",
    )
    p.add_argument(
        "--gtalign",
        action="store_true",
        help="examples/gtalign-laptop.yaml: the four-block GTAlign recipe on the mix, held-out report per "
        "source (payoff/gtalign_demo.py; on 2 cores the spec's 24 steps take over an hour, --steps 6 "
        "with batch_size 4 ~35 min; builds smollm2-gtalign first, ~30 min, once)",
    )
    p.add_argument("--steps", type=int, help="learner steps (default: the spec's)")
    p.add_argument("--seed", type=int, help="the job's seed (--gtalign; default: the spec's)")
    p.add_argument("--eval-limit", type=int, default=20, help="held-out prompts per set (--gtalign)")
    p.add_argument("--engine", choices=["transformers", "vllm"], help="rollout engine (default: the spec's)")
    p.add_argument("--eval-samples", type=int, help="samples per held-out question (default 2; --gtalign 1)")
    p.add_argument("--out", help="where the PNG and JSON go (default <data dir>/demo)")
    p.add_argument("--timeout-min", type=float, default=30.0, help="give up on the job after this long")
    args = p.parse_args(argv)
    if args.gtalign:
        from payoff.gtalign_demo import run

        return run(args)
    args.eval_samples = args.eval_samples or 2

    from services.config import Settings

    spec_path = Path(args.spec or (TINY_SPEC if args.tiny else DEFAULT_SPEC))
    spec = yaml.safe_load(spec_path.read_text())
    if args.steps:
        spec["learner"]["steps"] = args.steps
    if args.engine:
        spec["rollout"]["engine"] = args.engine
    base = Settings.from_env()
    out = Path(args.out) if args.out else base.data_dir / "demo"
    out.mkdir(parents=True, exist_ok=True)
    task = spec["tasks"][0]
    train_opts = dict(task.get("options") or {})
    held_opts = {**train_opts, "split": "heldout", "every": HELDOUT_EVERY}
    r = spec["rollout"]
    t_start = time.monotonic()

    from services.models import resolve_model

    model_path = str(resolve_model(spec["model"]["path"]))
    threads = os.cpu_count() or 1
    print(
        f"==> payoff demo: {spec['algorithm']} on {task['env']} with {spec['model']['path']} "
        f"({spec['learner']['steps']} steps)\n==> held-out evaluation of the initial policy"
    )
    before = evaluate(
        model_path,
        task["env"],
        held_opts,
        args.eval_samples,
        r["max_response_tokens"],
        r["temperature"],
        threads,
        "before",
    )

    ran = train(spec, base.data_dir, threads, args.timeout_min)
    if ran is None:
        return 1
    jid, job, curve, train_s = ran
    summary = job.get("summary") or {}

    final = base.data_dir / "jobs" / jid / "final"
    print(f"==> held-out evaluation of the trained policy ({final})")
    after = evaluate(
        str(final),
        task["env"],
        held_opts,
        args.eval_samples,
        r["max_response_tokens"],
        r["temperature"],
        threads,
        "after",
    )
    result = {
        "job_id": jid,
        "model": spec["model"]["path"],
        "algorithm": spec["algorithm"],
        "task": task["env"],
        "split": {
            "train": train_opts,
            "heldout": held_opts,
            "note": "the job trains on GTAlign's ambig_qa train file without the test prompts; both "
            f"evaluations use every {HELDOUT_EVERY}th question of its test file",
        },
        "heldout_before": round(before["mean_reward"], 4),
        "heldout_after": round(after["mean_reward"], 4),
        "margin": round(after["mean_reward"] - before["mean_reward"], 4),
        "eval": {
            "before": before,
            "after": after,
            "temperature": r["temperature"],
            "max_tokens": r["max_response_tokens"],
            "samples_per_question": args.eval_samples,
        },
        "steps": curve["steps"],
        "train_reward": curve["reward"],
        "train_seconds": round(train_s, 1),
        "total_seconds": round(time.monotonic() - t_start, 1),
        "policy": str(final),
        "queue": summary.get("queue"),
        "rollout": summary.get("rollout"),
        "spec": spec,
    }
    json_path, png_path = out / "summary.json", out / "reward_curve.png"
    json_path.write_text(json.dumps(result, indent=2))
    plot(
        curve,
        result["heldout_before"],
        result["heldout_after"],
        png_path,
        f"{spec['algorithm']} on {task['env']} ({spec['model']['path']})",
    )
    print(
        f"==> held-out mean reward {result['heldout_before']:.3f} -> {result['heldout_after']:.3f} "
        f"({result['margin']:+.3f}) in {result['total_seconds'] / 60:.1f} min\n"
        f"    reward curve: {png_path}\n    summary:      {json_path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

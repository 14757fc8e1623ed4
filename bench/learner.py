"""P4: learner completions trained per second vs TRL's GRPOTrainer, same tiny model, prompts, group size,
batch and completion length, on this machine in the same run.

Ours runs the real asynchronous pipeline: a rollout process (transformers engine, 4 completions of 32
tokens per prompt, reward = digits in the completion, the same rule as the TRL run) feeding the job's
Redis stream, and a learner process (GRPO, batches of 8 = 2 prompts x 4) pushing weights back after
every step. TRL runs in its own venv (`make bench-env`): its transformers range differs from ours.
Run i pairs our i-th window of `--steps` steps (one pipeline, after 2 warm-up steps) with the i-th fresh
TRL process (train() timed, imports not), so the spread covers both sides' noise.

    python -m bench.learner --trl-python .venv-bench/bin/python [--steps 20] [--runs 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report import make_entry, write_results
from bench.trl_grpo import PROMPTS


def _rollout(url: str, job: str, model: str, stop) -> None:
    import torch

    from rollout.engine import GenRequest, SamplingParams, make_engine
    from services.config import redis_client
    from services.queue import QueueConfig, TrajectoryQueue
    from services.schemas import NOT_GENERATED, Trajectory, new_id
    from services.weights import WeightReceiver, WeightSyncConfig

    torch.set_num_threads(1)
    engine = make_engine("transformers", model, threads=1)
    client = redis_client(url)
    WeightReceiver(
        client,
        job,
        "rollout-0",
        config=WeightSyncConfig(heartbeat_s=0.5),
        apply=lambda named, v: engine.load_weights(named, v, "keep"),
    ).start()
    queue = TrajectoryQueue(client, job, QueueConfig(max_len=32, put_timeout_s=600))
    k = 0
    while not stop.is_set():
        # one engine call per two groups (8 sequences): the learner's batch
        prompts = [
            engine.chat_prompt_ids([{"role": "user", "content": PROMPTS[(k + j) % len(PROMPTS)]}])
            for j in range(2)
        ]
        reqs = [
            GenRequest(prompt_ids=prompts[j], params=SamplingParams(max_tokens=32, seed=(k + j) * 4 + i))
            for j in range(2)
            for i in range(4)
        ]
        outs = engine.generate(reqs)
        trajs = []
        for j in range(2):
            group, prompt = new_id(), prompts[j]
            for o in outs[4 * j : 4 * j + 4]:
                text = engine.tokenizer.decode(o.token_ids, skip_special_tokens=True)
                r = float(sum(ch.isdigit() for ch in text))
                n = len(prompt) + len(o.token_ids)
                trajs.append(
                    Trajectory(
                        job_id=job,
                        episode_id=new_id(),
                        group_id=group,
                        token_ids=prompt + o.token_ids,
                        logprobs=[0.0] * len(prompt) + o.logprobs,
                        versions=[NOT_GENERATED] * len(prompt) + o.versions,
                        loss_mask=[0] * len(prompt) + [1] * len(o.token_ids),
                        rewards=[0.0] * (n - 1) + [r],
                        prompt_len=len(prompt),
                        reward=r,
                        finish_reason=o.finish_reason if o.finish_reason != "abort" else "stop",
                    )
                )
        queue.put_many(trajs)
        k += 2


def ours(model: str, steps: int, runs: int = 1) -> list[float]:
    """Completions trained per second in each of `runs` consecutive windows of `steps` steps."""
    import torch

    from learner.trainer import Learner, LearnerConfig
    from services.queue import QueueConfig
    from services.redis_server import RedisServer

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d, RedisServer(Path(d) / "redis") as server:
        ctx = mp.get_context("spawn")
        stop = ctx.Event()
        proc = ctx.Process(target=_rollout, args=(server.url, "p4", model, stop), daemon=True)
        proc.start()
        cfg = LearnerConfig(
            job_id="p4",
            redis_url=server.url,
            model=model,
            algorithm="grpo",
            batch_size=8,
            group_size=4,
            learning_rate=1e-5,
            steps=steps * runs + 2,
            checkpoint_every=10_000,
            checkpoint_dir=str(Path(d) / "ckpt"),
            get_timeout_s=300,
            queue=QueueConfig(max_len=32, max_staleness=8),
        )
        learner = Learner(cfg)
        learner.run(steps=2)  # warm-up: first batches wait for the rollout process to start
        rates = []
        for w in range(runs):
            t0 = time.perf_counter()
            learner.run(steps=2 + steps * (w + 1))  # run() takes the total step count
            rates.append(steps * 8 / (time.perf_counter() - t0))
        stop.set()
        proc.join(30)
        proc.kill()
    return rates


def trl(python: str, model: str, steps: int) -> float:
    res = subprocess.run(
        [python, str(Path(__file__).with_name("trl_grpo.py")), model, "--steps", str(steps)],
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    if res.returncode:
        sys.exit(f"TRL run failed: {res.stderr[-2000:]}")
    return float(json.loads(res.stdout.strip().splitlines()[-1])["completions_per_s"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.learner", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny-qwen3")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--trl-python", default=".venv-bench/bin/python")
    p.add_argument("--json")
    args = p.parse_args(argv)
    from services.models import resolve_model

    if not os.access(args.trl_python, os.X_OK):  # fail before the minutes our side takes
        sys.exit(f"{args.trl_python} not found: run `make bench-env` first")
    model = resolve_model(args.model)
    mine = ours(model, args.steps, args.runs)
    print("payoff learner: " + ", ".join(f"{r:.1f}" for r in mine) + " completions/s", flush=True)
    theirs = []
    for i in range(args.runs):
        theirs.append(trl(args.trl_python, model, args.steps))
        print(f"TRL GRPOTrainer run {i + 1}/{args.runs}: {theirs[-1]:.1f} completions/s", flush=True)
    entry = make_entry(
        "P4",
        "learner completions/s vs TRL GRPOTrainer",
        [m / t for m, t in zip(mine, theirs)],
        reference="TRL 1.16 GRPOTrainer, CPU fp32, same tiny model/prompts/batch 8/group 4/32 tokens",
        goal=">= 1.5",
        details={
            "ours_per_s": statistics.median(mine),
            "steps_per_run": args.steps,
            "reference_per_s": statistics.median(theirs),
            "ours_per_s_runs": mine,
            "reference_per_s_runs": theirs,
        },
    )
    print(f"P4 ratio {entry.ratio:.2f} (runs {', '.join(f'{r:.2f}' for r in entry.runs)}; goal >= 1.5)")
    if args.json:
        write_results(args.json, [entry])
    return 0


if __name__ == "__main__":
    sys.exit(main())

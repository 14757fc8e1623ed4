"""`make demo`: the largest real slice of the platform that exists, on this machine.

Until the end-to-end job lands this runs: a project-started redis-server (AOF) → two Ray rollout actors
that sample real completions from a real model on disk (transformers) with per-token logprobs and
version tags, scored by a rules check → the job's trajectory stream → a Ray learner actor reading through
the consumer group and acking → a check that every trajectory was delivered exactly once; then a
preference-game solver run from games/. Nothing here is simulated; the learner does not train yet.
Options: --model tiny-qwen3 for the tiny random model (faster), --prompts, --group-size.
"""
from __future__ import annotations

import argparse
import random
import sys
import time

from services.config import Settings, redis_client
from services.queue import QueueConfig, TrajectoryQueue
from services.redis_server import RedisServer
from services.schemas import NOT_GENERATED, Trajectory, new_id


def _arith_prompts(n: int, seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(2, 40), rng.randint(2, 40)
        out.append((f"What is {a} + {b}? Put the final answer in \\boxed{{}}.", a + b))
    return out


def _score(text: str, answer: int) -> float:
    """Rules judge: the boxed answer (or, failing that, the last number) checked by games.math_answer."""
    from games.math_answer import answers_match, last_boxed, last_number

    return 1.0 if answers_match(last_boxed(text) or last_number(text), str(answer)) else 0.0


def _rollout_actor(ray):
    @ray.remote(num_cpus=0.5)
    class RolloutActor:
        """Samples completions with transformers; a stand-in until rollout/ ships its engine + Serve app."""

        def __init__(self, model_path: str, url: str, job_id: str, version: int = 0):
            import torch

            from services.models import load_model
            torch.set_num_threads(1)
            self.torch = torch
            self.model, self.tok = load_model(model_path)
            self.q = TrajectoryQueue(redis_client(url), job_id)
            self.job_id, self.version = job_id, version

        def play(self, prompts: list[tuple[str, int]], group_size: int, max_new_tokens: int, seed: int):
            torch, tok = self.torch, self.tok
            torch.manual_seed(seed)
            trajs, t0, n_tokens = [], time.monotonic(), 0
            for prompt, answer in prompts:
                group = new_id()
                ids = tok.apply_chat_template([{"role": "user", "content": prompt}],
                                              add_generation_prompt=True, return_tensors="pt",
                                              return_dict=True)["input_ids"]
                batch = ids.repeat(group_size, 1)
                out = self.model.generate(input_ids=batch, attention_mask=torch.ones_like(batch),
                                          do_sample=True, temperature=1.0, max_new_tokens=max_new_tokens,
                                          output_logits=True, return_dict_in_generate=True,
                                          pad_token_id=tok.pad_token_id)
                gen = out.sequences[:, ids.shape[1]:]
                logp = torch.stack(out.logits, 1).float().log_softmax(-1).gather(-1, gen[..., None])[..., 0]
                for row in range(group_size):
                    tokens = gen[row].tolist()
                    stop = tokens.index(tok.eos_token_id) + 1 if tok.eos_token_id in tokens else len(tokens)
                    tokens, lp = tokens[:stop], logp[row, :stop].tolist()
                    n_tokens += len(tokens)
                    text = tok.decode(tokens, skip_special_tokens=True)
                    reward = _score(text, answer)
                    p = ids[0].tolist()
                    trajs.append(Trajectory(
                        job_id=self.job_id, episode_id=new_id(), group_id=group, env="math",
                        data_source="demo-arith", token_ids=p + tokens,
                        logprobs=[0.0] * len(p) + [min(0.0, x) for x in lp],
                        versions=[NOT_GENERATED] * len(p) + [self.version] * len(tokens),
                        loss_mask=[0] * len(p) + [1] * len(tokens),
                        rewards=[0.0] * (len(p) + len(tokens) - 1) + [reward], prompt_len=len(p),
                        finish_reason="stop" if stop < max_new_tokens or tokens[-1:] == [tok.eos_token_id]
                        else "length", reward=reward, meta={"answer": answer}))
            self.q.put_many(trajs)
            return [t.id for t in trajs], n_tokens, time.monotonic() - t0

    return RolloutActor


def _learner_actor(ray):
    @ray.remote(num_cpus=0.5)
    class QueueReader:
        """Reads the job's stream through the consumer group and acks; training arrives with learner/."""

        def __init__(self, url: str, job_id: str):
            self.q = TrajectoryQueue(redis_client(url), job_id, QueueConfig(claim_idle_ms=5_000))

        def consume(self, expect: int, batch_size: int, timeout_s: float) -> dict:
            seen, rewards, tokens, batches = [], [], 0, 0
            deadline = time.monotonic() + timeout_s
            while len(seen) < expect and time.monotonic() < deadline:
                b = self.q.get("learner-0", batch_size, block_ms=500)
                for t in b.trajectories:
                    seen.append(t.id)
                    rewards.append(t.reward)
                    tokens += int(t.loss_mask.sum())  # numpy sum: uint8 would wrap in builtin sum
                batches += bool(len(b))
                self.q.ack(b)
            return {"ids": seen, "batches": batches, "tokens": tokens,
                    "mean_reward": sum(rewards) / max(1, len(rewards))}

    return QueueReader


def _solver_demo(iters: int = 2000) -> str:
    """COMAL (INPO inside) on the 3-action preference game of spec §3.4: last iterate → [4/11, 3/11, 4/11]."""
    from games import dynamics

    traj = dynamics.run(dynamics.make_rule("comal"), dynamics.COMAL_P, dynamics.COMAL_PI0, iters)
    pi = ", ".join(f"{p:.4f}" for p in traj.final)
    return (f"COMAL on the spec §3.4 game, {iters} iterations: policy [{pi}] "
            f"(Nash [0.3636, 0.2727, 0.3636]), exploitability {traj.exploitability[-1]:.2e}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="payoff-demo", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m", help="smollm2-135m (default), tiny-qwen3, or a path")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--rollout-actors", type=int, default=2)
    args = p.parse_args(argv)
    settings = Settings.from_env()
    step = lambda msg: print(f"==> {msg}", flush=True)  # noqa: E731

    from services.models import resolve_model
    from services.ray_utils import init_ray

    server = None
    if settings.redis_url:
        url = settings.redis_url
        step(f"using external Redis at {url}")
    else:
        server = RedisServer(settings.data_dir / "redis-demo").start()
        url = server.url
        step(f"started redis-server at {url} (AOF in {server.data_dir})")
    try:
        model_path = resolve_model(args.model, settings)
        step(f"model {args.model} at {model_path}")
        import ray
        t0 = time.monotonic()
        init_ray(num_cpus=2)
        step(f"Ray up in {time.monotonic() - t0:.1f}s")
        job_id = f"demo-{new_id()[:8]}"
        queue = TrajectoryQueue(redis_client(url), job_id)
        Rollout, Reader = _rollout_actor(ray), _learner_actor(ray)
        prompts = _arith_prompts(args.prompts, seed=0)
        shards = [prompts[i::args.rollout_actors] for i in range(args.rollout_actors)]
        actors = [Rollout.remote(model_path, url, job_id) for _ in shards]
        reader = Reader.remote(url, job_id)
        expect = len(prompts) * args.group_size
        step(f"job {job_id}: {len(actors)} rollout actors x {args.group_size} samples of {len(prompts)} "
             f"prompts -> Redis stream -> learner consumer group")
        t0 = time.monotonic()
        consumed = reader.consume.remote(expect, batch_size=8, timeout_s=600)
        produced = ray.get([a.play.remote(s, args.group_size, args.max_new_tokens, seed=i)
                            for i, (a, s) in enumerate(zip(actors, shards))])
        result = ray.get(consumed)
        wall = time.monotonic() - t0
        sent = [i for ids, _, _ in produced for i in ids]
        gen_tokens = sum(n for _, n, _ in produced)
        stats = queue.stats()
        exactly_once = sorted(result["ids"]) == sorted(sent)
        print(f"\n  trajectories produced     {len(sent)}")
        print(f"  generated tokens          {gen_tokens} ({gen_tokens / wall:.0f} tok/s end to end)")
        print(f"  consumed in batches       {result['batches']} (mean reward {result['mean_reward']:.3f})")
        print(f"  exactly once              {exactly_once}")
        print(f"  queue after               depth {stats['depth']}, pending {stats['pending']}, "
              f"acked {stats['acked']}, dead {stats['dead_letters']}")
        print(f"  solver                    {_solver_demo()}\n")
        queue.delete()
        ray.shutdown()
        if not exactly_once or stats["depth"]:
            print("demo FAILED: trajectories lost or duplicated", file=sys.stderr)
            return 1
        step(f"demo finished in {wall:.1f}s")
        return 0
    finally:
        if server:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())

"""P5 and P3 for the rollout tier, each a ratio against a reference measured in the same run.

P5: generated tokens/s through the Ray Serve rollout deployment (concurrent requests, batched by Serve)
    vs the same engine called offline with the same batch.           goal >= 0.9
P3: one weight push through services.weight_sync (manifest, Redis control plane, rendezvous, bucketed
    broadcast, CRC check, unpack) to a receiver in another process vs a raw torch.distributed gloo
    broadcast of the same bytes between two processes.              goal <= 1.2

    python -m bench.rollout [--model smollm2-135m] [--runs 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time

import torch

from rollout.engine import GenRequest, SamplingParams


def _requests(engine, n: int, tokens: int) -> list[GenRequest]:
    prompt = engine.chat_prompt_ids([{"role": "user", "content": "Tell me about payoff matrices."}])
    # same prompts and seeds on both sides, so both generate the same tokens
    return [GenRequest(prompt_ids=prompt, params=SamplingParams(max_tokens=tokens, seed=i))
            for i in range(n)]


def p5_serve_vs_engine(model: str, batch: int, tokens: int, runs: int) -> dict:
    import ray
    from ray import serve

    from rollout.engine import make_engine
    from rollout.serve import RolloutConfig, build_app
    from services.ray_utils import init_ray

    engine = make_engine("transformers", model, threads=2)
    raw, served = [], []
    init_ray(num_cpus=2)
    handle = serve.run(build_app(RolloutConfig(model=model, cpus_per_replica=2, max_batch_size=batch,
                                               batch_wait_s=0.05)), name="bench-rollout", route_prefix=None)
    reqs = _requests(engine, batch, tokens)

    async def fire():
        return await asyncio.gather(*[handle.generate.remote(r) for r in reqs])

    try:
        asyncio.run(fire())  # warm-up: first batch pays lazy init
        for _ in range(runs):
            t0 = time.perf_counter()
            outs = asyncio.run(fire())
            served.append(sum(len(o.token_ids) for o in outs) / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            outs = engine.generate(reqs)
            raw.append(sum(len(o.token_ids) for o in outs) / (time.perf_counter() - t0))
    finally:
        serve.delete("bench-rollout")
        ray.shutdown()
    ratio = statistics.median(s / r for s, r in zip(served, raw))
    return {"id": "P5", "name": "rollout tokens/s through Ray Serve vs raw engine", "ratio": ratio,
            "ours_per_s": statistics.median(served), "reference_per_s": statistics.median(raw),
            "reference": f"transformers engine offline, same model ({model}), batch {batch} x {tokens} tokens",
            "runs": runs, "goal": ">= 0.9"}


def _raw_member(rank: int, port: int, nbytes: int, reps: int, out) -> None:
    store = torch.distributed.TCPStore("127.0.0.1", port, 2, rank == 0,
                                       timeout=datetime.timedelta(seconds=120))
    pg = torch.distributed.ProcessGroupGloo(store, rank, 2, datetime.timedelta(seconds=120))
    buf = torch.ones(nbytes, dtype=torch.uint8) if rank == 0 else torch.empty(nbytes, dtype=torch.uint8)
    pg.broadcast([buf]).wait()  # warm-up
    times = []
    for _ in range(reps):
        pg.barrier().wait()
        t0 = time.perf_counter()
        pg.broadcast([buf]).wait()
        times.append(time.perf_counter() - t0)
    if rank == 0:
        out.put(times)


def raw_broadcast(nbytes: int, reps: int) -> list[float]:
    from services.redis_server import free_port

    ctx, port = mp.get_context("spawn"), free_port()
    out = ctx.Queue()
    procs = [ctx.Process(target=_raw_member, args=(r, port, nbytes, reps, out)) for r in (0, 1)]
    for p in procs:
        p.start()
    times = out.get(timeout=600)
    for p in procs:
        p.join(60)
    return times


def _receiver(url: str, job: str, ready) -> None:
    from services.config import redis_client
    from services.weight_sync import WeightReceiver, WeightSyncConfig

    receiver = WeightReceiver(redis_client(url), job, "bench", lambda named, v: None,
                              config=WeightSyncConfig(timeout_s=120, heartbeat_s=0.5)).start()
    ready.set()
    while receiver:  # the parent kills this process when done
        time.sleep(1)


def p3_push_vs_broadcast(model: str, runs: int) -> dict:
    from services.config import redis_client
    from services.models import load_model
    from services.redis_server import RedisServer
    from services.weight_sync import WeightSender, WeightSyncConfig

    m, _ = load_model(model)
    named = list(m.state_dict().items())
    nbytes = sum(t.numel() * t.element_size() for _, t in named)
    ours = []
    with tempfile.TemporaryDirectory() as d, RedisServer(d) as server:
        ctx = mp.get_context("spawn")
        ready = ctx.Event()
        proc = ctx.Process(target=_receiver, args=(server.url, "bench", ready), daemon=True)
        proc.start()
        ready.wait(120)
        sender = WeightSender(redis_client(server.url), "bench", WeightSyncConfig(timeout_s=120))
        sender.push(named, version=1, replicas=["bench"])  # warm-up
        for v in range(runs):
            res = sender.push(named, version=2 + v, replicas=["bench"])
            assert res.ok == ["bench"], res.failed
            ours.append(res.seconds)
        proc.kill()
    raw = raw_broadcast(nbytes, runs)
    ratio = statistics.median(ours) / statistics.median(raw)
    return {"id": "P3", "name": "weight push vs raw torch.distributed broadcast", "ratio": ratio,
            "ours_s": statistics.median(ours), "reference_s": statistics.median(raw), "bytes": nbytes,
            "reference": f"gloo broadcast of the same {nbytes / 2**20:.0f} MiB between two processes",
            "runs": runs, "goal": "<= 1.2"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.rollout", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--only", choices=["P3", "P5"])
    p.add_argument("--json")
    args = p.parse_args(argv)
    results = []
    if args.only in (None, "P3"):
        results.append(p3_push_vs_broadcast(args.model, args.runs))
        print(f"P3 push/broadcast {results[-1]['ratio']:.2f}x ({results[-1]['ours_s']:.3f}s vs "
              f"{results[-1]['reference_s']:.3f}s for {results[-1]['bytes'] / 2**20:.0f} MiB; goal <= 1.2)",
              flush=True)
    if args.only in (None, "P5"):
        results.append(p5_serve_vs_engine(args.model, args.batch, args.tokens, args.runs))
        print(f"P5 serve/engine {results[-1]['ratio']:.2f}x ({results[-1]['ours_per_s']:.0f} vs "
              f"{results[-1]['reference_per_s']:.0f} tok/s; goal >= 0.9)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

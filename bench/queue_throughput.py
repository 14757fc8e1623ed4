"""P2: trajectory queue put+get+ack throughput vs `redis-benchmark` XADD of the same payload.

Both run against one project-started redis-server in the same run, so the ratio is what matters on a
noisy machine. Reference: redis-benchmark (50 connections, no pipelining: one request at a time per
connection) XADD of a payload the size of one encoded trajectory. Ours: a producer process putting
groups of trajectories and a learner process getting batches and acking them, concurrently, like the
real system; a trajectory counts once it has been put, delivered, decoded, validated and acked.

    python -m bench.queue_throughput [--tokens 1024] [--runs 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench.report import make_entry, write_results
from services.codec import encode
from services.config import redis_client
from services.queue import QueueConfig, TrajectoryQueue
from services.redis_server import RedisServer
from services.schemas import NOT_GENERATED, Trajectory


def sample_trajectory(job_id: str, tokens: int, i: int = 0) -> Trajectory:
    prompt = tokens // 2
    return Trajectory(
        job_id=job_id,
        episode_id=f"e{i}",
        group_id=f"g{i // 8}",
        token_ids=[(7 * k + i) % 150_000 for k in range(tokens)],
        logprobs=[0.0] * prompt + [-0.25 - (k % 13) / 7 for k in range(tokens - prompt)],
        versions=[NOT_GENERATED] * prompt + [3] * (tokens - prompt),
        loss_mask=[0] * prompt + [1] * (tokens - prompt),
        rewards=[0.0] * (tokens - 1) + [1.0],
        prompt_len=prompt,
        reward=1.0,
        env="bench",
    )


def _producer(url: str, job: str, n: int, tokens: int, group: int, ready, go) -> None:
    q = TrajectoryQueue(redis_client(url), job, QueueConfig(max_len=4096, put_timeout_s=120))
    trajs = [sample_trajectory(job, tokens, i) for i in range(n)]  # built before the clock starts
    ready.set()
    go.wait()
    for k in range(0, n, group):
        q.put_many(trajs[k : k + group])


def _consumer(url: str, job: str, n: int, batch: int, out) -> None:
    q = TrajectoryQueue(redis_client(url), job)
    got = 0
    while got < n:
        b = q.get("bench-learner", batch, block_ms=1000)
        got += len(b)
        q.ack(b)
    out.put(got)


def run_queue(url: str, n: int, tokens: int, group: int, batch: int) -> float:
    """Trajectories/s through put + get + ack with producer and consumer in separate processes."""
    job = f"bench-{os.getpid()}-{time.monotonic_ns()}"
    ctx = mp.get_context("spawn")
    ready, go, out = ctx.Event(), ctx.Event(), ctx.Queue()
    prod = ctx.Process(target=_producer, args=(url, job, n, tokens, group, ready, go))
    cons = ctx.Process(target=_consumer, args=(url, job, n, batch, out))
    prod.start()
    ready.wait(120)
    cons.start()
    time.sleep(1.0)  # let the consumer import and connect before the clock starts
    t0 = time.perf_counter()
    go.set()
    got = out.get(timeout=600)
    wall = time.perf_counter() - t0
    prod.join(30)
    cons.join(30)
    TrajectoryQueue(redis_client(url), job).delete()
    assert got == n, f"consumer saw {got} of {n}"
    return n / wall


def find_redis_benchmark() -> str:
    path = shutil.which("redis-benchmark")
    if not path:
        sys.exit(
            "redis-benchmark not found: install Debian's redis-tools "
            "(`apt-get install redis-tools`; `make bench` does this when run as root)"
        )
    return path


def run_reference(port: int, payload_bytes: int, n: int, clients: int = 50, pipeline: int = 1) -> float:
    """redis-benchmark XADD ops/s of a payload of the given size (stream capped like our acked queue)."""
    with tempfile.TemporaryDirectory() as d:
        payload = os.path.join(d, "payload")
        with open(payload, "w") as f:
            f.write("x" * payload_bytes)
        # payload as the last argument read from stdin (-x) keeps a multi-KB value off the command line
        cmd = [
            find_redis_benchmark(),
            "-p",
            str(port),
            "-n",
            str(n),
            "-c",
            str(clients),
            "-P",
            str(pipeline),
            "-q",
            "-x",
            "XADD",
            "bench:ref",
            "MAXLEN",
            "~",
            "1000",
            "*",
            "d",
        ]
        with open(payload, "rb") as stdin:
            res = subprocess.run(cmd, stdin=stdin, capture_output=True, text=True, timeout=300)
    m = re.search(r"([\d.]+) requests per second", res.stdout.replace("\r", "\n"))
    if res.returncode or not m:
        raise RuntimeError(f"redis-benchmark failed: {res.stdout[-300:]} {res.stderr[-300:]}")
    return float(m.group(1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.queue_throughput", description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=int, default=1024, help="tokens per trajectory (half prompt)")
    p.add_argument("--n", type=int, default=4000, help="trajectories per run")
    p.add_argument("--group", type=int, default=8, help="trajectories per put (one GRPO group)")
    p.add_argument("--batch", type=int, default=32, help="trajectories per learner get/ack")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--json", help="write the result object here")
    args = p.parse_args(argv)
    payload = len(encode(sample_trajectory("bench", args.tokens)))
    ratios, ours, refs = [], [], []
    with tempfile.TemporaryDirectory() as d, RedisServer(d) as server:
        for run in range(args.runs):
            ref = run_reference(server.port, payload, n=args.n * 3)
            mine = run_queue(server.url, args.n, args.tokens, args.group, args.batch)
            ours.append(mine)
            refs.append(ref)
            ratios.append(mine / ref)
            print(
                f"run {run + 1}/{args.runs}: queue {mine:,.0f} traj/s, redis-benchmark XADD {ref:,.0f} "
                f"ops/s, ratio {mine / ref:.3f}",
                flush=True,
            )
    entry = make_entry(
        "P2",
        "queue put+get+ack vs redis-benchmark XADD",
        ratios,
        reference=("redis-benchmark XADD -c 50 -P 1, same payload, same server"),
        goal=">= 0.5",
        details={
            "payload_bytes": payload,
            "tokens": args.tokens,
            "trajectories_per_run": args.n,
            "ours_per_s": statistics.median(ours),
            "reference_per_s": statistics.median(refs),
            "ours_per_s_runs": ours,
            "reference_per_s_runs": refs,
        },
    )
    print(
        f"P2 queue/XADD ratio {entry.ratio:.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}; "
        f"payload {payload} B; goal >= 0.5)"
    )
    if args.json:
        write_results(args.json, [entry])
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""P5 and P3 for the rollout tier, each a ratio against a reference measured in the same run.

P5: generated tokens/s through the Ray Serve rollout deployment (concurrent requests, batched by Serve)
    vs the same engine called offline with the same batch.           goal >= 0.9
P3: one weight push through services.weights (manifest, Redis control plane, group, bucketed
    broadcast, CRC check, unpack) to a receiver in another process vs a raw torch.distributed
    broadcast of the same bytes between two processes (gloo on CPU; `--backend nccl` puts both
    sides on GPUs, cuda:0 -> cuda:1, so it needs two).               goal <= 1.2
    Once per transport (`--transport`, default both): id "P3" is the default transport
    (WeightSyncConfig().transport), "P3-<name>" the other. Each is measured after one warm-up push, so
    `persistent` reuses its group (the steady state; the warm-up's time is in details.first_push_s)
    and `per_push` pays its rendezvous in every push.
    What the two sides include: the push also plans, announces (Redis), checksums both ends, unpacks and
    waits for the apply ack (the bench's apply is a no-op, so the engine's copy into its parameters is in
    neither side); the raw broadcast gets a preallocated buffer and a barrier. The model's state_dict
    lists its tied embedding twice: the reference broadcasts those bytes twice (`bytes`), the push sends
    them once, as the learner's push does (`wire_bytes`). `details.account_s` is the push's time account.
Each run gives one ratio (P5: served/raw of the same batch; P3: push i / raw broadcast i).

    python -m bench.rollout [--model smollm2-135m] [--runs 3] [--json out.json] [--only P3|P5]
                            [--transport per_push|persistent|both]
                            [--engine vllm] [--backend nccl]      # GPU machine, see bench/README.md
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import multiprocessing as mp
import statistics
import sys
import tempfile
import time

import torch

from bench.report import Entry, make_entry, write_results
from rollout.engine import GenRequest, SamplingParams


def _requests(engine, n: int, tokens: int) -> list[GenRequest]:
    prompt = engine.chat_prompt_ids([{"role": "user", "content": "Tell me about payoff matrices."}])
    # same prompts and seeds on both sides, so both generate the same tokens
    return [GenRequest(prompt_ids=prompt, params=SamplingParams(max_tokens=tokens, seed=i)) for i in range(n)]


def p5_serve_vs_engine(
    model: str, batch: int, tokens: int, runs: int, engine_kind: str = "transformers"
) -> Entry:
    import ray
    from ray import serve

    from rollout.engine import make_engine
    from rollout.serve import RolloutConfig, build_app
    from services.ray_utils import init_ray

    gpu = torch.cuda.is_available()
    # raw engine (this process) and the Serve replica share the machine: on a GPU each gets half of it
    opts: dict = (
        {"gpu_memory_utilization": 0.4}
        if engine_kind == "vllm" and gpu
        else {"threads": 2}
        if engine_kind == "transformers" and not gpu
        else {}
    )
    engine = make_engine(engine_kind, model, **opts)
    raw, served = [], []
    init_ray(num_cpus=2)
    handle = serve.run(
        build_app(
            RolloutConfig(
                model=model,
                engine=engine_kind,
                engine_options=opts,
                cpus_per_replica=2 if not gpu else 1,
                gpus_per_replica=0.5 if gpu else 0,
                max_batch_size=batch,
                batch_wait_s=0.05,
            )
        ),
        name="bench-rollout",
        route_prefix=None,
    )
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
    return make_entry(
        "P5",
        "rollout tokens/s through Ray Serve vs raw engine",
        [s / r for s, r in zip(served, raw)],
        reference=f"{engine_kind} engine offline, same model ({model}), batch {batch} x {tokens} tokens",
        goal=">= 0.9",
        details={
            "ours_tok_per_s": statistics.median(served),
            "engine": engine_kind,
            "reference_tok_per_s": statistics.median(raw),
            "gpu": gpu,
            "ours_tok_per_s_runs": served,
            "reference_tok_per_s_runs": raw,
        },
    )


def _device(backend: str, rank: int) -> torch.device:
    """gloo: CPU; nccl: one GPU per member (NCCL refuses two ranks on one device)."""
    if backend != "nccl":
        return torch.device("cpu")
    dev = torch.device("cuda", rank % torch.cuda.device_count())
    torch.cuda.set_device(dev)
    return dev


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":  # NCCL's wait() only orders streams; time until the bytes have landed
        torch.cuda.synchronize(dev)


def _raw_member(rank: int, port: int, nbytes: int, reps: int, backend: str, out) -> None:
    timeout = datetime.timedelta(seconds=120)
    store = torch.distributed.TCPStore("127.0.0.1", port, 2, rank == 0, timeout=timeout)
    dev = _device(backend, rank)
    if backend == "nccl":
        opts = torch.distributed.ProcessGroupNCCL.Options()
        opts._timeout = timeout
        pg = torch.distributed.ProcessGroupNCCL(store, rank, 2, opts)
    else:
        pg = torch.distributed.ProcessGroupGloo(store, rank, 2, timeout)
    buf = (torch.ones if rank == 0 else torch.empty)(nbytes, dtype=torch.uint8, device=dev)
    pg.broadcast([buf]).wait()  # warm-up
    _sync(dev)
    times = []
    for _ in range(reps):
        pg.barrier().wait()
        _sync(dev)
        t0 = time.perf_counter()
        pg.broadcast([buf]).wait()
        _sync(dev)
        times.append(time.perf_counter() - t0)
    if rank == 0:
        out.put(times)


def raw_broadcast(nbytes: int, reps: int, backend: str = "gloo") -> list[float]:
    from services.redis_server import free_port

    ctx, port = mp.get_context("spawn"), free_port()
    out = ctx.Queue()
    procs = [ctx.Process(target=_raw_member, args=(r, port, nbytes, reps, backend, out)) for r in (0, 1)]
    for p in procs:
        p.start()
    times = out.get(timeout=600)
    for p in procs:
        p.join(60)
    return times


def _receiver(url: str, job: str, backend: str, ready) -> None:
    from services.config import redis_client
    from services.weights import WeightReceiver, WeightSyncConfig

    # the transport is the sender's choice, named in each announcement
    receiver = WeightReceiver(
        redis_client(url),
        job,
        "bench",
        lambda named, v: None,
        device=_device(backend, 1),
        config=WeightSyncConfig(timeout_s=120, heartbeat_s=0.5),
    ).start()
    ready.set()
    while receiver:  # the parent kills this process when done
        time.sleep(1)


def p3_transports(choice: str) -> list[str]:
    """The transports `--transport` selects, the default one (reported as "P3") first."""
    from services.weights import TRANSPORTS, WeightSyncConfig

    default = WeightSyncConfig().transport
    names = sorted(TRANSPORTS, key=lambda t: (t != default, t)) if choice == "both" else [choice]
    return names


def p3_id(transport: str) -> str:
    from services.weights import WeightSyncConfig

    return "P3" if transport == WeightSyncConfig().transport else f"P3-{transport}"


def _account(results) -> dict[str, float]:
    """Median seconds by phase over the timed pushes: the sender's (overlapping: pack and checksum run
    while earlier buckets are on the wire) and, prefixed `replica_`, the receiver's."""
    rows = [
        {**r.account, **{f"replica_{k}": v for k, v in r.replicas.get("bench", {}).items()}} for r in results
    ]
    return {k: statistics.median(row.get(k, 0.0) for row in rows) for k in rows[0]} if rows else {}


def _pushes(url: str, named, transports: list[str], runs: int, backend: str) -> dict[str, tuple]:
    """Per transport: (seconds of the warm-up push, seconds of each of `runs` timed pushes, their median
    time account, bytes on the wire per push)."""
    from services.config import redis_client
    from services.weights import WeightSender, WeightSyncConfig

    out, version = {}, 0
    for t in transports:  # one after the other: a push over another transport drops a persistent group
        sender = WeightSender(
            redis_client(url), "bench", WeightSyncConfig(backend=backend, timeout_s=120, transport=t)
        )
        results = []
        for _ in range(runs + 1):
            version += 1  # versions only grow: an ack is "applied this version or a later one"
            res = sender.push(named, version=version, replicas=["bench"])
            assert res.ok == ["bench"], res.failed
            results.append(res)
        out[t] = results[0].seconds, [r.seconds for r in results[1:]], _account(results[1:]), res.bytes
        sender.close()
    return out


def p3_push_vs_broadcast(
    model: str, runs: int, backend: str = "gloo", transports: list[str] | None = None
) -> list[Entry]:
    from services.models import load_model
    from services.redis_server import RedisServer

    transports = transports or p3_transports("both")
    m, _ = load_model(model)
    named = [(k, t.to(_device(backend, 0))) for k, t in m.state_dict().items()]
    nbytes = sum(t.numel() * t.element_size() for _, t in named)
    with tempfile.TemporaryDirectory() as d, RedisServer(d) as server:
        ctx = mp.get_context("spawn")
        ready = ctx.Event()
        proc = ctx.Process(target=_receiver, args=(server.url, "bench", backend, ready), daemon=True)
        proc.start()
        ready.wait(120)
        try:
            pushes = _pushes(server.url, named, transports, runs, backend)
        finally:
            proc.kill()
    raw = raw_broadcast(nbytes, runs, backend)
    entries = []
    for t in transports:
        first, ours, account, wire_bytes = pushes[t]
        entries.append(
            make_entry(
                p3_id(t),
                f"weight push ({t}) vs raw torch.distributed broadcast",
                [o / r for o, r in zip(ours, raw)],
                reference=f"{backend} broadcast of the same {nbytes / 2**20:.0f} MiB between two processes",
                goal="<= 1.2",
                details={
                    "transport": t,
                    "ours_s": statistics.median(ours),
                    "reference_s": statistics.median(raw),
                    "first_push_s": first,
                    "bytes": nbytes,
                    "wire_bytes": wire_bytes,
                    "account_s": account,
                    "backend": backend,
                    "ours_s_runs": ours,
                    "reference_s_runs": raw,
                },
            )
        )
    return entries


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.rollout", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--only", choices=["P3", "P5"])
    p.add_argument("--engine", choices=["transformers", "vllm"], default="transformers", help="P5 engine")
    p.add_argument(
        "--backend",
        choices=["gloo", "nccl"],
        default="gloo",
        help="P3 data plane; nccl needs two GPUs (sender cuda:0, receiver cuda:1)",
    )
    p.add_argument(
        "--transport",
        choices=["both", "per_push", "persistent"],
        default="both",
        help='P3 weight-sync transport(s): the default one is reported as "P3", another as "P3-<name>"',
    )
    p.add_argument("--json")
    args = p.parse_args(argv)
    results: list[Entry] = []
    if args.only in (None, "P3"):
        for e in p3_push_vs_broadcast(args.model, args.runs, args.backend, p3_transports(args.transport)):
            results.append(e)
            d = e.details
            print(
                f"{e.id} push/broadcast ({d['transport']}) {e.ratio:.2f}x ({d['ours_s']:.3f}s vs "
                f"{d['reference_s']:.3f}s for {d['bytes'] / 2**20:.0f} MiB, {args.backend}; "
                f"first push {d['first_push_s']:.3f}s; goal <= 1.2)",
                flush=True,
            )
    if args.only in (None, "P5"):
        e = p5_serve_vs_engine(args.model, args.batch, args.tokens, args.runs, args.engine)
        results.append(e)
        print(
            f"P5 serve/engine {e.ratio:.2f}x ({e.details['ours_tok_per_s']:.0f} vs "
            f"{e.details['reference_tok_per_s']:.0f} tok/s, {args.engine}; goal >= 0.9)",
            flush=True,
        )
    if args.json:
        write_results(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

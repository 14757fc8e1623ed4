"""Gateway latency: job submission and job status at a fixed request rate on loopback.

The gateway runs in its own process (uvicorn, one worker, joined to a local Ray so submissions go through
the same cluster checks as in production; the job runner is off, so jobs stay queued and only the API is
measured) against a project-started redis-server. The load generator is open-loop: request i is sent at
t0 + i/rate whether or not earlier ones finished, and its latency counts from that scheduled time, so a
slow server cannot hide its queueing (no coordinated omission).

    python -m bench.gateway [--rate 50] [--seconds 10] [--no-ray] [--json out.json]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time

import httpx

ADMIN_KEY = "bench-admin-key-0123456789abcdef"
SPEC = {"name": "bench", "model": {"path": "tiny-qwen3"}, "algorithm": "tppo",
        "tasks": [{"env": "sokoban", "max_turns": 3}],
        "rollout": {"cpus_per_replica": 0.25, "group_size": 2, "max_response_tokens": 64},
        "asynchrony": {"window_tokens": 16}, "learner": {"cpus_per_worker": 0.5, "steps": 5}}


def _serve(redis_url: str, data_dir: str, port: int, ray: bool) -> None:
    import uvicorn

    from gateway.app import build_asgi
    from gateway.settings import GatewaySettings

    if ray:
        from services.ray_utils import init_ray
        init_ray(num_cpus=1)
    settings = GatewaySettings(redis_url=redis_url, data_dir=data_dir, admin_key=ADMIN_KEY, run_jobs=False,
                               connect_ray=ray, rate_per_s=1e6, rate_burst=1_000_000)
    uvicorn.run(build_asgi(settings), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _percentiles(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {"p50_ms": round(q[49], 2), "p90_ms": round(q[89], 2), "p99_ms": round(q[98], 2),
            "max_ms": round(ms[-1], 2), "mean_ms": round(statistics.fmean(ms), 2)}


async def _open_loop(client: httpx.AsyncClient, rate: float, seconds: float, make_request) -> dict:
    n = int(rate * seconds)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    results: list = [None] * n
    t0 = time.perf_counter() + 0.05

    async def one(i: int) -> None:
        scheduled = t0 + i / rate
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        try:
            r = await make_request(client, i)
            if r.status_code >= 300:
                errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
            else:
                results[i] = r.json()
        except httpx.HTTPError as e:
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
        latencies.append(time.perf_counter() - scheduled)

    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - t0
    return {"requests": n, "achieved_rps": round(n / elapsed, 1), "errors": errors,
            **_percentiles(latencies), "results": results}


async def _run(url: str, rate: float, seconds: float) -> dict:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits,
                                 headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as admin:
        key = (await admin.post("/v1/admin/keys", json={"tenant": "bench"})).json()["key"]
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits,
                                 headers={"Authorization": f"Bearer {key}"}) as c:
        for _ in range(20):  # warm-up: connections, code paths, the cluster-resources cache
            await c.post("/v1/jobs", json=SPEC)
        submit = await _open_loop(c, rate, seconds, lambda c, i: c.post("/v1/jobs", json=SPEC))
        ids = [r["id"] for r in submit.pop("results") if r]
        status = await _open_loop(c, rate, seconds, lambda c, i: c.get(f"/v1/jobs/{ids[i % len(ids)]}"))
        status.pop("results")
    return {"submit": submit, "status": status}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.gateway", description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=50.0, help="requests per second")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--no-ray", action="store_true", help="skip the Ray cluster checks")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)

    from services.redis_server import RedisServer, free_port

    data = tempfile.mkdtemp(prefix="payoff-bench-gateway-")
    redis = RedisServer(data + "/redis").start()
    port = free_port()
    proc = mp.get_context("spawn").Process(target=_serve, args=(redis.url, data, port, not args.no_ray),
                                           daemon=True)
    proc.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or not proc.is_alive():
                raise SystemExit("the gateway did not come up")
            time.sleep(0.25)
        out = asyncio.run(_run(url, args.rate, args.seconds))
    finally:
        proc.terminate()
        proc.join(10)
        redis.stop()
    out["config"] = {"rate_rps": args.rate, "seconds": args.seconds, "ray_checks": not args.no_ray}
    for name in ("submit", "status"):
        r = out[name]
        print(f"{name:<7} {r['requests']} requests at {args.rate:g}/s (achieved {r['achieved_rps']}/s): "
              f"p50 {r['p50_ms']} ms  p90 {r['p90_ms']} ms  p99 {r['p99_ms']} ms  max {r['max_ms']} ms  "
              f"errors {r['errors'] or 0}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Gateway latency: job submission and job status at a fixed request rate on loopback.

The gateway runs in its own process (uvicorn, one worker, joined to a local Ray so submissions go through
the same cluster checks as in production; the job runner is off, so jobs stay queued and only the API is
measured) against a project-started redis-server. The load generator is open-loop: request i is sent at
t0 + i/rate whether or not earlier ones finished, and its latency counts from that scheduled time, so a
slow server cannot hide its queueing (no coordinated omission). Each run is one submit window then one
status window; P6-submit and P6-status report the p99 of each run (goal < 50 ms; a run with failed
requests does not meet it).

    python -m bench.gateway [--rate 50] [--seconds 10] [--runs 3] [--no-ray] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import sys
import tempfile
import time

import httpx

from bench.report import Entry, make_entry, write_results

ADMIN_KEY = "bench-admin-key-0123456789abcdef"
SPEC = {
    "name": "bench",
    "model": {"path": "tiny-qwen3"},
    "algorithm": "tppo",
    "tasks": [{"env": "sokoban", "max_turns": 3}],
    "rollout": {"cpus_per_replica": 0.25, "group_size": 2, "max_response_tokens": 64},
    "asynchrony": {"window_tokens": 16},
    "learner": {"cpus_per_worker": 0.5, "steps": 5},
}


def _serve(redis_url: str, data_dir: str, port: int, ray: bool) -> None:
    import uvicorn

    from gateway.app import build_asgi
    from gateway.settings import GatewaySettings, Quotas

    if ray:
        from services.ray_utils import init_ray

        init_ray(num_cpus=1)
    settings = GatewaySettings(
        redis_url=redis_url,
        data_dir=data_dir,
        admin_key=ADMIN_KEY,
        run_jobs=False,
        connect_ray=ray,
        rate_per_s=1e6,
        rate_burst=1_000_000,
        quota=Quotas(max_jobs=1_000_000),  # every submitted job stays queued (no runner): no per-tenant cap
    )
    uvicorn.run(build_asgi(settings), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _percentiles(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {
        "p50_ms": round(q[49], 2),
        "p90_ms": round(q[89], 2),
        "p99_ms": round(q[98], 2),
        "max_ms": round(ms[-1], 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


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
    return {
        "requests": n,
        "achieved_rps": round(n / elapsed, 1),
        "errors": errors,
        **_percentiles(latencies),
        "results": results,
    }


async def _run(url: str, rate: float, seconds: float, runs: int) -> list[dict]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(
        base_url=url, timeout=30, limits=limits, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    ) as admin:
        key = (await admin.post("/v1/admin/keys", json={"tenant": "bench"})).json()["key"]
    async with httpx.AsyncClient(
        base_url=url, timeout=30, limits=limits, headers={"Authorization": f"Bearer {key}"}
    ) as c:
        for _ in range(20):  # warm-up: connections, code paths, the cluster-resources cache
            await c.post("/v1/jobs", json=SPEC)
        out = []
        for _ in range(runs):
            submit = await _open_loop(c, rate, seconds, lambda c, i: c.post("/v1/jobs", json=SPEC))
            ids = [r["id"] for r in submit.pop("results") if r]
            if not ids:
                raise SystemExit(f"every submission failed: {submit['errors']}")
            status = await _open_loop(
                c, rate, seconds, lambda c, i, ids=ids: c.get(f"/v1/jobs/{ids[i % len(ids)]}")
            )
            status.pop("results")
            out.append({"submit": submit, "status": status})
    return out


def entries(runs: list[dict], config: dict) -> list[Entry]:
    out = []
    for name, what in (("submit", "POST /v1/jobs"), ("status", "GET /v1/jobs/{id}")):
        rs = [r[name] for r in runs]
        errors = sum(sum(r["errors"].values()) for r in rs)
        ref = (
            f"open-loop {config['rate_rps']:g} req/s for {config['seconds']:g} s on loopback "
            "(absolute latency, no peer)"
        )
        e = make_entry(
            f"P6-{name}",
            f"gateway {what} p99 at a fixed rate",
            [r["p99_ms"] for r in rs],
            unit="ms",
            reference=ref,
            goal="< 50",
            details={
                "p50_ms": statistics.median(r["p50_ms"] for r in rs),
                "p90_ms": statistics.median(r["p90_ms"] for r in rs),
                "max_ms": max(r["max_ms"] for r in rs),
                "errors": errors,
                "achieved_rps": [r["achieved_rps"] for r in rs],
                "runs": rs,
                **config,
            },
        )
        e.goal_met = bool(e.goal_met) and errors == 0
        out.append(e)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.gateway", description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=50.0, help="requests per second")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each load window")
    p.add_argument("--runs", type=int, default=3, help="submit+status windows (p99 spread across runs)")
    p.add_argument("--no-ray", action="store_true", help="skip the Ray cluster checks")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)

    from services.redis_server import RedisServer, free_port

    data = tempfile.mkdtemp(prefix="payoff-bench-gateway-")
    redis = RedisServer(data + "/redis").start()
    port = free_port()
    proc = mp.get_context("spawn").Process(
        target=_serve, args=(redis.url, data, port, not args.no_ray), daemon=True
    )
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
        runs = asyncio.run(_run(url, args.rate, args.seconds, args.runs))
    finally:
        proc.terminate()
        proc.join(10)
        redis.stop()
    config = {"rate_rps": args.rate, "seconds": args.seconds, "ray_checks": not args.no_ray}
    for k, run in enumerate(runs):
        for name in ("submit", "status"):
            r = run[name]
            print(
                f"run {k + 1}/{len(runs)} {name:<7} {r['requests']} requests at {args.rate:g}/s (achieved "
                f"{r['achieved_rps']}/s): p50 {r['p50_ms']} ms  p90 {r['p90_ms']} ms  "
                f"p99 {r['p99_ms']} ms  max {r['max_ms']} ms  errors {r['errors'] or 0}"
            )
    results = entries(runs, config)
    for e in results:
        print(f"{e.id} p99 {e.ratio:.1f} ms (runs {', '.join(f'{r:.1f}' for r in e.runs)}; goal < 50 ms)")
    if args.json:
        write_results(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

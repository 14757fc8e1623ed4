"""The job commands of the `payoff` CLI, talking to a gateway over HTTP (httpx only; no Ray, no torch).

    payoff submit job.yaml [--watch]     payoff jobs [--state running] [--all]
    payoff status ID [--json]             payoff logs ID [--follow]
    payoff cancel ID                      payoff keys create TENANT | list | revoke KEY_ID

The gateway URL comes from --url or PAYOFF_URL (default http://127.0.0.1:8080), the key from --api-key or
PAYOFF_API_KEY. `logs --follow` and `submit --watch` exit 0 when the job succeeded, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"
TERMINAL = ("succeeded", "failed", "cancelled")


class CliError(Exception):
    pass


# ---------------------------------------------------------------- HTTP
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url", default=os.environ.get("PAYOFF_URL", DEFAULT_URL), help="gateway URL ($PAYOFF_URL)"
    )
    p.add_argument("--api-key", default=os.environ.get("PAYOFF_API_KEY"), help="API key ($PAYOFF_API_KEY)")


def _client(args, timeout: float | None = 30.0) -> httpx.Client:
    if not args.api_key:
        raise CliError("no API key: pass --api-key or set PAYOFF_API_KEY")
    return httpx.Client(
        base_url=args.url.rstrip("/"), timeout=timeout, headers={"Authorization": f"Bearer {args.api_key}"}
    )


def _check(r: httpx.Response) -> dict | list | None:
    if r.status_code < 400:
        return r.json() if r.content else None
    try:
        body = r.json()
    except ValueError:
        raise CliError(f"HTTP {r.status_code}: {r.text[:500]}") from None
    lines = [str(body.get("detail", body))] if isinstance(body, dict) else [str(body)]
    for e in body.get("errors", []) if isinstance(body, dict) else []:
        lines.append(f"  {e.get('loc') or '<spec>'}: {e.get('msg')}")
    raise CliError("\n".join(lines))


def _request(args, method: str, path: str, **kw):
    try:
        with _client(args) as c:
            return _check(c.request(method, path, **kw))
    except httpx.TransportError as e:
        raise CliError(f"cannot reach the gateway at {args.url}: {e} (is `payoff serve` running?)") from None


# ---------------------------------------------------------------- display
def _ts(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _bar(done: int, total: int, width: int = 24) -> str:
    filled = int(width * min(done, total) / max(total, 1))
    return "[" + "#" * filled + "." * (width - filled) + f"] {done}/{total}"


def _metrics_text(metrics: dict[str, float], limit: int = 4) -> str:
    keys = sorted(metrics, key=lambda k: (k != "reward_mean", k))[:limit]
    return " ".join(f"{k}={metrics[k]:.4g}" for k in keys)


def _print_job(job: dict) -> None:
    spec, s = job["spec"], job.get("summary") or {}
    print(f"job       {job['id']}  ({spec['name']}, tenant {job['tenant']})")
    print(f"state     {job['state']}" + (f"  — {job['detail']}" if job.get("detail") else ""))
    print(
        f"algorithm {spec['algorithm']} on {', '.join(t['env'] for t in spec['tasks'])}; "
        f"model {spec['model']['path']}"
    )
    for state, t in job.get("state_times", {}).items():
        print(f"  {state:<10} {_ts(t)}")
    if s.get("step") is not None:
        bar = _bar(s["step"], spec["learner"]["steps"])
        print(f"progress  {bar}  {_metrics_text(s.get('metrics', {}))}")
    if s.get("checkpoints"):
        print(f"checkpoints {s['checkpoints']} (latest {s.get('last_checkpoint')})")
    if s.get("queue"):
        q = s["queue"]
        print(f"queue     put {q.get('put', 0)}  acked {q.get('acked', 0)}  depth {q.get('depth', 0)}")
    for name, c in (job.get("components") or {}).items():
        print(f"  {name:<8} {c['state']}" + (f"  {c['message'][:120]}" if c.get("message") else ""))
    if job.get("error"):
        print(f"error     {job['error']}")


def _events(args, job_id: str, follow: bool) -> Iterator[tuple[str, dict]]:
    """(event type, data) from the SSE stream; reconnects with Last-Event-ID if the connection drops."""
    last_id, failures = None, 0
    while True:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        try:
            with (
                _client(args, timeout=None) as c,
                c.stream(
                    "GET",
                    f"/v1/jobs/{job_id}/events",
                    params={"follow": str(follow).lower()},
                    headers=headers,
                ) as r,
            ):
                if r.status_code >= 400:
                    r.read()
                    _check(r)
                kind, data = "message", []
                for line in r.iter_lines():
                    if line == "":
                        if data:
                            payload = json.loads("\n".join(data))
                            yield kind, payload
                            if kind == "end":
                                return
                        kind, data = "message", []
                    elif line.startswith("id:"):
                        last_id = line[3:].strip()
                    elif line.startswith("event:"):
                        kind = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
                failures = 0
        except (httpx.TransportError, httpx.RemoteProtocolError) as e:
            failures += 1
            if failures > 5:
                raise CliError(f"lost the event stream: {e}") from None
            time.sleep(1.0)


def _watch(args, job_id: str, follow: bool) -> int:
    job = _request(args, "GET", f"/v1/jobs/{job_id}")
    total = job["spec"]["learner"]["steps"]
    tty, on_bar, final = sys.stdout.isatty(), False, job["state"]
    for kind, ev in _events(args, job_id, follow):
        when = datetime.fromtimestamp(ev.get("time", time.time())).strftime("%H:%M:%S")
        if kind == "step":
            line = f"{when} step {_bar(ev['step'], total)} {_metrics_text(ev.get('metrics', {}))}"
            if tty:
                print("\r" + line[:200].ljust(100), end="", flush=True)
                on_bar = True
            else:
                print(line, flush=True)
            continue
        if on_bar:
            print()
            on_bar = False
        if kind == "status":
            final = ev["state"]
            error = f": {ev['error']}" if ev.get("error") else ""
            print(f"{when} status {ev['state']}{error}", flush=True)
        elif kind == "checkpoint":
            print(f"{when} checkpoint step {ev['step']}: {ev['path']}", flush=True)
        elif kind == "log":
            print(f"{when} [{ev.get('source', '')}] {ev.get('level', 'info')}: {ev['message']}", flush=True)
        elif kind == "end":
            final = ev.get("state", final)
    if on_bar:
        print()
    if follow:
        print(f"job {job_id} {final}")
    return 0 if final == "succeeded" or (not follow and final not in ("failed", "cancelled")) else 1


# ---------------------------------------------------------------- commands
def _run(argv, build, action, common: bool = True) -> int:
    p = build()
    if common:
        _common(p)
    args = p.parse_args(argv)
    try:
        return int(action(args) or 0)
    except CliError as e:
        print(f"payoff: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def submit_main(argv: list[str] | None = None) -> int:
    def build():
        p = argparse.ArgumentParser(prog="payoff submit", description="Submit a job spec (YAML or JSON).")
        p.add_argument("spec", help="job spec file, or - for stdin")
        p.add_argument("--watch", action="store_true", help="follow the job's progress until it ends")
        return p

    def action(args):
        text = sys.stdin.read() if args.spec == "-" else Path(args.spec).read_text()
        kind = "application/json" if args.spec.endswith(".json") else "application/yaml"
        job = _request(args, "POST", "/v1/jobs", content=text.encode(), headers={"Content-Type": kind})
        print(f"submitted {job['id']} ({job['state']})")
        return _watch(args, job["id"], follow=True) if args.watch else 0

    return _run(argv, build, action)


def jobs_main(argv: list[str] | None = None) -> int:
    def build():
        p = argparse.ArgumentParser(prog="payoff jobs", description="List jobs, newest first.")
        p.add_argument(
            "--state",
            action="append",
            choices=["queued", "starting", "running", "succeeded", "failed", "cancelled"],
        )
        p.add_argument("--tenant", help="admin key: one tenant's jobs")
        p.add_argument("--limit", type=int, default=50)
        return p

    def action(args):
        params: dict = {"limit": args.limit}
        if args.state:
            params["state"] = args.state
        if args.tenant:
            params["tenant"] = args.tenant
        out = _request(args, "GET", "/v1/jobs", params=params)
        print(f"{'ID':<32} {'STATE':<10} {'TENANT':<12} {'ALGORITHM':<12} {'STEP':>6} {'REWARD':>8}  CREATED")
        for j in out["jobs"]:
            s = j.get("summary") or {}
            reward = s.get("metrics", {}).get("reward_mean")
            step = "" if s.get("step") is None else s["step"]
            shown = "" if reward is None else f"{reward:.4f}"
            print(
                f"{j['id']:<32} {j['state']:<10} {j['tenant']:<12} {j['spec']['algorithm']:<12} "
                f"{step:>6} {shown:>8}  {_ts(j['created_at'])}"
            )
        print(f"{len(out['jobs'])} of {out['total']} jobs")

    return _run(argv, build, action)


def status_main(argv: list[str] | None = None) -> int:
    def build():
        p = argparse.ArgumentParser(prog="payoff status", description="Show one job.")
        p.add_argument("job_id")
        p.add_argument("--json", action="store_true", help="print the job record as JSON")
        return p

    def action(args):
        job = _request(args, "GET", f"/v1/jobs/{args.job_id}")
        print(json.dumps(job, indent=2)) if args.json else _print_job(job)

    return _run(argv, build, action)


def logs_main(argv: list[str] | None = None) -> int:
    def build():
        p = argparse.ArgumentParser(prog="payoff logs", description="Print a job's events.")
        p.add_argument("job_id")
        p.add_argument("-f", "--follow", action="store_true", help="keep streaming until the job ends")
        return p

    return _run(argv, build, lambda args: _watch(args, args.job_id, follow=args.follow))


def cancel_main(argv: list[str] | None = None) -> int:
    def build():
        p = argparse.ArgumentParser(prog="payoff cancel", description="Cancel a job.")
        p.add_argument("job_id")
        return p

    def action(args):
        job = _request(args, "POST", f"/v1/jobs/{args.job_id}/cancel")
        print(f"{job['id']}: {job['state']}" + (" (cancelling)" if job.get("cancel_requested") else ""))

    return _run(argv, build, action)


def keys_main(argv: list[str] | None = None) -> int:
    def build():
        p = argparse.ArgumentParser(prog="payoff keys", description="Manage API keys (admin key needed).")
        sub = p.add_subparsers(dest="action", required=True)
        c = sub.add_parser("create", help="create a key for a tenant (printed once)")
        c.add_argument("tenant")
        c.add_argument("--name", default="")
        c.add_argument("--admin", action="store_true")
        sub.add_parser("list", help="list keys (ids and tenants, never the keys)")
        r = sub.add_parser("revoke", help="revoke a key by id")
        r.add_argument("key_id")
        for sp in sub.choices.values():
            _common(sp)
        return p

    def action(args):
        if args.action == "create":
            out = _request(
                args,
                "POST",
                "/v1/admin/keys",
                json={"tenant": args.tenant, "name": args.name, "admin": args.admin},
            )
            print(f"key for tenant {out['tenant']} (id {out['key_id']}; shown once):\n{out['key']}")
        elif args.action == "list":
            for k in _request(args, "GET", "/v1/admin/keys"):
                print(f"{k['key_id']}  {k['tenant']:<16} {'admin' if k['admin'] else '':<6} {k['name']}")
        else:
            _request(args, "DELETE", f"/v1/admin/keys/{args.key_id}")
            print(f"revoked {args.key_id}")

    return _run(argv, build, action, common=False)  # the subcommands carry --url/--api-key

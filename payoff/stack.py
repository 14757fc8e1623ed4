"""`payoff serve` and `LocalStack`: the whole local stack, composed.

`payoff serve` starts (or joins) everything a laptop needs: the project's redis-server (unless REDIS_URL
is set), Ray (or RAY_ADDRESS), Ray Serve's HTTP proxy, and the gateway — standalone with uvicorn by
default, or as a Serve ingress deployment with --on-serve. The admin key comes from PAYOFF_ADMIN_KEY or is
generated once into <data dir>/gateway/admin_key. The gateway loads the services' job components by
module name (GatewaySettings.component_modules: rollout, judge, orchestrator, learner).

A redis-server the stack started is watched (services/redis_watch.py): if it dies it is restarted on the
same port and AOF dir, and running jobs ride the gap out (services/config.data_plane_client).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import threading
import time
from pathlib import Path

from gateway.server import GatewayServer
from services.internal_auth import ensure_token


class LocalStack:
    """Everything `payoff serve` starts, in this process: the project's redis-server, a local Ray head,
    Ray Serve's proxy and the gateway with its job runner. For the demo and benchmarks, which then talk to
    `url` with `admin_key` over REST like any client. Stops on exit what it started: a Ray (and Serve)
    this process was already connected to, such as a test session's, is left running."""

    def __init__(
        self, data_dir: Path, num_cpus: int | None = None, quiet: bool = True, max_concurrent_jobs: int = 1
    ) -> None:
        self.data_dir, self.num_cpus, self.quiet = Path(data_dir), num_cpus, quiet
        self.max_jobs = max_concurrent_jobs
        self.admin_key = "pyf_local_" + secrets.token_urlsafe(24)
        self.redis = self.server = self._watch = None
        self._own_ray = False

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> LocalStack:
        import ray
        from ray import serve

        from gateway.settings import GatewaySettings
        from services.ray_utils import init_ray
        from services.redis_server import RedisServer, free_port
        from services.redis_watch import RedisSupervisor

        self.redis = RedisServer(self.data_dir / "local-redis").start()
        self._watch = RedisSupervisor(self.redis).start()  # a crashed redis-server comes back (same AOF)
        try:
            self._own_ray = not ray.is_initialized() and not os.environ.get("RAY_ADDRESS")
            ensure_token(self.data_dir / "gateway")  # before Ray: its workers inherit the data plane's token
            init_ray(num_cpus=self.num_cpus, log_to_driver=not self.quiet)
            serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
            settings = GatewaySettings(
                redis_url=self.redis.url,
                data_dir=self.data_dir,
                admin_key=self.admin_key,
                run_jobs=True,
                connect_ray=True,
                max_concurrent_jobs=self.max_jobs,
                poll_s=0.5,
            )
            self.server = GatewayServer(settings).start()
        except BaseException:
            self.stop()
            raise
        return self

    def client(self, timeout: float = 60.0):
        import httpx

        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.admin_key}"}, timeout=timeout
        )

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self._own_ray:
            try:
                import ray
                from ray import serve

                serve.shutdown()
                ray.shutdown()
            except Exception:  # shutting down anyway
                pass
            self._own_ray = False
        if self._watch is not None:
            self._watch.stop()
            self._watch = None
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_job(client, job_id: str, timeout_s: float, on_poll=None, poll_s: float = 2.0) -> dict:
    """Poll GET /v1/jobs/{id} until the job ends (or cancel it after `timeout_s`); returns the record."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        if on_poll:
            on_poll(job)
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        if time.monotonic() > deadline:
            client.post(f"/v1/jobs/{job_id}/cancel")
            raise TimeoutError(f"job {job_id} did not finish in {timeout_s:.0f} s: cancelled")
        time.sleep(poll_s)


def _secret_file(path: Path, make) -> str:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(make())
    return path.read_text().strip()


def main(argv: list[str] | None = None) -> int:
    """payoff serve — start the local stack (Redis, Ray, Serve, gateway) in the foreground."""
    p = argparse.ArgumentParser(prog="payoff serve", description=main.__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080, help="gateway port (standalone mode)")
    p.add_argument("--serve-port", type=int, default=8000, help="Ray Serve HTTP proxy port")
    p.add_argument(
        "--on-serve",
        action="store_true",
        help="run the gateway as a Ray Serve ingress deployment (reachable on --serve-port)",
    )
    p.add_argument("--max-jobs", type=int, default=None, help="jobs running at once (default 2)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray head (default: all)")
    args = p.parse_args(argv)

    from services.config import Settings
    from services.ray_utils import init_ray
    from services.redis_server import RedisServer, RedisServerError
    from services.redis_watch import RedisSupervisor

    base = Settings.from_env()
    redis_server = watch = None
    if base.redis_url:
        redis_url = base.redis_url
    else:
        try:  # refused when another live redis-server holds this data dir (a second `payoff serve`)
            redis_server = RedisServer(base.data_dir / "redis").start()
        except RedisServerError as e:
            print(f"payoff serve: {e}", file=sys.stderr)
            return 1
        redis_url = redis_server.url
        watch = RedisSupervisor(redis_server).start()  # a crashed redis-server comes back (same AOF dir)
    admin_key = os.environ.get("PAYOFF_ADMIN_KEY") or _secret_file(
        base.data_dir / "gateway" / "admin_key", lambda: "pyf_admin_" + secrets.token_urlsafe(32)
    )
    try:
        from ray import serve

        from gateway.settings import GatewaySettings, load_pepper

        ensure_token(base.data_dir / "gateway")  # before Ray: its workers inherit the data plane's token
        init_ray(num_cpus=args.num_cpus)
        serve.start(http_options={"host": args.host, "port": args.serve_port})
        overrides = {"redis_url": redis_url, "admin_key": admin_key}
        if args.max_jobs:
            overrides["max_concurrent_jobs"] = args.max_jobs
        settings = GatewaySettings.from_env(**overrides)
        url = f"http://{args.host}:{args.serve_port if args.on_serve else args.port}"
        print(
            f"payoff gateway on {url}  (redis {redis_url}, data {settings.data_dir})\n"
            f"admin key: {admin_key}\n"
            f"  export PAYOFF_URL={url} PAYOFF_API_KEY={admin_key}",
            flush=True,
        )
        if args.on_serve:
            from gateway.serve_app import build_serve_app

            pepper = load_pepper(settings).decode()
            secrets = {"PAYOFF_ADMIN_KEY": admin_key, "PAYOFF_API_KEY_PEPPER": pepper}
            if os.environ.get("PAYOFF_METRICS_TOKEN"):  # replicas on a joined cluster do not share our env
                secrets["PAYOFF_METRICS_TOKEN"] = os.environ["PAYOFF_METRICS_TOKEN"]
            serve.run(build_serve_app(settings, secrets=secrets), name="gateway", route_prefix="/")
            stop = threading.Event()
            signal.signal(signal.SIGINT, lambda *_: stop.set())
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            stop.wait()
            if base.ray_address:  # a cluster outlives us: remove our app; a local head ends with this process
                serve.delete("gateway")
        else:
            import uvicorn

            from gateway.app import build_asgi

            uvicorn.run(build_asgi(settings), host=args.host, port=args.port, log_level="info")
    finally:
        if not base.ray_address:  # we started a local head: take Serve and Ray down with us
            try:
                import ray
                from ray import serve

                if ray.is_initialized():
                    serve.shutdown()
                    ray.shutdown()
            except Exception:  # shutting down anyway
                pass
        if watch is not None:
            watch.stop()
        if redis_server is not None:
            redis_server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

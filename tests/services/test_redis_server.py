"""The project's redis-server with real processes: one live server per data dir (a clear error naming the
holder's pid and port, a stale lock taken over), and a server that dies with the process that started it,
even after that process is SIGKILLed — with its AOF flushed (SIGTERM is a clean shutdown)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from services.redis_server import LOCK_NAME, RedisServer, RedisServerError, _is_live_redis, lock_holder

REPO = Path(__file__).resolve().parents[2]
HOLDER = """
import json, sys, time
from services.redis_server import RedisServer
s = RedisServer(sys.argv[1]).start()
print(json.dumps({"pid": s.proc.pid, "port": s.port}), flush=True)
time.sleep(120)
"""


def wait_gone(pid: int, data_dir: Path, timeout_s: float) -> float:
    t0 = time.monotonic()
    while _is_live_redis(pid, data_dir.resolve()):
        assert time.monotonic() - t0 < timeout_s, f"redis-server {pid} still alive after {timeout_s} s"
        time.sleep(0.05)
    return time.monotonic() - t0


def test_second_server_on_a_data_dir_is_refused_with_pid_and_port(tmp_path):
    with RedisServer(tmp_path) as first:
        with pytest.raises(RedisServerError) as err:
            RedisServer(tmp_path).start()
        msg = str(err.value)
        assert f"pid {first.proc.pid}" in msg and f"port {first.port}" in msg and str(tmp_path) in msg
        assert redis.Redis(port=first.port, socket_timeout=2).ping()  # the first one is untouched
        assert lock_holder(tmp_path)["pid"] == first.proc.pid
    assert lock_holder(tmp_path) is None  # stop() released it
    with RedisServer(tmp_path) as again:  # and the dir can be used again
        assert lock_holder(tmp_path)["pid"] == again.proc.pid
        again.kill()  # a crash releases it too
        assert lock_holder(tmp_path) is None
        again.start()  # restart on the same dir (what an outage test does)
        assert redis.Redis(port=again.port, socket_timeout=2).ping()


def test_redis_server_dies_with_its_parent_after_sigkill(tmp_path):
    parent = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        info = json.loads(parent.stdout.readline())
        pid, port = info["pid"], info["port"]
        assert _is_live_redis(pid, tmp_path.resolve())
        r = redis.Redis(port=port, socket_timeout=2)
        r.set("kept", "yes")
        with pytest.raises(RedisServerError, match=f"pid {pid} on port {port}"):  # held across processes
            RedisServer(tmp_path).start()
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        took = wait_gone(pid, tmp_path, timeout_s=5)
        print(f"redis-server exited {took:.2f} s after its parent was killed")
        with pytest.raises(redis.ConnectionError):
            redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1).ping()
    finally:
        if parent.poll() is None:
            parent.kill()
    # the lock left behind names a dead pid: taken over; the AOF was flushed by the SIGTERM shutdown
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == pid
    with RedisServer(tmp_path) as after:
        assert redis.Redis(port=after.port, socket_timeout=2).get("kept") == b"yes"


def test_server_started_from_a_short_lived_thread_outlives_the_thread(tmp_path):
    """The parent-death signal follows the forking thread: the fork must not happen on a thread that ends."""
    box = {}
    t = threading.Thread(target=lambda: box.update(server=RedisServer(tmp_path).start()))
    t.start()
    t.join(30)
    server = box["server"]
    try:
        time.sleep(1.0)
        assert server.proc.poll() is None
        assert redis.Redis(port=server.port, socket_timeout=2).ping()
    finally:
        server.stop()


@pytest.mark.parametrize("holder", ["dead pid", "live non-redis pid", "garbage"])
def test_a_stale_lock_is_taken_over(tmp_path, holder):
    if holder == "dead pid":
        done = subprocess.Popen(["true"])
        done.wait()
        text = json.dumps({"pid": done.pid, "port": 1})
    elif holder == "live non-redis pid":
        text = json.dumps({"pid": os.getpid(), "port": 1})  # pytest itself: alive, not a redis-server
    else:
        text = '{"pid": 12'  # half-written by a writer that crashed
    (tmp_path / LOCK_NAME).write_text(text)
    assert lock_holder(tmp_path) is None
    with RedisServer(tmp_path) as server:
        assert redis.Redis(port=server.port, socket_timeout=2).ping()
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == server.proc.pid

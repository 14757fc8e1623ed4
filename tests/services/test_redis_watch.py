"""Redis outages with a real redis-server: the supervisor brings a crashed server back on the same port
and AOF (data intact), gives up on a server that keeps dying; a data-plane client rides out a restart
within its budget and raises (never hangs) when the outage outlasts it, while the default client fails
fast."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from services.config import data_plane_client, redis_client
from services.redis_server import RedisServer
from services.redis_watch import RedisSupervisor


def wait(cond, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_supervisor_restarts_a_crashed_server_with_its_data(tmp_path):
    server = RedisServer(tmp_path / "r", appendfsync="always").start()
    watch = RedisSupervisor(server, check_s=0.1).start()
    try:
        c = redis_client(server.url)
        c.xadd("s", {"k": "v"})
        old = server.proc.pid
        server.proc.kill()  # a crash, not our stop
        wait(lambda: server.proc.pid != old and server.proc.poll() is None, 20)
        wait(lambda: _answers(c), 10)
        assert c.xlen("s") == 1 and len(watch.restarts) == 1
    finally:
        watch.stop()
        server.stop()


def test_supervisor_gives_up_on_a_server_that_keeps_dying(tmp_path):
    server = RedisServer(tmp_path / "r").start()
    watch = RedisSupervisor(server, check_s=0.05, max_restarts=2, window_s=60).start()
    try:
        for _ in range(3):
            pid = server.proc.pid
            server.proc.kill()
            wait(lambda: server.proc.pid != pid or watch.gave_up, 20)  # noqa: B023
        wait(lambda: watch.gave_up is not None, 10)
        assert "died 3 times" in watch.gave_up and str(server.log_path) in watch.gave_up
    finally:
        watch.stop()
        server.stop()


def _answers(c) -> bool:
    try:
        return bool(c.ping())
    except redis.RedisError:
        return False


def test_data_plane_client_rides_out_a_restart_and_the_default_client_fails_fast(tmp_path):
    server = RedisServer(tmp_path / "r").start()
    try:
        rider = data_plane_client(server.url, env={"PAYOFF_REDIS_RIDE_OUT_S": "30"})
        fast = redis_client(server.url)
        rider.set("k", "1")
        server.stop()
        t0 = time.monotonic()
        with pytest.raises(redis.ConnectionError):
            fast.get("k")
        assert time.monotonic() - t0 < 2
        threading.Timer(2.0, server.start).start()
        t0 = time.monotonic()
        assert rider.get("k") == b"1"  # waited for the restart, same AOF
        assert 1.5 < time.monotonic() - t0 < 15
    finally:
        server.stop()


def test_data_plane_client_raises_when_the_outage_outlasts_its_budget(tmp_path):
    server = RedisServer(tmp_path / "r").start()
    rider = data_plane_client(server.url, env={"PAYOFF_REDIS_RIDE_OUT_S": "1.5"})
    rider.ping()
    server.stop()
    t0 = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        rider.get("k")
    assert 1.4 < time.monotonic() - t0 < 5

"""`payoff serve` killed and started again on the same data dir, as a user meets it from a shell.

The first `payoff serve` runs the quickstart job; it is SIGKILLed mid-job. Its redis-server goes with it
(parent-death signal, AOF flushed), and so does the local Ray head it started. The second `payoff serve`
on the same data dir takes the Redis data dir over (the dead lock is stale), finds the job `running` with
every component gone, and fails it with that reason — no hang, no job stuck in `running` — then admits
and runs a new job to success, and stops cleanly on SIGTERM with its Redis.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from services.redis_server import _is_live_redis, free_port, lock_holder
from tests.gateway.test_e2e import wait_for

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
KEY = "pyf_admin_restart_test_key_0123456789"
ENDED = ("succeeded", "failed", "cancelled")


def quickstart(steps: int) -> dict:
    spec = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    spec["learner"]["steps"] = steps
    return spec


def serve(data_dir: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PAYOFF_DATA_DIR": str(data_dir), "PAYOFF_ADMIN_KEY": KEY}
    env.pop("RAY_ADDRESS", None)
    env.pop("REDIS_URL", None)
    cmd = [sys.executable, "-m", "payoff.cli", "serve", "--port", str(port), "--serve-port", str(free_port())]
    return subprocess.Popen(
        [*cmd, "--num-cpus", "2"],
        cwd=REPO,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def ready(c: httpx.Client, proc: subprocess.Popen, log: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"payoff serve exited {proc.returncode}: {log.read_text()[-3000:]}"
        try:
            if c.get("/readyz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"payoff serve not ready in {timeout_s} s: {log.read_text()[-3000:]}")


def started(c: httpx.Client, data_dir: Path, port: int, log: Path, tries: int = 3) -> subprocess.Popen:
    """`payoff serve` up and ready. Its Serve port is picked free just before the start, and another
    process (here: the killed stack's Ray, still exiting) may bind it first: that start fails with
    Serve's "Failed to bind" and is tried again on a fresh port, at most `tries` times."""
    for attempt in range(tries):
        mark = log.stat().st_size if log.exists() else 0
        proc = serve(data_dir, port, log)
        try:
            ready(c, proc, log)
            return proc
        except AssertionError:
            raced = "Failed to bind to address" in log.read_bytes()[mark:].decode(errors="replace")
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            if not raced or attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


def left_in_group(pgid: int) -> list[str]:
    """Processes still in the killed `payoff serve`'s process group (its local Ray head and workers)."""
    out = subprocess.run(["ps", "-eo", "pgid=,pid=,comm="], capture_output=True, text=True).stdout
    return [line.strip() for line in out.splitlines() if line.split() and int(line.split()[0]) == pgid]


def test_payoff_serve_killed_and_restarted_fails_the_orphaned_job_with_its_reason_and_runs_a_new_one(
    tmp_path,
):
    data, log, port = tmp_path / "data", tmp_path / "serve.log", free_port()
    c = httpx.Client(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {KEY}"}, timeout=30
    )
    first = serve(data, port, log)
    second = None
    try:
        ready(c, first, log)
        r = c.post("/v1/jobs", json=quickstart(steps=100_000))
        assert r.status_code == 201, r.text
        jid = r.json()["id"]
        wait_for(c, jid, lambda j: j["state"] == "running" and (j["summary"]["step"] or 0) >= 1, 300)
        redis_pid = lock_holder(data / "redis")["pid"]
        os.kill(first.pid, signal.SIGKILL)  # `kill -9 <pid>` of the gateway process only
        first.wait(timeout=10)
        t0 = time.monotonic()
        while _is_live_redis(redis_pid, (data / "redis").resolve()):
            assert time.monotonic() - t0 < 15, "redis-server outlived the killed payoff serve"
            time.sleep(0.1)
        redis_gone_s = time.monotonic() - t0

        second = started(c, data, port, log)
        t1 = time.monotonic()
        orphan = wait_for(c, jid, lambda j: j["state"] in ENDED, timeout_s=120)
        failed_s = time.monotonic() - t1
        assert orphan["state"] == "failed" and "every component of the job is gone" in orphan["error"], orphan
        r = c.post("/v1/jobs", json=quickstart(steps=3))
        assert r.status_code == 201, r.text
        done = wait_for(c, r.json()["id"], lambda j: j["state"] in ENDED, timeout_s=420)
        assert done["state"] == "succeeded", done
        # the old local Ray head went with it (its agents only after a GCS timeout)
        while left := left_in_group(first.pid):
            assert time.monotonic() - t0 < 150, f"outlived the killed payoff serve: {left}"
            time.sleep(0.5)
        print(
            f"after the kill: redis-server gone in {redis_gone_s:.1f} s, the old Ray's last process in "
            f"{time.monotonic() - t0:.0f} s"
        )
        print(f"orphaned job failed {failed_s:.1f} s after the restart: {orphan['error']}")
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) is not None
        assert lock_holder(data / "redis") is None  # its Redis stopped and released the dir
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        c.close()

"""Redis restarted under a running job, as a user meets it through the gateway with the real stack (rollout
replica on Serve, rules judge, job driver, Ray Train learner) on a project-started redis-server with AOF.

Redis is stopped the way `kill <pid>` / a pod restart stops it (SIGTERM: the AOF is flushed), stays away
for OUTAGE_S, and is started again on the same port and AOF dir. While it is away the gateway answers 503
JSON; the learner, the job driver and the replica ride the outage out (services/config.data_plane_client);
afterwards the job finishes with every step trained exactly once, and every trajectory is accounted for:
put = acked + stale + dead + discarded, acked = trained.
"""

from __future__ import annotations

import time

import pytest

from gateway.server import GatewayServer
from services.redis_server import RedisServer
from tests.gateway.conftest import ADMIN_KEY, client
from tests.gateway.test_e2e import apps, cleanup, wait_for
from tests.gateway.test_replica_faults import events, registry, tppo_job

pytestmark = pytest.mark.slow
STEPS, STOP_AT, OUTAGE_S = 30, 12, 8.0


def test_job_rides_out_a_redis_restart_and_trains_every_trajectory_once(
    ray_session, serve_url, tiny_model_path, make_settings, tmp_path
):
    redis_server = RedisServer(tmp_path / "restart-redis").start()
    settings = make_settings(redis_url=redis_server.url, connect_ray=True, run_jobs=True, poll_s=0.25)
    server = GatewayServer(settings, registry=registry()).start()
    jid = None
    try:
        with client(server.url, ADMIN_KEY) as c:
            job = tppo_job(tiny_model_path)
            job["learner"]["steps"] = STEPS
            r = c.post("/v1/jobs", json=job)
            assert r.status_code == 201, r.text
            jid = r.json()["id"]
            wait_for(c, jid, lambda j: (j["summary"]["step"] or 0) >= STOP_AT, timeout_s=300)
            step_stop = c.get(f"/v1/jobs/{jid}").json()["summary"]["step"]
            redis_server.stop()  # SIGTERM-like: SHUTDOWN flushes the AOF
            t_stop = time.monotonic()
            down = c.get(f"/v1/jobs/{jid}")
            assert down.status_code == 503 and "Redis" in down.json()["detail"], down.text
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - t_stop)))
            redis_server.start()
            done = wait_for(c, jid, lambda j: j["state"] in ("succeeded", "failed", "cancelled"), 420)
            assert done["state"] == "succeeded", done
            steps = [e for e in events(c, jid) if e["type"] == "step"]
            assert [e["step"] for e in steps] == list(range(1, STEPS + 1))  # each step once, none lost
            q = done["summary"]["queue"]
            trained = sum(int(e["metrics"]["samples"]) for e in steps)
            assert q["acked"] == trained, (q, trained)  # nothing trained twice
            accounted = q["acked"] + q["stale"] + q["dead"] + q.get("discarded", 0)
            assert q["put"] == accounted, q  # nothing lost
            print(
                f"redis stopped at step {step_stop} for {OUTAGE_S:.0f} s: job {done['state']}, steps "
                f"{len(steps)}/{STEPS}; put {q['put']}, trained {trained}, acked {q['acked']}, stale "
                f"{q['stale']}, dead {q['dead']}, discarded {q.get('discarded', 0)}"
            )
            assert not set(apps()) & {a for a in apps() if jid in a}
    finally:
        server.stop()
        if jid:
            cleanup(jid)
        redis_server.stop()

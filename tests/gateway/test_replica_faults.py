"""Rollout faults as a user meets them, through the gateway with the real stack (rollout replica on Serve,
rules judge, job driver, Ray Train learner):

- the job's rollout replica process is killed with SIGKILL mid-job: Serve starts a new one at the base
  model, the waiting learner catches it up, its sync gate holds job requests until then; the job still
  succeeds, every step trained, trained tokens within the staleness bound, nothing generated after the
  kill under weights older than the learner's (the stale stream's entries say when they were put and at
  which versions), every trajectory put accounted for and none trained twice, and chat answers from the
  current policy;
- a job whose data file is not what its env expects by the time the replica reads it fails at start with
  the env's error in its status and events, within a bounded time, instead of running with 0 steps.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import pytest

from games.data import shared_data_dir
from gateway.server import GatewayServer
from judge.component import JudgeComponent
from learner.component import LearnerComponent
from orchestrator.component import OrchestratorComponent
from rollout.component import RolloutComponent
from services.jobs import LEARNER, ORCHESTRATOR, ComponentRegistry, judge_app_name, rollout_app_name
from tests.gateway.conftest import ADMIN_KEY, client
from tests.gateway.test_e2e import apps, cleanup, wait_for

pytestmark = pytest.mark.slow
STEPS, KILL_AT, MAX_STALENESS, BATCH = 40, 6, 2, 4


def registry() -> ComponentRegistry:
    reg = ComponentRegistry()
    reg.register("rollout", RolloutComponent, 10)
    reg.register("judge", JudgeComponent, 20)
    reg.register(ORCHESTRATOR, OrchestratorComponent, 80)
    reg.register(LEARNER, LearnerComponent, 90)
    return reg


def tppo_job(model: str, **task) -> dict:
    return {
        "name": "faults",
        "model": {"path": model},
        "algorithm": "tppo",
        "tasks": [{"env": "sokoban", "max_turns": 1} | task],
        "rollout": {"cpus_per_replica": 0.25, "group_size": 2, "max_response_tokens": 16},
        "asynchrony": {"window_tokens": 8, "max_staleness": MAX_STALENESS},
        "learner": {
            "steps": STEPS,
            "batch_size": BATCH,
            "mini_batch_size": BATCH,
            "checkpoint_every": 10,
            "cpus_per_worker": 0.5,
            "learning_rate": 1e-4,
        },
    }


def events(c, jid: str) -> list[dict]:
    """The job's events as the SSE stream sends them (a finished job's stream ends by itself)."""
    with c.stream("GET", f"/v1/jobs/{jid}/events", params={"follow": "false"}) as s:
        text = "".join(s.iter_text())
    out = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = json.loads(line[6:])
            if "type" in data:  # not the final `end` marker
                out.append(data)
    return out


def redis_ms(r) -> int:
    sec, usec = r.time()
    return sec * 1000 + usec // 1000


class StaleWatch:
    """Collects what the queue drops as stale while the job runs (its teardown deletes the streams)."""

    def __init__(self, r, jid: str):
        self.r, self.jid, self.seen = r, jid, {}

    def poll(self) -> None:
        from services.codec import decode
        from services.keys import queue_stale
        from services.schemas import Trajectory

        for eid, f in self.r.xrange(queue_stale(self.jid)):
            if eid not in self.seen:
                self.seen[eid] = (int(f[b"src"].decode().split("-")[0]), decode(f[b"d"], Trajectory))

    def put_since(self, t_ms: int) -> list:
        """The dropped trajectories that were put at or after Redis time `t_ms`."""
        return [t for put_ms, t in self.seen.values() if put_ms >= t_ms]


def replica_health(jid: str, timeout_s: float = 10.0) -> dict | None:
    """GET /healthz of a replica of the job's rollout app, through its Serve handle (None: no answer)."""
    from ray import serve

    try:
        return serve.get_app_handle(rollout_app_name(jid)).healthz.remote().result(timeout_s=timeout_s)
    except Exception:
        return None


def test_replica_killed_mid_job_is_resynced_and_the_job_succeeds(
    ray_session, serve_url, tiny_model_path, make_settings, gw_redis
):
    settings = make_settings(connect_ray=True, run_jobs=True, poll_s=0.25)
    server = GatewayServer(settings, registry=registry()).start()
    jid = None
    try:
        with client(server.url, ADMIN_KEY) as c:
            r = c.post("/v1/jobs", json=tppo_job(tiny_model_path))
            assert r.status_code == 201, r.text
            jid = r.json()["id"]
            wait_for(c, jid, lambda j: (j["summary"]["step"] or 0) >= KILL_AT, timeout_s=300)
            from services.queue import TrajectoryQueue

            before = TrajectoryQueue(gw_redis, jid).stats()
            old = replica_health(jid)
            assert old and old["synced"] in (True, None), old
            os.kill(old["pid"], signal.SIGKILL)
            t_kill_ms = redis_ms(gw_redis) + 500  # a put the old process had in flight lands before this
            t_kill, v_kill = (
                time.monotonic(),
                int(c.get(f"/v1/jobs/{jid}").json()["summary"]["policy_version"]),
            )
            step_kill = int(c.get(f"/v1/jobs/{jid}").json()["summary"]["step"])
            new = None
            while time.monotonic() - t_kill < 180:  # a new replica, at (or past) the learner's version
                h = replica_health(jid)
                if h and h["pid"] != old["pid"] and h["version"] >= v_kill:
                    new = h
                    break
                time.sleep(0.5)
            assert new, "no replacement replica reached the learner's version"
            recovered_s = time.monotonic() - t_kill
            chat = {"model": jid, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
            answer = c.post("/v1/chat/completions", json=chat)
            watch = StaleWatch(gw_redis, jid)

            def ended(j: dict) -> bool:
                ended = j["state"] in ("succeeded", "failed", "cancelled")
                if not ended:  # the stale stream is deleted with the job's queue at its end
                    watch.poll()
                return ended

            done = wait_for(c, jid, ended, 420)
            assert done["state"] == "succeeded", done
            steps = [e for e in events(c, jid) if e["type"] == "step"]
            assert [e["step"] for e in steps] == list(range(1, STEPS + 1))  # every step trained
            for e in steps:  # each step's trained tokens were made within the bound of its version
                oldest = e["metrics"]["behaviour_version_min"]
                assert oldest < 0 or e["policy_version"] - 1 - oldest <= MAX_STALENESS, e
            after_kill = [e for e in steps if e["step"] > step_kill + MAX_STALENESS + 1]
            assert after_kill and max(e["metrics"]["behaviour_version_max"] for e in after_kill) >= v_kill
            q = done["summary"]["queue"]
            trained = sum(int(e["metrics"]["samples"]) for e in steps)
            assert q["acked"] == trained, (q, trained)  # every trained trajectory acked once: none twice
            assert q["put"] == q["acked"] + q["stale"] + q["dead"] + q["discarded"], q  # none lost
            stale = q["stale"] - before["stale"]
            late = watch.put_since(t_kill_ms)
            old_weights = [v for v in (t.oldest_version() for t in late) if v is None or v < v_kill]
            print(
                f"replica kill at step {step_kill} (v{v_kill}): new replica synced in {recovered_s:.1f} s; "
                f"stale {before['stale']} before, {q['stale']} at the end ({stale} since the kill, "
                f"{len(late)} of them seen put after it, under weights older than v{v_kill}: {len(old_weights)}); "
                f"steps {len(steps)}/{STEPS}; trained {trained}, acked {q['acked']}, put {q['put']}"
            )
            # The sync gate's claim: the new replica generated nothing at its base (or any pre-kill)
            # weights. Stale entries put after the kill are the ordinary asynchrony of the recovered
            # pipeline (sequences spanning windows while the learner steps), not the kill's doing.
            assert not old_weights, old_weights
            assert answer.status_code == 200, answer.text  # chat from the current policy, not the base
            assert min(min(v) for v in answer.json()["policy_versions"] if v) >= v_kill
            assert not {rollout_app_name(jid), judge_app_name(jid)} & apps()
    finally:
        server.stop()
        if jid:
            cleanup(jid)


def test_job_whose_data_file_is_not_what_the_env_expects_fails_at_start_with_the_envs_error(
    ray_session, serve_url, tiny_model_path, make_settings, tmp_path
):
    """The file passes the gateway's check at submission, then is replaced (edited, or another file on the
    replica's node): the replica cannot build the env (422) and the job fails with that error at once."""
    data = tmp_path / "data"
    data.mkdir()
    blocks = data / "blocks.json"
    shutil.copy(shared_data_dir() / "grl" / "blocksworld-3.json", blocks)
    roots = make_settings().roots()
    settings = make_settings(connect_ray=True, run_jobs=True, poll_s=0.25, allowed_roots=(*roots, data))
    server = GatewayServer(settings, registry=registry()).start()
    jid = None
    try:
        with client(server.url, ADMIN_KEY) as c:
            job = tppo_job(tiny_model_path, env="blocksworld", data_path=str(blocks))
            r = c.post("/v1/jobs", json=job)
            assert r.status_code == 201, r.text
            blocks.write_text("root:x:0:0:root:/root:/bin/bash\n")  # now it is /etc/passwd
            jid = r.json()["id"]
            t0 = time.monotonic()
            done = wait_for(c, jid, lambda j: j["state"] in ("succeeded", "failed", "cancelled"), 180)
            took = time.monotonic() - t0
            assert done["state"] == "failed" and done["summary"]["step"] is None, done
            assert done["error"].startswith("orchestrator failed: cannot build env 'blocksworld'"), done
            print(f"bad data: failed {took:.1f} s after submission with: {done['error']}")
            got = events(c, jid)
            logs = [e for e in got if e["type"] == "log" and e["source"] == "orchestrator"]
            assert (
                logs
                and logs[-1]["level"] == "error"
                and "cannot build env 'blocksworld'" in logs[-1]["message"]
            )
            status = [e for e in got if e["type"] == "status"]
            assert status[-1]["state"] == "failed" and "cannot build env" in status[-1]["error"]
            assert not {rollout_app_name(jid), judge_app_name(jid)} & apps()
    finally:
        server.stop()
        if jid:
            cleanup(jid)

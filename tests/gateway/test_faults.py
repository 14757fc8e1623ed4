"""Faults as a user meets them, through the gateway with the real components on real Ray / Serve / Ray
Train: jobs cancelled while their Ray Train run holds its placement group, a job whose learner fails
(a spec the learner rejects), a job whose learner process is SIGKILLed — after each, Ray's available CPUs
are back at the baseline, and no actor, placement group or Serve app of that job is left; then a job
still trains to success on the same stack (issue 15: two cancels used to leave no room for a third job).
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from gateway.server import GatewayServer
from judge.component import JudgeComponent
from learner.component import LearnerComponent
from orchestrator.component import OrchestratorComponent
from rollout.component import RolloutComponent
from services.actor_component import NAMESPACE
from services.jobs import (
    LEARNER,
    ORCHESTRATOR,
    ComponentRegistry,
    driver_actor_name,
    judge_app_name,
    learner_actor_name,
    rollout_app_name,
)
from services.ray_utils import owned_tree
from tests.gateway.conftest import ADMIN_KEY, client
from tests.gateway.test_e2e import apps, cleanup, wait_for

pytestmark = pytest.mark.slow
RELEASE_BOUND_S = 30.0  # what a user may wait, after a job ended, for its CPUs to be free again
ENDED = ("succeeded", "failed", "cancelled")


def registry() -> ComponentRegistry:
    reg = ComponentRegistry()
    reg.register("rollout", RolloutComponent, 10)
    reg.register("judge", JudgeComponent, 20)
    reg.register(ORCHESTRATOR, OrchestratorComponent, 80)
    reg.register(LEARNER, LearnerComponent, 90)
    return reg


def spec(model: str, steps: int, **learner) -> dict:
    return {
        "name": "faults",
        "model": {"path": model},
        "algorithm": "tppo",
        "tasks": [{"env": "sokoban", "max_turns": 1}],
        "rollout": {"cpus_per_replica": 0.25, "group_size": 2, "max_response_tokens": 16},
        "asynchrony": {"window_tokens": 8},
        "learner": {
            "steps": steps,
            "batch_size": 4,
            "mini_batch_size": 4,
            "checkpoint_every": 3,
            "cpus_per_worker": 0.5,
            **learner,
        },
    }


def free_cpus() -> float:
    import ray

    return ray.available_resources().get("CPU", 0.0)


def held_pgs() -> int:
    import ray

    return sum(p["state"] != "REMOVED" for p in ray.util.placement_group_table().values())


def train_run_placed(jid: str) -> bool:
    """The job's Ray Train run holds its placement group (its workers are placed)."""
    return any(pg.state == pg.CREATED for pg in owned_tree(learner_actor_name(jid), NAMESPACE).held())


def wait_train_run(c, jid: str, timeout_s: float = 240.0) -> None:
    """The job is `running` (a learner lost while `starting` is launched again) and its Train run placed."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = c.get(f"/v1/jobs/{jid}").json()
        if job["state"] == "running" and train_run_placed(jid):
            return
        assert job["state"] not in ENDED, job
        assert time.monotonic() < deadline, f"no Train placement group: {job['state']}: {job['detail']}"
        time.sleep(0.25)


def job_left(jid: str) -> dict:
    """What of `jid` still holds Ray resources: live actors and placement groups of its learner and driver
    trees, its Serve apps. Empty when everything was released."""
    learner = owned_tree(learner_actor_name(jid), NAMESPACE)
    driver = owned_tree(driver_actor_name(jid), NAMESPACE)
    assert learner.actors, "the learner tree was never seen: the check would check nothing"
    left = {
        "learner": learner.describe() if learner.alive() or learner.held() else None,
        "driver": driver.describe() if driver.alive() or driver.held() else None,
        "serve apps": sorted({rollout_app_name(jid), judge_app_name(jid)} & apps()) or None,
    }
    return {k: v for k, v in left.items() if v}


def assert_released(jid: str, baseline: tuple[float, int] | None) -> float:
    """Everything of `jid` is gone within RELEASE_BOUND_S of its end and, with no other job running, the
    cluster is back at `baseline` (free CPUs, placement groups held); returns how long that took."""
    t0 = time.monotonic()
    while True:
        left = job_left(jid)
        if baseline is not None and (abs(free_cpus() - baseline[0]) > 1e-6 or held_pgs() != baseline[1]):
            left["cluster"] = (
                f"{free_cpus():g} CPUs free, {held_pgs()} placement groups (baseline {baseline})"
            )
        if not left:
            return time.monotonic() - t0
        assert time.monotonic() - t0 < RELEASE_BOUND_S, f"{jid} still holds Ray resources: {left}"
        time.sleep(0.25)


def kill_learner_process(jid: str) -> int:
    tree = owned_tree(learner_actor_name(jid), NAMESPACE)
    (run,) = [a for a in tree.alive() if a.class_name == "LearnerRun"]
    os.kill(run.pid, signal.SIGKILL)
    return run.pid


def submit(c, model: str, steps: int, **learner) -> str:
    r = c.post("/v1/jobs", json=spec(model, steps=steps, **learner))
    assert r.status_code == 201, r.text
    return r.json()["id"]


def end(c, jid: str, state: str, error: str | None = None) -> dict:
    done = wait_for(c, jid, lambda j: j["state"] in ENDED, timeout_s=300)
    assert done["state"] == state and (error is None or error in done["error"]), done
    return done


def test_cancel_and_fail_loop_releases_every_ray_resource_then_a_job_succeeds(
    ray_session, serve_url, tiny_model_path, make_settings
):
    baseline = (free_cpus(), held_pgs())
    settings = make_settings(connect_ray=True, run_jobs=True, poll_s=0.25, max_concurrent_jobs=2)
    server = GatewayServer(settings, registry=registry()).start()
    jids: list[str] = []
    released: dict[str, float] = {}
    try:
        with client(server.url, ADMIN_KEY) as c:
            # two jobs training at once (the reproduction); cancelling one leaves the other's run be
            first, second = submit(c, tiny_model_path, 500), submit(c, tiny_model_path, 500)
            jids += [first, second]
            wait_train_run(c, first)
            wait_train_run(c, second)
            second_pgs = {
                p.placement_group_id for p in owned_tree(learner_actor_name(second), NAMESPACE).held()
            }
            assert c.post(f"/v1/jobs/{first}/cancel").status_code in (200, 202)
            end(c, first, "cancelled")
            released[f"cancel {first}"] = assert_released(first, baseline=None)
            assert c.get(f"/v1/jobs/{second}").json()["state"] == "running"
            still = owned_tree(learner_actor_name(second), NAMESPACE).held()
            assert {p.placement_group_id for p in still if p.state == p.CREATED} == second_pgs
            assert c.post(f"/v1/jobs/{second}/cancel").status_code in (200, 202)
            end(c, second, "cancelled")
            released[f"cancel {second}"] = assert_released(second, baseline)

            # a learner that fails (a spec its model cannot satisfy: tiny-qwen3 has 2 blocks)
            jids.append(jid := submit(c, tiny_model_path, 500, train_layers=10))
            end(c, jid, "failed", error="train_layers (10)")
            released[f"learner error {jid}"] = assert_released(jid, baseline)

            # a learner process killed mid-training (a crash: stop finds the actor already dead)
            jids.append(jid := submit(c, tiny_model_path, 500))
            wait_train_run(c, jid)
            kill_learner_process(jid)
            end(c, jid, "failed", error="learner")
            released[f"learner killed {jid}"] = assert_released(jid, baseline)

            # and the stack still trains a job to success
            jids.append(jid := submit(c, tiny_model_path, 3))
            end(c, jid, "succeeded")
            assert c.get(f"/v1/jobs/{jid}/metrics").json()["steps"] == [1, 2, 3]
            released[f"success {jid}"] = assert_released(jid, baseline)
        print("seconds from job end to every Ray resource released:", released)
    finally:
        server.stop()
        for jid in jids:
            cleanup(jid)


DASHBOARD_PROBE = """
import json
import ray
from ray.util.state import list_actors
from services.ray_utils import init_ray
init_ray(num_cpus=1)  # with PAYOFF_RAY_DASHBOARD=1
ctx = ray.init(ignore_reinit_error=True)  # the running instance's context
actors = list_actors(address="http://" + ctx.dashboard_url, timeout=30)  # this instance, not "auto"
print(json.dumps({"dashboard": ctx.dashboard_url, "actors": len(actors)}))
ray.shutdown()
"""


def test_ray_dashboard_and_state_api_behind_a_flag():
    import json
    import subprocess
    import sys
    from pathlib import Path

    from services.ray_utils import DASHBOARD_ENV, dashboard_enabled

    assert not dashboard_enabled({}) and dashboard_enabled({DASHBOARD_ENV: "1"})
    with pytest.raises(ValueError, match=DASHBOARD_ENV):
        dashboard_enabled({DASHBOARD_ENV: "maybe"})  # a typo is an error, not silently "off"
    env = {**os.environ, DASHBOARD_ENV: "1"}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run(
        [sys.executable, "-c", DASHBOARD_PROBE],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    # the dashboard answers on loopback and the state API (what Ray Train's own cleaner needs) works
    assert probe["dashboard"].startswith("127.0.0.1:") and probe["actors"] >= 0

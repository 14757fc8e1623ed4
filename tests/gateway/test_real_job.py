"""A real training job through the gateway: rollout replicas (tiny model) play GRL Sokoban, the rules
judge is deployed, the Ray Train learner (learner/component.py) trains with GRPO, pushes weights to the
replicas, checkpoints and exports the policy; the job ends `succeeded` and everything is torn down."""
from __future__ import annotations

from pathlib import Path

import pytest

from gateway.components import JudgeComponent, RolloutComponent
from gateway.server import GatewayServer
from learner.component import LearnerComponent
from services.jobs import LEARNER, ComponentRegistry, judge_app_name, rollout_app_name
from tests.gateway.conftest import ADMIN_KEY, client
from tests.gateway.test_e2e import apps, cleanup, wait_for

pytestmark = pytest.mark.slow


def test_real_job_trains_to_success(ray_session, serve_url, tiny_model_path, make_settings, tmp_path):
    settings = make_settings(connect_ray=True, run_jobs=True, poll_s=0.25)
    reg = ComponentRegistry()
    reg.register("rollout", RolloutComponent, 10)
    reg.register("judge", JudgeComponent, 20)
    reg.register(LEARNER, LearnerComponent, 90)
    job = {"name": "real", "model": {"path": tiny_model_path}, "algorithm": "grpo",
           "tasks": [{"env": "sokoban", "max_turns": 1}],
           "rollout": {"cpus_per_replica": 0.25, "group_size": 2, "max_response_tokens": 16},
           "asynchrony": {"window_tokens": 16},
           "learner": {"steps": 3, "batch_size": 4, "mini_batch_size": 4, "checkpoint_every": 3,
                       "cpus_per_worker": 0.5, "learning_rate": 1e-4}}
    server = GatewayServer(settings, registry=reg).start()
    jid = None
    try:
        with client(server.url, ADMIN_KEY) as c:
            r = c.post("/v1/jobs", json=job)
            assert r.status_code in (200, 201, 202), r.text
            jid = r.json()["id"]
            done = wait_for(c, jid, lambda j: j["state"] in ("succeeded", "failed", "cancelled"), timeout_s=420)
            assert done["state"] == "succeeded", done
            curve = c.get(f"/v1/jobs/{jid}/metrics").json()
            assert curve["steps"] == [1, 2, 3] and len(curve["reward"]) == 3
            assert len(curve["checkpoints"]) == 1 and curve["checkpoints"][0]["path"].endswith("/policy")
            assert done["summary"]["policy_version"] == 3
            final = Path(settings.data_dir) / "jobs" / jid / "final"
            assert (final / "config.json").exists() and (final / "model.safetensors").exists()
            assert not {rollout_app_name(jid), judge_app_name(jid)} & apps()
    finally:
        server.stop()
        if jid:
            cleanup(jid)

"""The gateway as a Ray Serve ingress deployment: the same API through Serve's HTTP proxy, its runner
running inside the replica. Without a learner component a job fails with the clear error, starting nothing."""

from __future__ import annotations

import time

import httpx
import pytest
from ray import serve

from gateway.serve_app import build_serve_app
from tests.gateway.conftest import ADMIN_KEY, PEPPER

pytestmark = pytest.mark.slow


def test_gateway_on_serve(ray_session, serve_url, make_settings):
    # no learner module on purpose, so the outcome does not change once learner/ registers one
    settings = make_settings(
        run_jobs=True, connect_ray=True, component_modules=("rollout.component", "judge.component")
    )
    app = build_serve_app(
        settings, num_cpus=0.1, secrets={"PAYOFF_ADMIN_KEY": ADMIN_KEY, "PAYOFF_API_KEY_PEPPER": PEPPER}
    )
    serve.run(app, name="gateway-test", route_prefix="/gateway-test")
    base = f"{serve_url}/gateway-test"
    try:
        assert httpx.get(f"{base}/healthz", timeout=30).json() == {"ok": True}
        doc = httpx.get(f"{base}/openapi.json", timeout=30).json()
        assert "/v1/jobs" in doc["paths"]
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as c:
            assert c.get("/v1/whoami").json()["tenant"] == "admin"
            r = c.post(
                "/v1/jobs",
                json={"name": "on-serve", "tasks": [{"env": "sokoban"}], "rollout": {"gpus_per_replica": 1}},
            )
            assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "rollout.gpus_per_replica"
            jid = c.post(
                "/v1/jobs",
                json={"name": "on-serve", "tasks": [{"env": "sokoban"}], "learner": {"cpus_per_worker": 0.1}},
            ).json()["id"]
            deadline = time.monotonic() + 60
            while (job := c.get(f"/v1/jobs/{jid}").json())["state"] == "queued":
                assert time.monotonic() < deadline
                time.sleep(0.25)
            assert job["state"] == "failed" and job["error"].startswith("no learner component registered")
            assert f"rollout-{jid}" not in serve.status().applications
            ready = c.get("/readyz").json()
            assert ready["ready"] and ready["runner"]["leader"] is True
    finally:
        serve.delete("gateway-test")

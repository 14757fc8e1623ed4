"""A rollout replica on Ray Serve exposes GET /metrics with the payoff_rollout_* series of its own batches."""

from __future__ import annotations

import re

import pytest
from ray import serve

from rollout.serve import RolloutConfig, build_app
from tests.helpers import INTERNAL


@pytest.mark.slow
def test_rollout_replica_metrics_endpoint(serve_url, tiny_model_path):
    name = "deploy-metrics-rollout"
    cfg = RolloutConfig(model=tiny_model_path, replicas=1, cpus_per_replica=0.25)
    serve.run(build_app(cfg), name=name, route_prefix=f"/{name}")
    try:
        url = f"{serve_url}/{name}"
        r = INTERNAL.post(
            f"{url}/v1/generate",
            json={"prompt_ids": [1, 291, 201], "params": {"max_tokens": 4, "temperature": 0}},
            timeout=120,
        )
        assert r.status_code == 200, r.text
        generated = len(r.json()["token_ids"])
        m = INTERNAL.get(f"{url}/metrics", timeout=30)
        assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
        text = m.text
        tokens = re.search(
            r'^payoff_rollout_generated_tokens_total\{job="adhoc",replica="[^"]+"\} (\S+)$', text, re.M
        )
        assert tokens and float(tokens.group(1)) == generated
        assert re.search(r'^payoff_rollout_policy_version\{job="adhoc",replica="[^"]+"\} 0\.0$', text, re.M)
        assert re.search(
            r'^payoff_rollout_batch_seconds_count\{job="adhoc",replica="[^"]+"\} 1\.0$', text, re.M
        )
    finally:
        serve.delete(name)

"""422s a person understands, with field paths, for specs that cannot run here; nothing is stored for them."""

from __future__ import annotations

import json

import pytest

from gateway.server import GatewayServer
from tests.gateway.conftest import ADMIN_KEY, client

BASE = {
    "name": "v",
    "tasks": [{"env": "sokoban"}],
    "rollout": {"cpus_per_replica": 0.25},
    "learner": {"cpus_per_worker": 0.25},
}


def merge(base: dict, patch: dict) -> dict:
    out = json.loads(json.dumps(base))
    for k, v in patch.items():
        out[k] = merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


CASES = [
    ({"algorithm": "reinforce"}, "algorithm", "Input should be 'tppo'"),
    ({"rollout": {"windw_tokens": 8}}, "rollout.windw_tokens", "unknown field"),
    (
        {"rollout": {"max_response_tokens": 32}, "asynchrony": {"window_tokens": 64}},
        "",
        "asynchrony.window_tokens (64) is larger than rollout.max_response_tokens (32)",
    ),
    ({"model": {"path": "/models/does-not-exist"}}, "model.path", "is not a directory, a hub id"),
    (
        {"tasks": [{"env": "gtalign", "data_path": "/data/missing.parquet"}]},
        "tasks.0.data_path",
        "does not exist",
    ),
    (
        {"rollout": {"gpus_per_replica": 1}},
        "rollout.gpus_per_replica",
        "asks for 1 GPU(s) but this Ray cluster has no GPUs",
    ),
    ({"learner": {"gpus_per_worker": 0.5}}, "learner.gpus_per_worker", "this Ray cluster has no GPUs"),
    ({"rollout": {"replicas": 20}}, "", "the job needs 5.35 CPUs in all"),
    ({"tasks": [{"env": "chess"}]}, "tasks.0.env", "Input should be"),
    (
        {"judge": {"backend": "openai", "url": "http://judge.example/v1", "api_key_env": "PAYOFF_ADMIN_KEY"}},
        "judge.api_key_env",
        "PAYOFF_ADMIN_KEY holds a platform secret",
    ),
    ({"algorithm": "grpo", "rollout": {"group_size": 1}}, "", "rollout.group_size must be at least 2"),
]


@pytest.fixture
def ray_gateway(ray_session, make_settings):
    with GatewayServer(make_settings(connect_ray=True)) as server, client(server.url, ADMIN_KEY) as c:
        yield c


@pytest.mark.parametrize("patch,loc,msg", CASES, ids=[c[1] or c[2][:20] for c in CASES])
def test_invalid_spec_is_422_with_field_path(ray_gateway, patch, loc, msg):
    r = ray_gateway.post("/v1/jobs", json=merge(BASE, patch))
    assert r.status_code == 422, r.text
    errors = r.json()["errors"]
    assert any(e["loc"] == loc and msg in e["msg"] for e in errors), errors
    assert ray_gateway.get("/v1/jobs").json()["total"] == 0  # nothing stored, nothing started


def test_all_problems_reported_at_once_and_valid_spec_accepted(ray_gateway, tiny_model_path):
    bad = merge(
        BASE,
        {
            "model": {"path": "./nope"},
            "rollout": {"gpus_per_replica": 1},
            "tasks": [{"env": "math", "data_path": "no-such-set"}],
        },
    )
    locs = {e["loc"] for e in ray_gateway.post("/v1/jobs", json=bad).json()["errors"]}
    assert locs == {"model.path", "rollout.gpus_per_replica", "tasks.0.data_path"}
    ok = ray_gateway.post("/v1/jobs", json=merge(BASE, {"model": {"path": tiny_model_path}}))
    assert ok.status_code == 201 and ok.headers["location"] == f"/v1/jobs/{ok.json()['id']}"
    r = ray_gateway.post("/v1/jobs", content=b"name: x", headers={"Content-Type": "application/xml"})
    assert r.status_code == 422 and "application/yaml" in r.json()["errors"][0]["msg"]


def test_lone_surrogates_are_rejected_not_crashing(gateway_server):
    with client(gateway_server.url, ADMIN_KEY) as c:
        body = (
            '{"name": "x", "model": {"path": "\\ud800"}, '
            '"tasks": [{"env": "sokoban", "options": {"k": "\\udfff"}}]}'
        )
        r = c.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 422
        assert {e["loc"] for e in r.json()["errors"]} == {"model.path", "tasks.0.options.k"}
        r = c.post(
            "/v1/admin/keys",
            content='{"tenant": "t", "name": "\\ud800"}',
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "name"


def test_sandbox_and_quota_settings_from_env(tmp_path):
    from pathlib import Path

    from games.data import shared_data_dir
    from gateway.settings import LOOPBACK_HOSTS, GatewaySettings, Quotas
    from services.models import models_dir

    env = {
        "PAYOFF_DATA_DIR": str(tmp_path),
        "PAYOFF_QUOTA_MAX_STEPS": "500",
        "PAYOFF_QUOTA_MAX_TOKENS": "1e9",
        "PAYOFF_QUOTA_MAX_CPUS": "3.5",
        "PAYOFF_QUOTA_MAX_JOBS": "2",
        "PAYOFF_ALLOWED_ROOTS": "/data/a:/data/b,/data/c",
        "PAYOFF_JUDGE_HOSTS": "judge.svc, SGLang.svc",
        "PAYOFF_JUDGE_KEY_ENVS": "OPENAI_API_KEY",
        "PAYOFF_GATEWAY_MAX_SPEC_BYTES": "4096",
    }
    s = GatewaySettings.from_env(env)
    assert s.quota == Quotas(max_steps=500, max_tokens=10**9, max_cpus=3.5, max_jobs=2)
    assert s.roots() == (Path("/data/a"), Path("/data/b"), Path("/data/c")) and s.max_spec_bytes == 4096
    assert s.allowed_judge_hosts() == {*LOOPBACK_HOSTS, "judge.svc", "sglang.svc"}
    assert s.judge_key_envs == ("OPENAI_API_KEY",)
    default = GatewaySettings.from_env({"PAYOFF_DATA_DIR": str(tmp_path)})
    assert default.roots() == (shared_data_dir(), models_dir(), tmp_path / "models")
    assert default.judge_key_envs == () and default.allowed_judge_hosts() == set(LOOPBACK_HOSTS)
    assert default.quota == Quotas()


def test_local_judge_model_is_sandboxed_like_the_policy(gateway_server):
    with client(gateway_server.url, ADMIN_KEY) as c:
        body = merge(BASE, {"judge": {"backend": "transformers", "model": "/etc"}})
        r = c.post("/v1/jobs", json=body)
        assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "judge.model", r.text
        assert "that this gateway allows" in r.json()["errors"][0]["msg"]
        hosted = merge(
            BASE, {"judge": {"backend": "openai", "url": "http://localhost:8000/v1", "model": "gpt"}}
        )
        assert c.post("/v1/jobs", json=hosted).status_code == 201  # a remote model name is not a path

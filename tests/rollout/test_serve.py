"""Rollout replicas on real Ray Serve with the tiny model: OpenAI chat, native generate, episodes,
weight updates through the sync protocol, replica replacement after a kill."""

from __future__ import annotations

import time

import httpx
import pytest
import torch
from ray import serve

from rollout.engine import GenRequest, SamplingParams
from rollout.serve import RolloutConfig, build_app
from services.weights import WeightSender, WeightSyncConfig
from tests.helpers import INTERNAL


@pytest.fixture
def rollout_app(serve_url, redis_url, job_id, tiny_model_path):
    cfg = RolloutConfig(
        model=tiny_model_path, replicas=2, cpus_per_replica=0.25, job_id=job_id, redis_url=redis_url
    )
    handle = serve.run(build_app(cfg), name=f"rollout-{job_id}", route_prefix=f"/{job_id}")
    yield handle, f"{serve_url}/{job_id}", cfg
    serve.delete(f"rollout-{job_id}")


def _replicas(redis_client, job_id, n, timeout=30):
    sender = WeightSender(redis_client, job_id, WeightSyncConfig(timeout_s=30))
    deadline = time.monotonic() + timeout
    while len(sender.live_replicas()) < n and time.monotonic() < deadline:
        time.sleep(0.2)
    return sender


@pytest.mark.slow
def test_rollout_deployment_end_to_end(rollout_app, redis_client, job_id, tiny_model_path):
    handle, url, cfg = rollout_app
    # OpenAI-compatible chat completions over HTTP
    body = {
        "messages": [{"role": "user", "content": "What is 2 + 3?"}],
        "max_tokens": 8,
        "temperature": 0,
        "logprobs": True,
        "n": 2,
    }
    r = INTERNAL.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "chat.completion" and len(out["choices"]) == 2
    assert out["choices"][0]["message"]["content"] == out["choices"][1]["message"]["content"]  # greedy
    assert all(lp["logprob"] <= 0 for lp in out["choices"][0]["logprobs"]["content"])
    assert out["policy_versions"] == [[0], [0]]
    bad = INTERNAL.post(f"{url}/v1/chat/completions", json={"messages": []}, timeout=30)
    assert bad.status_code == 422

    # weight push through the sync protocol to both replicas; greedy output must equal a fresh model
    # loaded with the same weights (decode -> update -> decode)
    from transformers import AutoModelForCausalLM

    sender = _replicas(redis_client, job_id, 2)
    ref = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32).eval()
    torch.manual_seed(123)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    named = list(ref.state_dict().items())
    res = sender.push(named, version=1)
    assert sorted(res.ok) == sorted(sender.live_replicas()) and not res.failed
    prompt = [1, 291, 201, 708, 526, 317, 290, 320, 33, 2, 201, 1, 472, 461, 201]
    greedy = SamplingParams(max_tokens=10, temperature=0)
    outs = [handle.generate.remote(GenRequest(prompt_ids=prompt, params=greedy)).result() for _ in range(4)]
    with torch.no_grad():
        expect = ref.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False)[0, len(prompt) :]
    for o in outs:
        assert o.versions == [1] * len(o.token_ids)
        assert o.token_ids == expect.tolist()[: len(o.token_ids)]
        # engine logprobs match a transformers forward pass of the new weights
        with torch.no_grad():
            lp = torch.log_softmax(ref(torch.tensor([prompt + o.token_ids])).logits[0].float(), -1)
        ref_lp = [float(lp[len(prompt) - 1 + k, t]) for k, t in enumerate(o.token_ids)]
        assert max(abs(a - b) for a, b in zip(ref_lp, o.logprobs)) < 1e-4

    # episodes endpoint: a GRL group, trajectories written to the job's stream
    r = INTERNAL.post(
        f"{url}/v1/episodes",
        json={
            "env": "sokoban",
            "seed": 3,
            "group_size": 2,
            "max_turns": 2,
            "sampling": {"max_tokens": 16, "seed": 0},
            "enqueue": True,
        },
        timeout=120,
    )
    assert r.status_code == 200, r.text
    data = r.json()
    assert len(data["episodes"]) == 2 and len(data["enqueued"]) == 2
    assert all(t["versions"] == [1] for t in data["trajectories"])
    assert INTERNAL.post(f"{url}/v1/episodes", json={"env": "chess"}, timeout=30).status_code == 422
    # the replica's HTTP routes are internal: no token or a wrong one is refused before anything runs
    body = {"env": "sokoban", "enqueue": True}
    assert httpx.post(f"{url}/v1/episodes", json=body, timeout=30).status_code == 403
    wrong = {"X-Payoff-Internal": "guess"}
    assert httpx.post(f"{url}/v1/episodes", json=body, headers=wrong, timeout=30).status_code == 403
    assert httpx.get(f"{url}/metrics", timeout=30).status_code == 403

    # kill a replica: Serve replaces it, requests keep being answered
    import ray

    pids = {INTERNAL.get(f"{url}/healthz", timeout=10).json()["pid"] for _ in range(12)}
    actors = [a for a in ray.util.list_named_actors(all_namespaces=True) if "RolloutReplica" in a["name"]]
    assert actors
    ray.kill(ray.get_actor(actors[0]["name"], namespace=actors[0]["namespace"]), no_restart=True)
    deadline = time.monotonic() + 90
    new_pids: set = set()
    while time.monotonic() < deadline and not (new_pids - pids):
        try:
            new_pids.add(INTERNAL.get(f"{url}/healthz", timeout=10).json()["pid"])
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    assert new_pids - pids, "no replacement replica answered"

"""A job through the whole stack on real Ray and Serve: the gateway deploys the job's rollout (tiny model)
and rules-judge apps, a learner component (tests/gateway/probe_learner.py) plays real episodes through the
rollout app and publishes step metrics and a checkpoint; chat, steering and a served checkpoint answer from
the job's model; the gateway is killed mid-job (lease abandoned) and a new one finishes the job."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import httpx
import pytest

from games.parsing import PAYOFF_KEYS
from gateway.server import GatewayServer
from judge.component import JudgeComponent
from rollout.component import RolloutComponent
from services.jobs import LEARNER, ComponentRegistry, judge_app_name, rollout_app_name, served_app_name
from tests.gateway.conftest import ADMIN_KEY, client
from tests.gateway.probe_learner import ProbeLearner, release_key

pytestmark = pytest.mark.slow


def registry(hold: bool = True) -> ComponentRegistry:
    reg = ComponentRegistry()
    reg.register("rollout", RolloutComponent, 10)
    reg.register("judge", JudgeComponent, 20)
    reg.register(LEARNER, functools.partial(ProbeLearner, hold=hold), 90)
    return reg


def spec(model: str, steps: int = 3) -> dict:
    return {
        "name": "e2e",
        "model": {"path": model},
        "algorithm": "ppo",
        "tasks": [{"env": "sokoban"}],
        "rollout": {"cpus_per_replica": 0.25, "max_response_tokens": 64},
        "asynchrony": {"window_tokens": 16},
        "learner": {"steps": steps, "checkpoint_every": 2, "cpus_per_worker": 0.1},
    }


def wait_for(c: httpx.Client, jid: str, until, timeout_s: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        job = c.get(f"/v1/jobs/{jid}").json()
        if until(job):
            return job
        assert time.monotonic() < deadline, f"timed out: {job['state']}: {job['detail']} {job['error']}"
        time.sleep(0.25)


def apps() -> set[str]:
    from ray import serve

    return set(serve.status().applications)


def cleanup(jid: str) -> None:
    from ray import serve

    for name in (rollout_app_name(jid), judge_app_name(jid), served_app_name(jid)):
        if name in apps():
            serve.delete(name)


def test_job_lifecycle_chat_steer_restart(ray_session, serve_url, tiny_model_path, make_settings, gw_redis):
    settings = make_settings(connect_ray=True, run_jobs=True, poll_s=0.25)
    reg = registry()
    first = GatewayServer(settings, registry=reg).start()
    jid = None
    try:
        with client(first.url, ADMIN_KEY) as c:
            jid = c.post("/v1/jobs", json=spec(tiny_model_path)).json()["id"]
            # the held probe learner can finish its 3 steps before the runner's next tick marks the job
            # running (all components up): wait for both
            job = wait_for(
                c, jid, lambda j: j["state"] not in ("queued", "starting") and j["summary"]["step"] == 3
            )
            assert job["state"] == "running", job
            assert {rollout_app_name(jid), judge_app_name(jid)} <= apps()
            assert set(job["components"]) == {"rollout", "judge", LEARNER}
            curve = c.get(f"/v1/jobs/{jid}/metrics").json()
            assert curve["steps"] == [1, 2, 3] and len(curve["reward"]) == 3
            assert all(r is not None and r <= 0 for r in curve["reward"])  # the random model never solves it
            assert [ck["path"] for ck in curve["checkpoints"]] == [tiny_model_path]
            # the runner reports the job's trajectory queue (every few seconds): 3 steps x 2 trajectories
            job = wait_for(c, jid, lambda j: j["summary"]["queue"].get("acked") == 6, timeout_s=30)
            assert job["summary"]["queue"]["put"] == 6 and job["summary"]["queue"]["depth"] == 0

            # OpenAI chat routed to the job's rollout replicas, by `model` or by header
            body = {
                "model": jid,
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 4,
                "temperature": 0,
            }
            out = c.post("/v1/chat/completions", json=body).json()
            assert out["model"] == jid and out["object"] == "chat.completion"
            assert out["usage"]["completion_tokens"] <= 4 and out["policy_versions"] == [[0]]
            by_header = c.post(
                "/v1/chat/completions", json=body | {"model": None}, headers={"X-Payoff-Job": jid}
            )
            assert by_header.json()["choices"][0]["message"] == out["choices"][0]["message"]  # greedy
            # stream: OpenAI chunks (role, content, finish reason, usage when asked), then [DONE]
            streamed = c.post(
                "/v1/chat/completions",
                json=body | {"stream": True, "stream_options": {"include_usage": True}},
            )
            assert streamed.status_code == 200 and streamed.headers["content-type"].startswith(
                "text/event-stream"
            )
            events = [
                ln.removeprefix("data: ") for ln in streamed.text.splitlines() if ln.startswith("data: ")
            ]
            assert events[-1] == "[DONE]"
            chunks = [json.loads(e) for e in events[:-1]]
            assert all(ch["object"] == "chat.completion.chunk" and ch["model"] == jid for ch in chunks)
            text = "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks if ch["choices"])
            assert text == out["choices"][0]["message"]["content"]  # greedy: the same reply
            assert chunks[-1]["usage"] == out["usage"]
            # fields we do not implement are refused by name, never ignored
            r = c.post("/v1/chat/completions", json=body | {"tools": [], "presence_penalty": 1})
            assert r.status_code == 400 and "presence_penalty, tools" in r.json()["detail"]
            # stop strings end the reply before them; a prompt beyond the context is a 400, not a crash
            reply = out["choices"][0]["message"]["content"]
            if len(reply) > 1:
                stop = reply[1:3]
                cut = c.post("/v1/chat/completions", json=body | {"stop": [stop]}).json()
                assert cut["choices"][0]["message"]["content"] == reply[: reply.find(stop)]
                assert cut["choices"][0]["finish_reason"] == "stop"
            huge = body | {"messages": [{"role": "user", "content": "hello " * 40_000}]}
            r = c.post("/v1/chat/completions", json=huge)
            assert r.status_code == 400 and "context" in r.json()["detail"], r.text
            assert c.post("/v1/chat/completions", json=body | {"seed": 2**70}).status_code == 422
            models = c.get("/v1/models").json()
            assert models["object"] == "list" and [m["id"] for m in models["data"]] == [jid]

            # steering: the random tiny model writes no payoff block; a given matrix steers stage 2
            steer = {
                "model": jid,
                "question": "What is 2+2?",
                "stage1_max_tokens": 12,
                "max_tokens": 6,
                "seed": 1,
            }
            r = c.post("/v1/steer", json=steer).json()
            assert r["ok"] is False and "payoff" in r["error"] and r["usage"]["stage1_tokens"] >= 1
            cells = {k: {"LLM": 1.0, "user": 1.0} for k in PAYOFF_KEYS}
            cells["VQ_CQ"] = {"LLM": 2.0, "user": 2.0}
            r = c.post("/v1/steer", json=steer | {"payoff": cells}).json()
            assert r["ok"] and r["action"] == "CQ" and isinstance(r["response"], str)

        # the gateway dies mid-job without giving its lease back; a new one carries on
        first.stop(release_lease=False)
        second = GatewayServer(settings, registry=reg).start()
        try:
            with client(second.url, ADMIN_KEY) as c:
                assert c.get(f"/v1/jobs/{jid}").json()["state"] == "running"
                gw_redis.set(release_key(jid), 1)
                job = wait_for(c, jid, lambda j: j["state"] in ("succeeded", "failed"))
                assert job["state"] == "succeeded", job
                assert list(job["state_times"]) == ["queued", "starting", "running", "succeeded"]
                assert not {rollout_app_name(jid), judge_app_name(jid)} & apps()  # torn down
                assert second.gateway.runner.leader
                with c.stream("GET", f"/v1/jobs/{jid}/events") as s:
                    text = "".join(s.iter_text())
                statuses = [ln for ln in text.splitlines() if ln.startswith("data") and '"status"' in ln]
                assert [s.split('"state":"')[1].split('"')[0] for s in statuses] == [
                    "queued",
                    "starting",
                    "running",
                    "succeeded",
                ]
                assert text.count("event: step") == 3 and text.rstrip().endswith('"state": "succeeded"}')
                # chat now needs a served checkpoint
                body = {"model": jid, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
                assert c.post("/v1/chat/completions", json=body).status_code == 409
                served = c.post(f"/v1/jobs/{jid}/serve", json={})
                assert served.status_code == 202 and served.json()["checkpoint"] == tiny_model_path
                deadline = time.monotonic() + 120
                while (r := c.post("/v1/chat/completions", json=body)).status_code == 409:
                    assert time.monotonic() < deadline
                    time.sleep(0.5)
                assert r.status_code == 200 and r.json()["model"] == jid
                assert c.post(f"/v1/jobs/{jid}/serve", json={"checkpoint": "/etc"}).status_code == 404
                assert c.delete(f"/v1/jobs/{jid}/serve").status_code == 204
                assert served_app_name(jid) not in apps()
        finally:
            second.stop()
    finally:
        first.stop()
        if jid:
            cleanup(jid)


def test_deploy_failure_is_recorded_with_its_cause(ray_session, serve_url, make_settings, tmp_path):
    broken = tmp_path / "models" / "broken-model"  # under the data dir's models cache: an allowed root
    broken.mkdir(parents=True)
    (broken / "config.json").write_text('{"model_type": "not-a-real-architecture"}')
    settings = make_settings(connect_ray=True, run_jobs=True, poll_s=0.25)
    with GatewayServer(settings, registry=registry(hold=False)) as server, client(server.url, ADMIN_KEY) as c:
        jid = c.post("/v1/jobs", json=spec(str(broken))).json()["id"]
        try:
            job = wait_for(c, jid, lambda j: j["state"] in ("failed", "succeeded", "running"))
            assert job["state"] == "failed" and job["error"].startswith("rollout failed:"), job
            assert "failed to start" in job["error"] and "tokenizer" in job["error"]  # Serve's own cause
            assert rollout_app_name(jid) not in apps() and judge_app_name(jid) not in apps()
        finally:
            cleanup(jid)
    assert Path(broken).exists()

"""A hostile-spec corpus through the HTTP API, as an attacker (or a careless tenant) meets it.

Every spec below gets a 4xx with a JSON body naming the field path; nothing is stored for any of them
(records counted before and after), and afterwards a normal spec is still accepted and listing works for
every tenant. Then the other half of the issue: a stored record that fails to load (written straight into
Redis) is reported for that job only, and the runner fails it and keeps admitting everyone else's jobs.
"""

from __future__ import annotations

import json
import os
import time
from types import SimpleNamespace

import pytest

from gateway.server import GatewayServer
from gateway.settings import Quotas
from services import keys
from services.jobs import JobState, StatusEvent, read_events
from tests.gateway.conftest import ADMIN_KEY, client

BASE = {
    "name": "h",
    "tasks": [{"env": "sokoban"}],
    "rollout": {"cpus_per_replica": 0.25},
    "learner": {"cpus_per_worker": 0.25, "steps": 10},
}
QUOTA = Quotas(max_steps=1000, max_replicas=4, max_cpus=8, max_gpus=0, max_jobs=3, max_tokens=10**8)
BOMB = """a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
"""


def spec(**patch) -> dict:
    out = json.loads(json.dumps(BASE))
    for k, v in patch.items():
        out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def post(c, body, kind: str = "application/json"):
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return c.post("/v1/jobs", content=content, headers={"Content-Type": kind})


def records(r) -> int:
    return sum(1 for _ in r.scan_iter(match="payoff:{*}:job")) + int(r.zcard(keys.JOBS_ALL))


@pytest.fixture
def env(make_settings, tmp_path, gw_redis):
    """A gateway whose sandbox allows only tmp/roots, the judge host judge.internal and the key JUDGE_KEY."""
    roots = tmp_path / "roots"
    (roots / "model").mkdir(parents=True)
    (roots / "model" / "config.json").write_text("{}")
    (roots / "not-blocksworld.json").write_text("root:x:0:0:root:/root:/bin/bash\n")
    settings = make_settings(
        allowed_roots=(roots,),
        judge_hosts=("judge.internal",),
        judge_key_envs=("JUDGE_KEY",),
        quota=QUOTA,
        rate_per_s=1000.0,
        rate_burst=1000,
    )
    with GatewayServer(settings) as server, client(server.url, ADMIN_KEY) as admin:
        made = [admin.post("/v1/admin/keys", json={"tenant": t}).json()["key"] for t in ("acme", "globex")]
        with client(server.url, made[0]) as acme, client(server.url, made[1]) as globex:
            yield SimpleNamespace(
                admin=admin, acme=acme, globex=globex, roots=roots, data=tmp_path, r=gw_redis
            )


def corpus(e) -> list[tuple[str, object, str, int, str, str]]:
    """(name, body, content type, status, field path the error names, words of its message)."""
    deep_json = '{"tasks": [{"env": "sokoban", "options": {"a": ' + "[" * 1000 + "]" * 1000 + "}}]}"
    outside = e.data / "outside.json"
    outside.write_text("[]")
    return [
        ("inf-json", spec(learner={"learning_rate": 1e999}), "application/json", 422, "learner.learning_rate", "finite"),
        ("inf-literal", '{"learner": {"learning_rate": Infinity}}', "application/json", 422, "learner.learning_rate", "finite"),
        ("inf-yaml", "learner: {learning_rate: .inf}", "application/yaml", 422, "learner.learning_rate", "finite"),
        ("nan-in-options", "tasks: [{env: sokoban, options: {x: .nan}}]", "application/yaml", 422, "tasks.0.options.x", "finite"),
        ("deep-json", deep_json, "application/json", 422, "tasks.0.options.a." + ".".join(["0"] * 28), "deeper than 32"),
        ("deep-brackets", "[" * 2048 + "]" * 2048, "application/yaml", 422, ".".join(["0"] * 32), "deeper than 32"),
        ("deep-yaml-flow", "x: " + "[" * 2048 + "]" * 2048, "application/yaml", 422, "x." + ".".join(["0"] * 31), "deeper than 32"),
        ("deep-yaml-block", "a:\n" + "".join("  " * i + "b:\n" for i in range(1, 60)), "application/yaml", 422, "a." + ".".join(["b"] * 31), "deeper than 32"),
        ("alias-bomb", BOMB, "application/yaml", 422, "a", "anchors"),
        ("merge-key", "base: &b {steps: 1}\nlearner:\n  <<: *b\n", "application/yaml", 422, "base", "anchors"),
        ("python-tag", "name: !!python/object/apply:os.system [id]", "application/yaml", 422, "name", "tag"),
        ("two-documents", "name: a\n---\nname: b\n", "application/yaml", 422, "", "one YAML document"),
        ("duplicate-key", "learner: {steps: 1, steps: 2}", "application/yaml", 422, "learner", "appears twice"),
        ("huge-spec", "name: x\n" + "#" * 70_000, "application/yaml", 413, "", "limit is 65536"),
        ("long-string", spec(name="x" * 9000), "application/json", 422, "name", "longer than 8192"),
        ("long-list", spec(tasks=[{"env": "sokoban"}] * 1001), "application/json", 422, "tasks", "more than 1000"),
        ("digits", '{"seed": ' + "9" * 5000 + "}", "application/json", 422, "", "not a valid document"),
        ("steps-1e18", spec(learner={"steps": 1e18}), "application/json", 422, "learner.steps", "less than or equal"),
        ("seed-2^70", spec(seed=2**70), "application/json", 422, "seed", "less than or equal"),
        ("group-1e9", spec(rollout={"group_size": 10**9}), "application/json", 422, "rollout.group_size", "less than"),
        ("tiny-cpus", spec(rollout={"replicas": 1024, "cpus_per_replica": 1e-6}), "application/json", 422, "rollout.cpus_per_replica", "greater than or equal to 0.05"),
        ("replica-quota", spec(rollout={"replicas": 8}), "application/json", 422, "rollout.replicas", "PAYOFF_QUOTA_MAX_REPLICAS"),
        ("step-quota", spec(learner={"steps": 5000}), "application/json", 422, "learner.steps", "quota of 1,000"),
        ("cpu-quota", spec(learner={"workers": 4, "cpus_per_worker": 2.5}), "application/json", 422, "", "PAYOFF_QUOTA_MAX_CPUS"),
        ("gpu-quota", spec(rollout={"gpus_per_replica": 1}), "application/json", 422, "", "PAYOFF_QUOTA_MAX_GPUS"),
        ("token-quota", spec(learner={"steps": 1000, "batch_size": 512, "mini_batch_size": 8}), "application/json", 422, "", "PAYOFF_QUOTA_MAX_TOKENS"),
        ("etc-model", spec(model={"path": "/etc"}), "application/json", 422, "model.path", "that this gateway allows"),
        ("relative-escape", spec(model={"path": str(e.roots / ".." / "..")}), "application/json", 422, "model.path", "that this gateway allows"),
        ("nul-in-path", spec(model={"path": "/tmp/a\x00b"}), "application/json", 422, "model.path", "control characters"),
        ("passwd-data", spec(tasks=[{"env": "blocksworld", "data_path": "/etc/passwd"}]), "application/json", 422, "tasks.0.data_path", "outside the data this gateway allows"),
        ("dotdot-data", spec(tasks=[{"env": "blocksworld", "data_path": f"{e.roots}/../outside.json"}]), "application/json", 422, "tasks.0.data_path", "outside the data"),
        ("not-blocksworld", spec(tasks=[{"env": "blocksworld", "data_path": str(e.roots / "not-blocksworld.json")}]), "application/json", 422, "tasks.0.data_path", "cannot be built"),
        ("bad-option", spec(tasks=[{"env": "gtalign-strategy", "options": {"every": "x"}}]), "application/json", 422, "tasks.0.options", "cannot be built"),
        ("file-url", spec(judge={"backend": "openai", "url": "file:///etc/passwd"}), "application/json", 422, "judge.url", "http:// or https://"),
        ("gopher-url", spec(judge={"backend": "openai", "url": "gopher://127.0.0.1:6379/_INFO"}), "application/json", 422, "judge.url", "http:// or https://"),
        ("metadata-host", spec(judge={"backend": "openai", "url": "http://169.254.169.254/v1"}), "application/json", 422, "judge.url", "PAYOFF_JUDGE_HOSTS"),
        ("at-trick", spec(judge={"backend": "openai", "url": "http://judge.internal@evil.example/v1"}), "application/json", 422, "judge.url", "no credentials"),
        ("home-key", spec(judge={"backend": "openai", "url": "http://judge.internal/v1", "api_key_env": "HOME"}), "application/json", 422, "judge.api_key_env", "PAYOFF_JUDGE_KEY_ENVS"),
        ("platform-key", spec(judge={"backend": "openai", "url": "http://127.0.0.1:9/v1", "api_key_env": "REDIS_URL"}), "application/json", 422, "judge.api_key_env", "platform secret"),
    ]  # fmt: skip


def test_hostile_corpus_is_refused_with_field_paths_and_nothing_is_stored(env):
    before = records(env.r)
    for name, body, kind, status, loc, words in corpus(env):
        t0 = time.monotonic()
        r = post(env.acme, body, kind)
        assert r.status_code == status, (name, r.status_code, r.text[:500])
        assert r.headers["content-type"].startswith("application/json"), name
        errors = r.json()["errors"]
        assert any(e["loc"] == loc and words in e["msg"] for e in errors), (name, errors)
        assert time.monotonic() - t0 < 5, f"{name} took {time.monotonic() - t0:.1f} s"
    huge = env.acme.post("/v1/jobs", content=b"x" * (2 << 20), headers={"Content-Type": "application/yaml"})
    assert huge.status_code == 413 and "larger than" in huge.json()["detail"]
    assert records(env.r) == before == 0  # nothing stored for any of them
    for c in (env.acme, env.globex):
        assert post(c, spec()).status_code == 201
        listed = c.get("/v1/jobs").json()
        assert listed["total"] == 1 and "unreadable" not in listed
    assert env.admin.get("/v1/jobs").json()["total"] == 2


def test_paths_refused_outside_the_sandbox_reveal_nothing(env):
    """Outside the allowed roots, an existing and a missing path get the same message."""

    def msg(c, loc: str, body: dict) -> str:
        r = post(c, body)
        assert r.status_code == 422, r.text
        return next(e["msg"] for e in r.json()["errors"] if e["loc"] == loc)

    for exists, missing in (("/etc", "/etc-no-such-dir"), (str(env.data / "outside.json"), "/nope/x.json")):
        (env.data / "outside.json").write_text("[]")
        a = msg(env.acme, "model.path", spec(model={"path": exists}))
        b = msg(env.acme, "model.path", spec(model={"path": missing}))
        assert a.replace(repr(exists), "P") == b.replace(repr(missing), "P")
        task = {"env": "blocksworld"}
        a = msg(env.acme, "tasks.0.data_path", spec(tasks=[{**task, "data_path": exists}]))
        b = msg(env.acme, "tasks.0.data_path", spec(tasks=[{**task, "data_path": missing}]))
        assert a.replace(repr(exists), "P") == b.replace(repr(missing), "P")
    # inside the roots, an allowed model directory is accepted and stored as the absolute path checked
    ok = post(env.acme, spec(model={"path": str(env.roots / "sub" / ".." / "model")}))
    assert ok.status_code == 201 and ok.json()["spec"]["model"]["path"] == str(env.roots / "model")


def test_a_tenant_may_use_its_own_job_dirs_never_another_tenants(env):
    job = post(env.acme, spec()).json()["id"]
    final = env.data / "jobs" / job / "final"
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")
    os.symlink(final, env.roots / "link-to-acme")  # a symlink inside an allowed root
    before = records(env.r)
    for path in (str(final), str(env.roots / "link-to-acme"), f"{env.roots}/../jobs/{job}/final"):
        r = post(env.globex, spec(model={"path": path}))
        assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "model.path", r.text
        assert "that this gateway allows" in r.json()["errors"][0]["msg"]
    assert records(env.r) == before
    mine = post(env.acme, spec(model={"path": str(final)}))
    assert mine.status_code == 201 and mine.json()["spec"]["model"]["path"] == str(final)
    linked = post(env.acme, spec(model={"path": str(env.roots / "link-to-acme")}))
    assert linked.status_code == 201  # resolves into acme's own job: allowed for acme


def test_allowed_judge_settings_are_accepted(env):
    ok = spec(
        judge={"backend": "openai", "url": "https://judge.internal:8443/v1", "api_key_env": "JUDGE_KEY"}
    )
    assert post(env.acme, ok).status_code == 201
    local = spec(judge={"backend": "openai", "url": "http://127.0.0.1:30000/v1"})
    assert post(env.acme, local).status_code == 201  # loopback is always allowed


def test_concurrent_job_quota_per_tenant(env):
    ids = [post(env.acme, spec()).json()["id"] for _ in range(QUOTA.max_jobs)]
    r = post(env.acme, spec())
    assert r.status_code == 422, r.text
    assert "3 jobs queued or running, limit 3" in r.json()["errors"][0]["msg"]
    assert "PAYOFF_QUOTA_MAX_JOBS" in r.json()["errors"][0]["msg"]
    assert env.acme.get("/v1/jobs").json()["total"] == 3  # the refused one was not stored
    assert post(env.globex, spec()).status_code == 201  # another tenant is not affected
    assert env.acme.post(f"/v1/jobs/{ids[0]}/cancel").status_code == 202
    assert post(env.acme, spec()).status_code == 201  # a slot freed up


def corrupt(r, job_id: str, garbage: bool = False) -> None:
    """What an older version or a bug leaves behind: the .inf job of the issue stored as null, or junk."""
    raw = json.loads(r.get(keys.job_record(job_id)))
    raw["spec"]["learner"]["learning_rate"] = None
    r.set(keys.job_record(job_id), b"\x00not json" if garbage else json.dumps(raw))


@pytest.mark.parametrize("garbage", [False, True], ids=["null-learning-rate", "not-json"])
def test_an_unreadable_record_is_that_jobs_problem_only(env, garbage):
    bad = post(env.acme, spec(name="bad")).json()["id"]
    good = post(env.acme, spec(name="good")).json()["id"]
    theirs = post(env.globex, spec(name="theirs")).json()["id"]
    corrupt(env.r, bad, garbage)
    listed = env.acme.get("/v1/jobs").json()
    assert listed["total"] == 2 and [j["id"] for j in listed["jobs"]] == [good]
    [row] = listed["unreadable"]
    assert row["id"] == bad and row["state"] == "queued" and bad in row["error"]
    queued = env.acme.get("/v1/jobs", params={"state": "queued"}).json()
    assert [u["id"] for u in queued["unreadable"]] == [bad] and queued["total"] == 2
    assert env.admin.get("/v1/jobs").json()["total"] == 3
    assert [j["id"] for j in env.globex.get("/v1/jobs").json()["jobs"]] == [theirs]
    got = env.acme.get(f"/v1/jobs/{bad}")
    assert got.status_code == 500 and bad in got.json()["detail"] and got.json()["errors"], got.text
    if not garbage:
        assert "learning_rate" in got.json()["detail"]
    cancel = env.acme.post(f"/v1/jobs/{bad}/cancel")
    assert cancel.status_code == 409 and "cannot be cancelled" in cancel.json()["detail"]
    for r in (env.globex.get(f"/v1/jobs/{bad}"), env.globex.post(f"/v1/jobs/{bad}/cancel")):
        assert r.status_code == 404 and r.json()["detail"] == f"job {bad!r} not found"  # no oracle
    assert env.acme.get(f"/v1/jobs/{good}").json()["state"] == "queued"
    assert post(env.globex, spec()).status_code == 201


def test_the_runner_fails_an_unreadable_record_and_keeps_admitting(make_settings, gw_redis):
    from tests.gateway.test_runner import World, registry

    world = World()
    settings = make_settings(run_jobs=True, max_concurrent_jobs=4)
    with GatewayServer(settings, registry=registry(world)) as server, client(server.url, ADMIN_KEY) as admin:
        made = [admin.post("/v1/admin/keys", json={"tenant": t}).json()["key"] for t in ("acme", "globex")]
        with client(server.url, made[0]) as acme, client(server.url, made[1]) as globex:
            runner = server.gateway.runner
            runner.stop()  # hold the runner while the bad records are written
            runner.free_resources = lambda committed: None  # no capacity wait (Ray may run in this session)
            running = post(acme, spec(name="running")).json()["id"]
            runner.tick()
            assert server.gateway.store.get(running).state == JobState.STARTING
            queued = post(acme, spec(name="queued")).json()["id"]
            corrupt(gw_redis, running)
            corrupt(gw_redis, queued, garbage=True)
            runner.start()
            theirs = post(globex, spec(name="theirs")).json()["id"]
            deadline = time.monotonic() + 20
            while globex.get(f"/v1/jobs/{theirs}").json()["state"] != "running":
                assert time.monotonic() < deadline, globex.get(f"/v1/jobs/{theirs}").json()
                time.sleep(0.1)
            for job_id in (running, queued):
                [row] = [u for u in acme.get("/v1/jobs").json()["unreadable"] if u["id"] == job_id]
                assert row["state"] == "failed", row
                status = [e for _, e in read_events(gw_redis, job_id) if isinstance(e, StatusEvent)][-1]
                assert status.state == JobState.FAILED and job_id in status.error
            assert {c[1] for c in world.calls if c[0] == "stop" and c[2] == running} == {
                "rollout",
                "judge",
                "learner",
            }  # what was started for the unreadable job was stopped
            assert not any(c[2] == queued for c in world.calls)  # nothing was started for it
            ready = admin.get("/readyz").json()
            assert ready["runner"]["last_error"] is None, ready
            assert post(acme, spec(name="after")).status_code == 201

"""Job store on a real Redis: state machine, timestamps, indexes, status events, survival across clients,
records that fail to load (reported per job, quarantined, skipped by the runner), the per-tenant cap."""

from __future__ import annotations

import json
import threading

import pytest

from gateway.store import JobNotFound, JobStore, JobUnreadable, TenantQuotaExceeded
from services import keys
from services.config import redis_client
from services.jobs import (
    CheckpointEvent,
    InvalidTransition,
    JobState,
    StatusEvent,
    StepEvent,
    publish_event,
    read_events,
    read_summary,
)
from services.jobspec import JobSpec


def test_lifecycle_timestamps_and_events(gw_redis):
    store = JobStore(gw_redis)
    job = store.create("acme", JobSpec(name="My.Job_1"))
    assert job.id.startswith("my-job-1-") and job.state == JobState.QUEUED
    assert store.ids(JobState.QUEUED) == [job.id]
    store.transition(job.id, JobState.STARTING)
    store.transition(job.id, JobState.RUNNING)
    done = store.transition(job.id, JobState.FAILED, error="learner failed: OOM")
    assert done.error == "learner failed: OOM" and done.state.terminal
    assert list(done.state_times) == [JobState.QUEUED, JobState.STARTING, JobState.RUNNING, JobState.FAILED]
    times = list(done.state_times.values())
    assert times == sorted(times)
    assert store.ids(JobState.FAILED) == [job.id] and store.ids(JobState.QUEUED) == []
    assert store.counts()[JobState.FAILED] == 1
    statuses = [e.state for _, e in read_events(gw_redis, job.id) if isinstance(e, StatusEvent)]
    assert statuses == ["queued", "starting", "running", "failed"]
    with pytest.raises(InvalidTransition, match="a failed job cannot become running"):
        store.transition(job.id, JobState.RUNNING)
    with pytest.raises(InvalidTransition):
        store.transition(store.create("acme", JobSpec()).id, JobState.SUCCEEDED)  # queued → succeeded
    with pytest.raises(JobNotFound):
        store.transition("nope", JobState.RUNNING)


def test_cancel_queued_is_immediate_running_is_flagged(gw_redis):
    store = JobStore(gw_redis)
    queued = store.create("acme", JobSpec())
    assert store.request_cancel(queued.id).state == JobState.CANCELLED
    running = store.create("acme", JobSpec())
    store.transition(running.id, JobState.STARTING)
    flagged = store.request_cancel(running.id)
    assert flagged.state == JobState.STARTING and flagged.cancel_requested
    assert store.request_cancel(queued.id).state == JobState.CANCELLED  # terminal: unchanged


def test_list_filters_and_survives_a_new_client(gw_redis, gw_redis_url):
    store = JobStore(gw_redis)
    ids = [store.create(t, JobSpec()).id for t in ("acme", "acme", "globex")]
    store.transition(ids[0], JobState.STARTING)
    # a new client (a restarted gateway) sees exactly the same jobs
    other = JobStore(redis_client(gw_redis_url))
    page, total = other.list("acme")
    assert total == 2 and [j.id for j in page] == [ids[1], ids[0]]  # newest first
    page, total = other.list(None, [JobState.QUEUED])
    assert total == 2 and {j.id for j in page} == {ids[1], ids[2]}
    page, total = other.list(None, limit=1, offset=1)
    assert total == 3 and [j.id for j in page] == [ids[1]]
    assert other.get(ids[0]).state == JobState.STARTING


def test_summary_follows_step_and_checkpoint_events(gw_redis):
    store = JobStore(gw_redis)
    job = store.create("acme", JobSpec())
    publish_event(gw_redis, StepEvent(job_id=job.id, step=0, metrics={"reward_mean": 0.25}))
    publish_event(gw_redis, StepEvent(job_id=job.id, step=1, policy_version=1, metrics={"reward_mean": 0.5}))
    publish_event(gw_redis, CheckpointEvent(job_id=job.id, step=1, path="/ckpt/1"))
    s = read_summary(gw_redis, job.id)
    assert (s.step, s.policy_version, s.metrics, s.checkpoints, s.last_checkpoint) == (
        1,
        1,
        {"reward_mean": 0.5},
        1,
        "/ckpt/1",
    )
    assert store.get(job.id).summary.step == 1
    # reading after an id returns only later events
    events = read_events(gw_redis, job.id)
    assert [e.type for _, e in read_events(gw_redis, job.id, after=events[1][0])] == ["step", "checkpoint"]


def _corrupt(r, job_id: str, raw: bytes | None = None) -> None:
    """A record an older version (or a bug) left: the issue's `.inf` learning rate stored as null."""
    data = json.loads(r.get(keys.job_record(job_id)))
    data["spec"]["learner"]["learning_rate"] = None
    r.set(keys.job_record(job_id), raw if raw is not None else json.dumps(data))


def test_unreadable_record_is_reported_for_that_job_only(gw_redis):
    store = JobStore(gw_redis)
    bad, good = store.create("acme", JobSpec()), store.create("acme", JobSpec())
    theirs = store.create("globex", JobSpec())
    _corrupt(gw_redis, bad.id)
    with pytest.raises(JobUnreadable, match=rf"job '{bad.id}'.*spec\.learner\.learning_rate"):
        store.get(bad.id)
    with pytest.raises(JobUnreadable):
        store.request_cancel(bad.id)
    found = store.listing("acme")
    assert [j.id for j in found.jobs] == [good.id] and found.total == 2
    assert [(u.id, u.state) for u in found.unreadable] == [(bad.id, "queued")]
    assert store.list("acme") == (found.jobs, 2)
    assert [u.id for u in store.listing(None, [JobState.QUEUED]).unreadable] == [bad.id]
    assert store.listing(None, [JobState.FAILED]).unreadable == []
    assert [j.id for j in store.listing("globex").jobs] == [theirs.id]
    assert store.owned_by(bad.id, "acme") and not store.owned_by(bad.id, "globex")
    # quarantine: out of the queue into `failed`, once, with the reason in a status event
    assert store.quarantine(bad.id, "unreadable record") is True
    assert store.indexed_state(bad.id) == JobState.FAILED
    assert store.ids(JobState.QUEUED) == [good.id, theirs.id]
    last = read_events(gw_redis, bad.id)[-2][1]
    assert (last.type, last.state, last.error) == ("status", JobState.FAILED, "unreadable record")
    stamped = json.loads(gw_redis.get(keys.job_record(bad.id)))
    assert stamped["state"] == "failed" and stamped["error"] == "unreadable record"  # the rest kept
    assert stamped["spec"]["learner"]["learning_rate"] is None
    assert store.quarantine(bad.id, "again") is False and store.quarantine(good.id, "readable") is False
    assert store.listing("acme", [JobState.FAILED]).unreadable[0].state == "failed"


def test_quarantine_leaves_a_record_that_is_not_json_as_found(gw_redis):
    store = JobStore(gw_redis)
    job = store.create("acme", JobSpec())
    store.transition(job.id, JobState.STARTING)
    _corrupt(gw_redis, job.id, raw=b"\x00\xff not json")
    assert store.listing("acme").unreadable[0].state == "starting"
    assert store.quarantine(job.id, "why") and store.indexed_state(job.id) == JobState.FAILED
    assert gw_redis.get(keys.job_record(job.id)) == b"\x00\xff not json"


def test_runner_tears_down_and_fails_unreadable_jobs_and_admits_the_rest(gw_redis):
    from tests.gateway.test_runner import World, registry, runner

    world = World()
    run = runner(gw_redis, registry(world), max_concurrent=2)
    store = run.store
    active = store.create("acme", JobSpec(learner={"cpus_per_worker": 0.5}))
    run.tick()
    assert store.get(active.id).state == JobState.STARTING
    queued = store.create("acme", JobSpec(learner={"cpus_per_worker": 0.5}))
    other = store.create("globex", JobSpec(learner={"cpus_per_worker": 0.5}))
    _corrupt(gw_redis, active.id)
    _corrupt(gw_redis, queued.id, raw=b"[]")
    run.tick()  # never raises: both are failed with the reason, the other tenant's job starts
    assert store.indexed_state(active.id) == store.indexed_state(queued.id) == JobState.FAILED
    assert [c[1] for c in world.calls if c[0] == "stop" and c[2] == active.id] == [
        "learner",
        "judge",
        "rollout",
    ]
    assert not any(c[2] == queued.id for c in world.calls)
    assert store.get(other.id).state == JobState.STARTING
    run.tick()
    assert store.get(other.id).state == JobState.RUNNING
    assert sum(c[0] == "stop" for c in world.calls) == 3  # the bad jobs are not touched again


def test_create_caps_a_tenants_unfinished_jobs_atomically(gw_redis, gw_redis_url):
    url = gw_redis_url
    store = JobStore(gw_redis)
    first = [store.create("acme", JobSpec(), max_active=2) for _ in range(2)]
    with pytest.raises(TenantQuotaExceeded, match="2 jobs queued or running, limit 2"):
        store.create("acme", JobSpec(), max_active=2)
    store.create("globex", JobSpec(), max_active=2)  # per tenant
    store.transition(first[0].id, JobState.STARTING)
    with pytest.raises(TenantQuotaExceeded):  # starting counts too
        store.create("acme", JobSpec(), max_active=2)
    store.transition(first[0].id, JobState.FAILED)
    store.create("acme", JobSpec(), max_active=2)
    assert store.active_count("acme") == 2
    # racing creations of one tenant never exceed the cap
    results: list[str] = []

    def attempt() -> None:
        try:
            store_i = JobStore(redis_client(url))
            store_i.create("racer", JobSpec(), max_active=3)
            results.append("ok")
        except TenantQuotaExceeded:
            results.append("refused")

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == ["ok"] * 3 + ["refused"] * 5 and store.active_count("racer") == 3

"""Job store on a real Redis: state machine, timestamps, indexes, status events, survival across clients."""

from __future__ import annotations

import pytest

from gateway.store import JobNotFound, JobStore
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

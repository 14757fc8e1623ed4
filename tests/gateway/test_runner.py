"""The job runner's state machine with in-process components (real Redis, no Ray): concurrency limit and FIFO
queueing, capacity waits, failure causes, cancel teardown, start timeout, the missing-learner error, and the
lease that lets only one runner act and another take over after a crash."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from gateway.runner import JobRunner, Lease
from gateway.store import JobStore
from services.jobs import (
    LEARNER,
    ComponentRegistry,
    ComponentStatus,
    JobRecord,
    JobState,
    LogEvent,
    ResourceDemand,
    RunContext,
    read_events,
)
from services.jobspec import JobSpec


@dataclass
class World:
    """What the in-process components see: per job, a scripted status and the calls made."""

    status: dict[tuple[str, str], ComponentStatus] = field(default_factory=dict)
    calls: list[tuple[str, str, str]] = field(default_factory=list)


def registry(world: World, names=("rollout", "judge", LEARNER)) -> ComponentRegistry:
    reg = ComponentRegistry()
    for order, name in enumerate(names):

        class Comp:
            def __init__(self, ctx, name=name):
                self.name = name

            def start(self, job: JobRecord) -> None:
                world.calls.append(("start", self.name, job.id))
                world.status.setdefault((self.name, job.id), ComponentStatus(state="running"))

            def poll(self, job: JobRecord) -> ComponentStatus:
                return world.status.get((self.name, job.id), ComponentStatus(state="absent"))

            def stop(self, job: JobRecord) -> None:
                world.calls.append(("stop", self.name, job.id))
                world.status.pop((self.name, job.id), None)

        reg.register(name, Comp, order)
    return reg


def runner(gw_redis, reg, cpus=4.0, **kw) -> JobRunner:
    free = lambda committed: ResourceDemand(cpus=cpus - committed.cpus, gpus=0.0)  # noqa: E731
    return JobRunner(
        JobStore(gw_redis),
        RunContext(redis_url="", data_dir="."),
        registry=reg,
        free_resources=free,
        lease_ttl_s=2.0,
        **kw,
    )


def spec(cpus: float = 0.5) -> JobSpec:
    return JobSpec(learner={"cpus_per_worker": cpus})


def test_concurrency_limit_fifo_and_success(gw_redis):
    world = World()
    run = runner(gw_redis, registry(world), max_concurrent=1)
    store = run.store
    a, b = store.create("t", spec()), store.create("t", spec())
    run.tick()
    assert store.get(a.id).state == JobState.STARTING and store.get(b.id).state == JobState.QUEUED
    assert [c[1] for c in world.calls] == ["rollout", "judge", LEARNER]
    assert "1 jobs running, limit 1" in store.get(b.id).detail
    run.tick()
    assert store.get(a.id).state == JobState.RUNNING
    world.status[(LEARNER, a.id)] = ComponentStatus(state="succeeded")
    run.tick()  # a succeeds and is torn down (reverse order); b is admitted in the same pass
    assert store.get(a.id).state == JobState.SUCCEEDED
    assert [c[1] for c in world.calls if c[0] == "stop" and c[2] == a.id] == [LEARNER, "judge", "rollout"]
    assert store.get(b.id).state == JobState.STARTING
    # the finished job shows its components as ended and its queue as drained
    done = store.get(a.id)
    assert {n: c.state for n, c in done.components.items()} == {
        n: "ended" for n in ("rollout", "judge", LEARNER)
    }
    assert done.summary.queue["depth"] == 0 and done.summary.queue["discarded"] == 0


def test_ended_jobs_metrics_are_forgotten_after_the_grace_period(gw_redis, monkeypatch):
    from gateway import runner as runner_mod
    from services import metrics

    world = World()
    run = runner(gw_redis, registry(world))
    job = run.store.create("t", spec())
    run.tick()
    run.tick()
    metrics.QUEUE_DEPTH.labels(job.id).set(1)
    world.status[(LEARNER, job.id)] = ComponentStatus(state="succeeded")
    run.tick()
    assert f'job="{job.id}"' in metrics.render().decode()  # still there during the grace period
    monkeypatch.setattr(runner_mod, "METRICS_GRACE_S", 0.0)
    run.tick()
    assert f'job="{job.id}"' not in metrics.render().decode()


def test_capacity_wait_keeps_fifo_order(gw_redis):
    world = World()
    run = runner(gw_redis, registry(world), cpus=2.0, max_concurrent=5)
    store = run.store
    big, small = store.create("t", spec(cpus=1.5)), store.create("t", spec(cpus=0.1))
    first = store.create("t", spec(cpus=0.1))  # noqa: F841 - created last, must not overtake
    run.tick()
    # big (0.5 rollout + 0.1 judge + 1.5 learner = 2.1 CPUs) cannot fit in 2; nobody overtakes it
    detail = store.get(big.id).detail
    assert store.get(big.id).state == JobState.QUEUED and "needs 2.1 CPU" in detail, detail
    assert store.get(small.id).state == JobState.QUEUED and "position 2" in store.get(small.id).detail


def test_component_failure_records_cause_and_tears_down(gw_redis):
    world = World()
    run = runner(gw_redis, registry(world))
    job = run.store.create("t", spec())
    run.tick()
    world.status[("judge", job.id)] = ComponentStatus(state="failed", message="replica constructor raised X")
    run.tick()
    rec = run.store.get(job.id)
    assert rec.state == JobState.FAILED and rec.error == "judge failed: replica constructor raised X"
    assert {c[1] for c in world.calls if c[0] == "stop"} == {"rollout", "judge", LEARNER}
    last = read_events(gw_redis, job.id)[-1][1]  # the status event carries the cause
    assert (last.type, last.state, last.error) == ("status", JobState.FAILED, rec.error)
    logs = [e.message for _, e in read_events(gw_redis, job.id) if isinstance(e, LogEvent)]
    assert "started judge" in logs


def test_running_component_that_disappears_fails_the_job(gw_redis):
    world = World()
    run = runner(gw_redis, registry(world))
    job = run.store.create("t", spec())
    run.tick()
    run.tick()
    del world.status[("rollout", job.id)]
    run.tick()
    assert run.store.get(job.id).error.startswith("rollout stopped unexpectedly")


def test_cancel_running_job(gw_redis):
    world = World()
    run = runner(gw_redis, registry(world))
    job = run.store.create("t", spec())
    run.tick()
    run.tick()
    run.store.request_cancel(job.id)
    run.tick()
    assert run.store.get(job.id).state == JobState.CANCELLED
    assert not any(k[1] == job.id for k in world.status)


def test_start_timeout(gw_redis):
    world = World()
    run = runner(gw_redis, registry(world), start_timeout_s=0.2)
    job = run.store.create("t", spec())
    world.status[("rollout", job.id)] = ComponentStatus(state="starting", message="1 replica pending: no CPU")
    run.tick()
    time.sleep(0.3)
    run.tick()
    rec = run.store.get(job.id)
    assert rec.state == JobState.FAILED
    assert "not ready after 0.2 s (rollout: 1 replica pending: no CPU)" in rec.error


def test_start_exception_fails_with_cause(gw_redis):
    world = World()
    reg = registry(world)

    class Broken:
        name = "judge"

        def __init__(self, ctx):
            pass

        def start(self, job):
            raise RuntimeError("no judge model on disk")

        def poll(self, job):
            return ComponentStatus(state="absent")

        def stop(self, job):
            pass

    reg.register("judge", Broken, 20)
    run = runner(gw_redis, reg)
    job = run.store.create("t", spec())
    run.tick()
    rec = run.store.get(job.id)
    assert rec.state == JobState.FAILED
    assert rec.error == "judge could not start: RuntimeError: no judge model on disk"
    assert ("stop", "rollout", job.id) in world.calls  # what did start is cleaned up


def test_no_learner_registered_fails_without_starting_anything(gw_redis):
    world = World()
    run = runner(gw_redis, registry(world, names=("rollout", "judge")))
    job = run.store.create("t", spec())
    run.tick()
    rec = run.store.get(job.id)
    assert rec.state == JobState.FAILED and rec.error.startswith("no learner component registered")
    assert world.calls == []


def test_a_component_module_that_fails_to_import_fails_jobs_with_the_reason(gw_redis, tmp_path, monkeypatch):
    from gateway import runner as runner_mod

    (tmp_path / "broken_component_mod.py").write_text("raise ImportError('orchestrator deps missing')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(runner_mod, "IMPORT_ERRORS", {})
    runner_mod.load_component_modules(["broken_component_mod", "no_such_component_mod"])
    assert runner_mod.IMPORT_ERRORS["no_such_component_mod"] == "module does not exist"
    world = World()
    run = runner(gw_redis, registry(world))
    job = run.store.create("t", spec())
    run.tick()
    rec = run.store.get(job.id)
    assert (
        rec.state == JobState.FAILED
        and "broken_component_mod: ImportError: orchestrator deps missing" in rec.error
    )
    assert "no_such_component_mod" not in rec.error and world.calls == []


def test_only_the_lease_holder_acts_and_a_successor_takes_over(gw_redis):
    world = World()
    reg = registry(world)
    first, second = runner(gw_redis, reg), runner(gw_redis, reg)
    job = first.store.create("t", spec())
    first.tick()
    second.tick()
    assert first.leader and not second.leader
    started = [c for c in world.calls if c[0] == "start"]
    assert started == [("start", n, job.id) for n in ("rollout", "judge", LEARNER)]
    first.stop(release=False)  # crash: the lease is not given back
    second.tick()
    assert not second.leader
    time.sleep(2.1)  # the lease TTL
    second.tick()
    assert second.leader and second.store.get(job.id).state == JobState.RUNNING
    assert Lease(gw_redis, 1.0).hold() is False

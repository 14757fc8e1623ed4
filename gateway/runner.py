"""The job runner: admits queued jobs, starts their components on Ray, watches them, records the cause of a
failure, tears everything down when a job ends or is cancelled.

One runner drives all jobs at a time: every gateway process runs the loop, but only the holder of a Redis
lease acts (so a gateway on several Serve replicas, or one restarted mid-job, never starts a job twice).
The loop keeps no state of its own that matters: jobs live in the store and components are found by name,
so a runner that takes over the lease after a crash simply carries on.

Admission is FIFO with a concurrency limit (`max_concurrent`) and a capacity check: the head of the queue
waits (and says why in the job's `detail`) until the cluster has the CPUs and GPUs the whole job needs.

A job whose stored record does not load never stops the loop: the runner stops whatever was started for
it (components are found by name from the id alone) and quarantines it as `failed` with the reason, once,
and goes on with the other jobs.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

import redis

from gateway import metrics
from gateway.store import JobNotFound, JobStore, JobUnreadable
from services import keys
from services.jobs import (
    COMPONENTS,
    LEARNER,
    ComponentRegistry,
    ComponentStatus,
    InvalidTransition,
    JobComponent,
    JobRecord,
    JobState,
    LogEvent,
    ResourceDemand,
    RunContext,
    job_demand,
    publish_event,
)
from services.jobspec import JobSpec

log = logging.getLogger(__name__)
LEASE_KEY = keys.RUNNER_LEASE
IMPORT_ERRORS: dict[str, str] = {}  # component module → why it could not be imported
ABSENT_GRACE_S = 20.0  # a starting component still absent after this is started again (runner crashed)
QUEUE_STATS_EVERY_S = 5.0
METRICS_GRACE_S = 300.0  # an ended job's series stay this long on /metrics (the last scrapes see the end)

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def load_component_modules(modules: tuple[str, ...] | list[str]) -> None:
    """Import the modules that register components. A module that does not exist yet is skipped; one that
    fails to import is remembered, so a job that needs it fails with the reason."""
    for name in modules:
        try:
            importlib.import_module(name)
            IMPORT_ERRORS.pop(name, None)
        except ModuleNotFoundError as e:
            if e.name and (name == e.name or name.startswith(e.name + ".")):
                IMPORT_ERRORS[name] = "module does not exist"
            else:
                IMPORT_ERRORS[name] = f"{type(e).__name__}: {e}"
                log.exception("component module %s failed to import", name)
        except Exception as e:  # a broken learner must not take the gateway down
            IMPORT_ERRORS[name] = f"{type(e).__name__}: {e}"
            log.exception("component module %s failed to import", name)


def broken_modules() -> str | None:
    """Component modules that exist but failed to import: a job would start without them (e.g. with no
    orchestrator driving its rollouts), so none is admitted and each says why."""
    broken = {m: why for m, why in IMPORT_ERRORS.items() if why != "module does not exist"}
    if not broken:
        return None
    return "component modules failed to import, so the job was not started: " + "; ".join(
        f"{m}: {why}" for m, why in broken.items()
    )


def no_learner_error() -> str:
    tried = "; ".join(f"{m}: {why}" for m, why in IMPORT_ERRORS.items() if "learner" in m)
    return (
        "no learner component registered: this gateway cannot train, so the job was not started "
        f"(a learner registers itself with services.jobs.register_component('{LEARNER}', ...))"
        + (f" [{tried}]" if tried else "")
    )


class Lease:
    """A Redis key held with a TTL; the holder renews it every tick."""

    def __init__(self, client: redis.Redis, ttl_s: float) -> None:
        self.r, self.ttl_ms = client, int(ttl_s * 1000)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._renew, self._release = client.register_script(_RENEW), client.register_script(_RELEASE)

    def hold(self) -> bool:
        return bool(self._renew(keys=[LEASE_KEY], args=[self.owner, self.ttl_ms]))

    def release(self) -> None:
        self._release(keys=[LEASE_KEY], args=[self.owner])


def ray_free_resources(committed: ResourceDemand) -> ResourceDemand | None:
    """Free CPUs/GPUs: what Ray reports available, but never more than the total minus what admitted jobs
    will hold (their replicas may not be placed yet)."""
    import ray

    if not ray.is_initialized():
        return None
    avail, total = ray.available_resources(), ray.cluster_resources()
    return ResourceDemand(
        cpus=min(avail.get("CPU", 0.0), total.get("CPU", 0.0) - committed.cpus),
        gpus=min(avail.get("GPU", 0.0), total.get("GPU", 0.0) - committed.gpus),
    )


class JobRunner:
    def __init__(
        self,
        store: JobStore,
        ctx: RunContext,
        registry: ComponentRegistry = COMPONENTS,
        max_concurrent: int = 2,
        poll_s: float = 0.5,
        lease_ttl_s: float = 10.0,
        start_timeout_s: float = 900.0,
        free_resources: Callable[[ResourceDemand], ResourceDemand | None] = ray_free_resources,
    ):
        self.store, self.ctx, self.registry = store, ctx, registry
        self.max_concurrent, self.poll_s, self.start_timeout_s = max_concurrent, poll_s, start_timeout_s
        self.free_resources = free_resources
        self.lease = Lease(store.r, lease_ttl_s)
        self.leader = False
        self.last_tick: float | None = None
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._built: tuple[tuple[str, ...], list[JobComponent]] = ((), [])
        self._queue_stats_at: dict[str, float] = {}
        self._ended_at: dict[str, float] = {}  # job id → when this runner tore it down (metrics grace)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> JobRunner:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="payoff-job-runner", daemon=True)
        self._thread.start()
        return self

    def stop(self, release: bool = True, timeout_s: float = 30.0) -> None:
        """Stop the loop; `release=False` leaves the lease to expire (what a crash looks like)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if release and self.leader:
            try:
                self.lease.release()
            except redis.RedisError:
                pass
        self.leader = False

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
                self.last_error = None
            except Exception as e:  # Redis or Ray hiccup: report, keep going
                self.last_error = f"{type(e).__name__}: {e}"
                log.exception("job runner tick failed")
            self._stop.wait(self.poll_s)

    # ------------------------------------------------------------------ one pass
    def components(self) -> list[JobComponent]:
        names = tuple(self.registry.names())
        if names != self._built[0]:
            self._built = (names, self.registry.build(self.ctx))
        return self._built[1]

    def tick(self) -> None:
        self.leader = self.lease.hold()
        self.last_tick = time.time()
        if not self.leader:
            return
        comps = self.components()
        for state in (JobState.STARTING, JobState.RUNNING):
            for job_id in self.store.ids(state):
                if self._stop.is_set() or not self.lease.hold():
                    return
                job = self._read(job_id, comps)
                if job is not None and job.state == state:
                    self._drive(job, comps)
        self._admit(comps)
        for state, n in self.store.counts().items():
            metrics.JOBS.labels(state.value).set(n)
        self._forget_ended()

    def _read(self, job_id: str, comps: list[JobComponent]) -> JobRecord | None:
        """The job's record; None (after quarantining it) if it does not load."""
        try:
            return self.store.get(job_id, summary=False)
        except JobUnreadable as e:
            log.error("job %s: %s", job_id, e)
            if self.store.indexed_state(job_id) in (JobState.STARTING, JobState.RUNNING):
                # the components find their Ray objects by the job id; the rest of this stand-in is unused
                stand_in = JobRecord.model_construct(
                    id=job_id, tenant="", spec=JobSpec(), created_at=0.0, updated_at=0.0
                )
                self._teardown(stand_in, comps)
            self.store.quarantine(job_id, f"{e}; the job was failed and anything started for it stopped")
            return None

    def _log(self, job_id: str, message: str, level: str = "info", source: str = "runner") -> None:
        publish_event(self.store.r, LogEvent(job_id=job_id, level=level, source=source, message=message))

    def _poll(self, job: JobRecord, comps: list[JobComponent]) -> dict[str, ComponentStatus] | None:
        out = {}
        for c in comps:
            try:
                out[c.name] = c.poll(job)
            except Exception as e:
                self.store.set_detail(job.id, f"could not poll {c.name}: {type(e).__name__}: {e}")
                return None
        return out

    def _drive(self, job: JobRecord, comps: list[JobComponent]) -> None:
        if job.cancel_requested:
            self._teardown(job, comps)
            self._finish(job.id, JobState.CANCELLED, detail="cancelled")
            return
        statuses = self._poll(job, comps)
        if statuses is None:
            return
        failed = [(n, s) for n, s in statuses.items() if s.state == "failed"]
        if failed:
            name, status = failed[0]
            self._teardown(job, comps)
            self._finish(job.id, JobState.FAILED, error=f"{name} failed: {status.message or 'no message'}")
            return
        now = time.time()
        if job.state == JobState.STARTING:
            since = now - job.state_times.get(JobState.STARTING, now)
            for c in comps:
                if statuses[c.name].state == "absent" and since > ABSENT_GRACE_S:
                    self._log(job.id, f"{c.name} is not deployed; starting it again")
                    c.start(job)
            waiting = [n for n, s in statuses.items() if s.state not in ("running", "succeeded")]
            if not waiting:
                self.store.set_detail(job.id, "running", statuses)
                self._finish(job.id, JobState.RUNNING, detail="running")
            elif since > self.start_timeout_s:
                why = "; ".join(f"{n}: {statuses[n].message or statuses[n].state}" for n in waiting)
                self._teardown(job, comps)
                self._finish(
                    job.id, JobState.FAILED, error=f"not ready after {self.start_timeout_s:g} s ({why})"
                )
            else:
                self.store.set_detail(
                    job.id,
                    "starting: waiting for "
                    + ", ".join(f"{n} ({statuses[n].message or statuses[n].state})" for n in waiting),
                    statuses,
                )
            return
        # running
        gone = [n for n, s in statuses.items() if s.state == "absent"]
        if gone:
            why = f"{gone[0]} stopped unexpectedly ({statuses[gone[0]].message})"
            if len(gone) == len(statuses):
                why = (
                    "every component of the job is gone: the Ray cluster it ran on was restarted or lost "
                    "them (e.g. `payoff serve` restarted its local Ray head); checkpoints are kept in its data dir"
                )
            self._teardown(job, comps)
            self._finish(job.id, JobState.FAILED, error=why)
            return
        if statuses.get(LEARNER) and statuses[LEARNER].state == "succeeded":
            self._teardown(job, comps)
            self._finish(job.id, JobState.SUCCEEDED, detail="finished")
            return
        self.store.set_detail(job.id, "running", statuses)
        self._queue_stats(job.id, now)

    def _queue_stats(self, job_id: str, now: float) -> None:
        if now - self._queue_stats_at.get(job_id, 0.0) < QUEUE_STATS_EVERY_S:
            return
        from services.queue import TrajectoryQueue

        self._queue_stats_at[job_id] = now
        self.store.set_queue_stats(job_id, TrajectoryQueue(self.store.r, job_id).stats())

    def _teardown(self, job: JobRecord, comps: list[JobComponent]) -> None:
        """Stop every component (reverse order), drain the queue, and record both in the job: its
        components as `ended`, its queue with depth 0 and what was still waiting as `discarded`."""
        ended = {}
        for c in reversed(comps):
            try:
                c.stop(job)
                ended[c.name] = ComponentStatus(state="ended", message="stopped with the job")
            except Exception as e:
                self._log(job.id, f"stopping {c.name} failed: {type(e).__name__}: {e}", "error")
                ended[c.name] = ComponentStatus(state="failed", message=f"stopping failed: {e}"[:500])
        try:
            from services.queue import TrajectoryQueue

            q = TrajectoryQueue(self.store.r, job.id)
            stats = q.stats()
            q.delete()
            waiting = int(stats.get("depth", 0))
            self.store.set_queue_stats(
                job.id, stats | {"depth": 0, "pending": 0, "lag": 0, "discarded": waiting}
            )
        except Exception as e:
            self._log(job.id, f"clearing the trajectory queue failed: {e}", "warning")
        try:
            self.store.set_detail(job.id, "stopped", {n: ended[n] for n in reversed(list(ended))})
        except Exception as e:  # the record may be unreadable: the job still ends
            log.warning("job %s: could not record its ended components: %s", job.id, e)
        self._queue_stats_at.pop(job.id, None)
        self._ended_at[job.id] = time.monotonic()

    def _forget_ended(self) -> None:
        """Drop this process's metric series of jobs that ended more than METRICS_GRACE_S ago."""
        from services.metrics import forget_job

        now = time.monotonic()
        for job_id, at in list(self._ended_at.items()):
            if now - at >= METRICS_GRACE_S:
                forget_job(job_id)
                del self._ended_at[job_id]

    def _finish(
        self, job_id: str, state: JobState, error: str | None = None, detail: str | None = None
    ) -> None:
        try:
            self.store.transition(job_id, state, error=error, detail=detail or state.value)
        except (InvalidTransition, JobNotFound) as e:  # another runner got there first
            log.warning("job %s: %s", job_id, e)

    def _admit(self, comps: list[JobComponent]) -> None:
        queued = self.store.ids(JobState.QUEUED)
        if not queued:
            return
        active = [j for s in (JobState.STARTING, JobState.RUNNING) for j in self.store.ids(s)]
        committed = ResourceDemand()
        for job_id in list(active):
            job = self._read(job_id, comps)
            if job is None:
                active.remove(job_id)
            else:
                committed = committed + job_demand(job.spec)
        blocked: str | None = None
        for position, job_id in enumerate(queued, 1):
            job = self._read(job_id, comps)
            if job is None or job.state != JobState.QUEUED:
                continue
            if blocked is not None:  # FIFO: nobody overtakes the head of the queue
                self.store.set_detail(job_id, f"queued: position {position} ({blocked})")
                continue
            if LEARNER not in self.registry:
                self._finish(job_id, JobState.FAILED, error=no_learner_error())
                continue
            if (broken := broken_modules()) is not None:
                self._finish(job_id, JobState.FAILED, error=broken[:2000])
                continue
            if len(active) >= self.max_concurrent:
                blocked = f"{len(active)} jobs running, limit {self.max_concurrent}"
                self.store.set_detail(job_id, f"queued: {blocked}")
                continue
            need = job_demand(job.spec)
            free = self.free_resources(committed)
            if free is not None and (need.cpus > free.cpus + 1e-9 or need.gpus > free.gpus + 1e-9):
                blocked = (
                    f"waiting for resources: needs {need.cpus:g} CPU / {need.gpus:g} GPU, "
                    f"{max(free.cpus, 0):g} CPU / {max(free.gpus, 0):g} GPU free"
                )
                self.store.set_detail(job_id, f"queued: {blocked}")
                continue
            self._launch(job, comps)
            active.append(job_id)
            committed = committed + need

    def _launch(self, job: JobRecord, comps: list[JobComponent]) -> None:
        try:
            job = self.store.transition(job.id, JobState.STARTING, detail="starting components")
        except InvalidTransition:  # cancelled in the meantime
            return
        for c in comps:
            try:
                c.start(job)
                self._log(job.id, f"started {c.name}", source=c.name)
            except Exception as e:
                self._teardown(job, comps)
                why = f"{c.name} could not start: {type(e).__name__}: {e}"
                self._finish(job.id, JobState.FAILED, error=why)
                return

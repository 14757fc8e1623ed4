"""Job contracts shared by the gateway (which runs jobs) and the components it runs (rollout, judge, learner).

- `JobState` and its state machine: queued → starting → running → succeeded | failed | cancelled.
- `JobRecord`: what the job store keeps per job (owner tenant, spec, state, when each state was entered,
  the error that ended it, a metrics summary).
- Job events: one Redis stream per job (`events_key`) that the gateway streams to clients as server-sent
  events. The gateway writes `status` and `log` events; the learner writes `step` (metrics of one optimizer
  step) and `checkpoint` events with `publish_event`, which also keeps the job's summary hash current.
- `JobComponent`: the protocol of one piece of a running job (the rollout app, the judge app, the
  orchestrator's job driver, the learner), and `COMPONENTS`, the registry the job runner starts them
  from. Each service registers its own (rollout/component.py, judge/component.py,
  orchestrator/component.py, learner/component.py); the learner registers under the name `LEARNER` and a
  job cannot run without it.

Components must be re-attachable: `poll` and `stop` are called from whichever gateway process holds the
runner lease, which may not be the process that called `start` (the gateway restarts without losing jobs).
So a component finds its Ray objects by name from the job id (a Serve app name, a named detached actor),
never from state kept in the component object.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Literal, Protocol, runtime_checkable

import redis
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from services import keys
from services.jobspec import JobSpec

log = logging.getLogger(__name__)
LEARNER = "learner"
ORCHESTRATOR = "orchestrator"
EVENTS_MAXLEN = 100_000  # approximate cap of a job's event stream (a step event per optimizer step)
REWARD_METRIC = "reward_mean"  # the step metric `GET /v1/jobs/{id}/metrics` reports as the reward curve


class JobState(str, Enum):
    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
ACTIVE = frozenset({JobState.STARTING, JobState.RUNNING})
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.STARTING, JobState.FAILED, JobState.CANCELLED}),
    JobState.STARTING: frozenset({JobState.RUNNING, JobState.FAILED, JobState.CANCELLED}),
    JobState.RUNNING: frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


class InvalidTransition(ValueError):
    pass


def check_transition(current: JobState, to: JobState) -> None:
    if to not in TRANSITIONS[current]:
        raise InvalidTransition(f"a {current.value} job cannot become {to.value}")


# ---------------------------------------------------------------- names derived from a job id
# Redis keys of a job (services/keys.py holds every key name; these keep the job-facing names)
record_key, events_key, summary_key = keys.job_record, keys.job_events, keys.job_summary


def rollout_app_name(job_id: str) -> str:
    return f"rollout-{job_id}"


def judge_app_name(job_id: str) -> str:
    return f"judge-{job_id}"


def served_app_name(job_id: str) -> str:
    """A rollout app serving one of the job's checkpoints after training (chat + steering)."""
    return f"served-{job_id}"


def learner_actor_name(job_id: str) -> str:
    """Name of the learner's detached actor that runs the Ray Train fit (namespace 'payoff')."""
    return f"learner-{job_id}"


def driver_actor_name(job_id: str) -> str:
    """Name of the orchestrator's detached job-driver actor (namespace 'payoff')."""
    return f"driver-{job_id}"


# ---------------------------------------------------------------- records
class ComponentStatus(BaseModel):
    """What `JobComponent.poll` reports. `absent`: nothing is deployed (never started, or gone). `ended` is
    the runner's own mark on every component of a job it tore down (components never report it)."""

    model_config = ConfigDict(extra="forbid")
    state: Literal["absent", "starting", "running", "succeeded", "failed", "ended"]
    message: str = ""


class JobSummary(BaseModel):
    """Progress at a glance: the latest step event, checkpoints, the trajectory queue."""

    model_config = ConfigDict(extra="forbid")
    step: int | None = None
    policy_version: int | None = None
    metrics: dict[str, float] = Field(default_factory=dict, description="Metrics of the latest step.")
    checkpoints: int = 0
    last_checkpoint: str | None = None
    queue: dict[str, int] = Field(default_factory=dict, description="Trajectory queue counters.")
    rollout: dict[str, float] = Field(
        default_factory=dict,
        description="Rollout counters of the job driver: "
        "trajectories, finished sequences, tokens, engine busy seconds, idle ratio.",
    )


class JobRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    tenant: str
    spec: JobSpec
    state: JobState = JobState.QUEUED
    created_at: float
    updated_at: float
    state_times: dict[JobState, float] = Field(
        default_factory=dict, description="When the job entered each state (unix s)."
    )
    error: str | None = Field(None, description="Why the job failed: the component and its cause.")
    detail: str | None = Field(None, description="What the runner is doing or waiting for right now.")
    cancel_requested: bool = False
    components: dict[str, ComponentStatus] = Field(default_factory=dict)
    summary: JobSummary = Field(default_factory=JobSummary)


# ---------------------------------------------------------------- events
class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job_id: str
    time: float = Field(default_factory=time.time)


class StatusEvent(_Event):
    type: Literal["status"] = "status"
    state: JobState
    error: str | None = None


class StepEvent(_Event):
    """One optimizer step of the learner; `step` counts the steps done (1 after the first), so the last
    event of a finished job has step == learner.steps. Put the mean reward under REWARD_METRIC."""

    type: Literal["step"] = "step"
    step: int = Field(ge=0)
    policy_version: int | None = None
    metrics: dict[str, float] = Field(default_factory=dict)


class CheckpointEvent(_Event):
    """A checkpoint in Hugging Face format (a directory `rollout` engines can load)."""

    type: Literal["checkpoint"] = "checkpoint"
    step: int = Field(ge=0)
    path: str
    policy_version: int | None = None


class LogEvent(_Event):
    type: Literal["log"] = "log"
    level: Literal["info", "warning", "error"] = "info"
    source: str = "runner"
    message: str


JobEvent = Annotated[StatusEvent | StepEvent | CheckpointEvent | LogEvent, Field(discriminator="type")]
_EVENT = TypeAdapter(JobEvent)


def parse_event(data: bytes | str) -> JobEvent:
    return _EVENT.validate_json(data)


def publish_event(client: redis.Redis, event: JobEvent) -> None:
    """Append an event to the job's stream and fold step/checkpoint events into its summary hash.

    `client` may be a pipeline (the job store publishes status events inside its transactions).
    """
    key = summary_key(event.job_id)
    client.xadd(
        events_key(event.job_id), {"e": event.model_dump_json()}, maxlen=EVENTS_MAXLEN, approximate=True
    )
    if isinstance(event, StepEvent):
        version = -1 if event.policy_version is None else event.policy_version
        client.hset(
            key, mapping={"step": event.step, "metrics": json.dumps(event.metrics), "policy_version": version}
        )
    elif isinstance(event, CheckpointEvent):
        client.hincrby(key, "checkpoints", 1)
        client.hset(key, "last_checkpoint", event.path)


def read_events(
    client: redis.Redis, job_id: str, after: str = "0-0", count: int = 1000
) -> list[tuple[str, JobEvent]]:
    """Events strictly after stream id `after`, oldest first, as (stream id, event)."""
    rows = client.xrange(events_key(job_id), min=f"({after}" if after != "0-0" else "-", count=count)
    out = []
    for eid, fields in rows:
        out.append((eid.decode() if isinstance(eid, bytes) else eid, parse_event(fields[b"e"])))
    return out


def read_summary(client: redis.Redis, job_id: str) -> JobSummary:
    raw = {k.decode(): v.decode() for k, v in client.hgetall(summary_key(job_id)).items()}
    version = int(raw.get("policy_version", -1))
    return JobSummary(
        step=int(raw["step"]) if "step" in raw else None,
        policy_version=None if version < 0 else version,
        metrics=json.loads(raw.get("metrics", "{}")),
        checkpoints=int(raw.get("checkpoints", 0)),
        last_checkpoint=raw.get("last_checkpoint"),
        queue=json.loads(raw.get("queue", "{}")),
        rollout=json.loads(raw.get("rollout", "{}")),
    )


def report(client: redis.Redis | None, job_id: str, level: str, source: str, message: str) -> None:
    """Log `message` and add it to the job's events as a LogEvent; never raises (the event is a courtesy:
    what it reports, a failure say, still happens if Redis cannot take it)."""
    log.log(logging.ERROR if level == "error" else logging.WARNING, "job %s: %s", job_id, message)
    if client is None:
        return
    try:
        publish_event(client, LogEvent(job_id=job_id, level=level, source=source, message=message))
    except Exception as e:
        log.warning("job %s: could not publish a %s event: %s", job_id, source, e)


def publish_rollout_stats(client: redis.Redis, job_id: str, stats: dict[str, float]) -> None:
    client.hset(summary_key(job_id), "rollout", json.dumps(stats))


# ---------------------------------------------------------------- resources
class ResourceDemand(BaseModel):
    cpus: float = 0.0
    gpus: float = 0.0

    def __add__(self, other: ResourceDemand) -> ResourceDemand:
        return ResourceDemand(cpus=self.cpus + other.cpus, gpus=self.gpus + other.gpus)


def judge_cpus(spec: JobSpec) -> float:
    """CPUs per judge replica: a rules judge only runs regexes and verifiers."""
    return 0.1 if spec.judge.backend == "rules" else 0.5


def job_demand(spec: JobSpec) -> ResourceDemand:
    """Ray resources the whole job holds while running: rollout replicas, judge replicas, learner workers."""
    r, j, lrn = spec.rollout, spec.judge, spec.learner
    cpus = r.replicas * r.cpus_per_replica + j.replicas * judge_cpus(spec) + lrn.workers * lrn.cpus_per_worker
    gpus = (
        r.replicas * r.gpus_per_replica + j.replicas * j.gpus_per_replica + lrn.workers * lrn.gpus_per_worker
    )
    return ResourceDemand(cpus=cpus, gpus=gpus)


# ---------------------------------------------------------------- components
@dataclass(frozen=True)
class RunContext:
    """What every component may need: where Redis is and where to write files."""

    redis_url: str
    data_dir: Path


@runtime_checkable
class JobComponent(Protocol):
    """One part of a running job. All three calls are synchronous and may block for a few seconds;
    `start` must return once the work is submitted (deploying goes on in Ray), not when it is ready.

    - start(job): launch (idempotent: starting what already runs must not duplicate it).
    - poll(job):  report absent / starting / running / succeeded / failed (with the cause in `message`).
      Only the learner ever reports `succeeded`: the job succeeds when the learner does.
    - stop(job):  tear down and release resources; must succeed when nothing is running.
    """

    name: str

    def start(self, job: JobRecord) -> None: ...

    def poll(self, job: JobRecord) -> ComponentStatus: ...

    def stop(self, job: JobRecord) -> None: ...


ComponentFactory = Callable[[RunContext], JobComponent]


class ComponentRegistry:
    """Component factories by name, started in ascending `order` and stopped in reverse."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[int, ComponentFactory]] = {}

    def register(self, name: str, factory: ComponentFactory, order: int = 50) -> None:
        self._entries[name] = (order, factory)

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return [n for n, _ in sorted(self._entries.items(), key=lambda kv: (kv[1][0], kv[0]))]

    def build(self, ctx: RunContext) -> list[JobComponent]:
        return [self._entries[n][1](ctx) for n in self.names()]


COMPONENTS = ComponentRegistry()


def register_component(name: str, factory: ComponentFactory, order: int = 50) -> None:
    """Add a component to every job the runner starts. Convention: rollout 10, judge 20, orchestrator 80,
    learner 90."""
    COMPONENTS.register(name, factory, order)

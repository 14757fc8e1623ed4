"""The schedule interface and the choice of schedule for a job.

A schedule decides what the next rollout request is and how many may be in flight; the loop
(orchestrator/loop.py) issues them, collects the results and applies the staleness gate. Three schedules:
- `sync.SyncBatches`: one learner batch of whole episodes, then wait for the learner's push (no overlap);
- `episodes.AsyncEpisodes`: one group of whole episodes in flight per replica, continuously;
- `tppo.TppoWindows`: one T-PPO window step in flight per replica, continuously (each replica keeps its
  own active batch of sequences between calls).
"""

from __future__ import annotations

import threading

from orchestrator.tasks import TaskSampler
from services.jobspec import JobSpec
from services.queue import TrajectoryQueue
from services.rollout_api import RolloutCall, RolloutClient, SamplingParams


class Schedule:
    """Base: `asynchronous` schedules are gated by staleness; `wait_turn` blocks only in the sync one."""

    asynchronous = True

    def __init__(self, spec: JobSpec):
        self.spec, self.tasks = spec, TaskSampler(spec)
        r = spec.rollout
        self.replicas = r.replicas
        self.sampling = SamplingParams(
            max_tokens=r.max_response_tokens, temperature=r.temperature, top_p=r.top_p
        )

    def wait_turn(self, inflight: int, stop: threading.Event) -> None:
        """Block until the schedule may issue again (the sync barrier); asynchronous schedules never wait."""

    def capacity(self, inflight: int) -> int:
        """How many new requests may be issued now, given `inflight` outstanding."""
        return max(0, self.replicas - inflight)

    def issue(self, client: RolloutClient) -> RolloutCall:
        raise NotImplementedError


def windowed(spec: JobSpec) -> bool:
    """T-PPO windows drive the rollouts when the job is async T-PPO and every task is single-turn;
    otherwise replicas play whole episodes."""
    return (
        spec.algorithm == "tppo"
        and spec.asynchrony.mode == "async"
        and all(t.max_turns == 1 for t in spec.tasks)
    )


def make_schedule(spec: JobSpec, queue: TrajectoryQueue) -> Schedule:
    from orchestrator.episodes import AsyncEpisodes
    from orchestrator.sync import SyncBatches
    from orchestrator.tppo import TppoWindows

    if spec.asynchrony.mode == "sync":
        return SyncBatches(spec, queue)
    return TppoWindows(spec) if windowed(spec) else AsyncEpisodes(spec)

"""Asynchronous T-PPO windows: `PIPELINE` (2) `tppo_step` calls in flight per replica, issued continuously.

The replica runs a rollout's steps one at a time (its per-rollout lock), so the second call waits there and
starts the moment the first one's step ends: the first call's queue put, its result's trip back and the
driver's turnaround overlap the next step instead of leaving the engine idle between steps (on the P1
bench shape they were ~a quarter of the replica's steady wall time).

Each replica keeps its own active batch (`groups_per_step × group_size` sequences) between calls: a call
generates at most `window_tokens` per sequence and enqueues one segment per sequence; unfinished
sequences resume at the next call under whatever weights were pushed meanwhile, finished slots are
refilled (successive batching). A replica's first call fixes its episode seeds (`first_seed`), so seeds
never repeat across replicas or restarts of the schedule.
"""

from __future__ import annotations

from orchestrator.schedule import Schedule
from services.rollout_api import RolloutCall, RolloutClient, WindowStepRequest

SEEDS_PER_CALL = 100_000  # episode seeds reserved per call: a replica's batch never reaches the next's
PIPELINE = 2  # calls in flight per replica: one running, one waiting on the replica's lock


class TppoWindows(Schedule):
    def capacity(self, inflight: int) -> int:
        return max(0, PIPELINE * self.replicas - inflight)

    def issue(self, client: RolloutClient) -> RolloutCall:
        task, call = self.tasks.next()
        r, a = self.spec.rollout, self.spec.asynchrony
        req = WindowStepRequest(
            env=task.env,
            data=task.data_path,
            options=task.options,
            batch_size=r.groups_per_step * r.group_size,
            group_size=r.group_size,
            window=a.window_tokens,
            max_response_tokens=r.max_response_tokens,
            sampling=self.sampling,
            first_seed=self.tasks.seed_base + call * SEEDS_PER_CALL,
            lengths=r.response_lengths,
        )
        return client.tppo_step(req)

"""Asynchronous T-PPO windows: one `tppo_step` in flight per replica, issued continuously.

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


class TppoWindows(Schedule):
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

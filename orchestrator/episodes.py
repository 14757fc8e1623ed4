"""Asynchronous whole episodes: one group (`group_size` episodes sharing a seed) in flight per replica,
issued continuously; the staleness gate (applied by the loop) keeps generation at most `max_staleness`
learner batches ahead. Used by async jobs that are not single-turn T-PPO (multi-turn games, GRPO,
preference games)."""

from __future__ import annotations

from orchestrator.schedule import Schedule
from services.jobspec import TaskSpec
from services.rollout_api import EpisodeRequest, RolloutCall, RolloutClient


def episode_request(schedule: Schedule, task: TaskSpec, call: int) -> EpisodeRequest:
    """The request for call number `call`: its seed depends only on the job's seed and the call index."""
    r = schedule.spec.rollout
    return EpisodeRequest(
        env=task.env,
        data=task.data_path,
        options=task.options,
        seed=schedule.tasks.seed_base + call,
        group_size=r.group_size,
        max_turns=task.max_turns,
        enqueue=True,
        sampling=schedule.sampling,
        lengths=r.response_lengths,
    )


class AsyncEpisodes(Schedule):
    def issue(self, client: RolloutClient) -> RolloutCall:
        task, call = self.tasks.next()
        return client.episodes(episode_request(self, task, call))

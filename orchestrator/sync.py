"""The synchronous schedule: generate → score → train → push, with no overlap.

Invariant: a batch is `ceil(batch_size / group_size)` groups of whole episodes (at most one per replica in
flight); after the last group is back, no request is issued until the learner's published version exceeds
the version read before the batch's first request, i.e. until the learner has trained on the batch and
pushed. The version is read before the batch exists, so a fast learner cannot be missed (no lost wake-up).
"""

from __future__ import annotations

import threading

from orchestrator.episodes import episode_request
from orchestrator.schedule import Schedule
from services.jobspec import JobSpec
from services.queue import TrajectoryQueue
from services.rollout_api import RolloutCall, RolloutClient


class SyncBatches(Schedule):
    asynchronous = False

    def __init__(self, spec: JobSpec, queue: TrajectoryQueue, poll_s: float = 0.05):
        super().__init__(spec)
        self.queue, self.poll_s = queue, poll_s
        self.groups = max(1, -(-spec.learner.batch_size // spec.rollout.group_size))
        self.produced, self.base_version = 0, 0

    def wait_turn(self, inflight: int, stop: threading.Event) -> None:
        if self.produced < self.groups or inflight:
            return
        while not stop.is_set() and self.queue.learner_version() <= self.base_version:
            stop.wait(self.poll_s)  # the learner trains on this batch and pushes; rollouts idle
        self.produced = 0

    def capacity(self, inflight: int) -> int:
        return max(0, min(self.replicas - inflight, self.groups - self.produced))

    def issue(self, client: RolloutClient) -> RolloutCall:
        if self.produced == 0:
            self.base_version = self.queue.learner_version()
        task, call = self.tasks.next()
        self.produced += 1
        return client.episodes(episode_request(self, task, call))

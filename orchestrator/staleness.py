"""The staleness gate of asynchronous rollouts.

Invariant: a new rollout request is issued only while fewer than `max(1, max_staleness) × batch_size`
trajectories wait undelivered in the job's stream. Generation therefore runs at most `max_staleness`
learner batches ahead of training, and replicas wait (and count as idle) instead of producing
trajectories the queue's staleness bound would drop. Requests already in flight may overshoot the bound
by at most the requests in flight per replica (one; two for T-PPO windows); the queue still drops (and counts) anything staler than the bound.
"""

from __future__ import annotations

from services.jobspec import JobSpec
from services.queue import TrajectoryQueue


class StalenessGate:
    def __init__(self, queue: TrajectoryQueue, spec: JobSpec):
        self.queue = queue
        self.ahead = max(1, spec.asynchrony.max_staleness) * spec.learner.batch_size

    def open(self) -> bool:
        """May another request be issued now?"""
        return self.queue.undelivered() < self.ahead

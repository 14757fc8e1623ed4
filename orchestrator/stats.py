"""What the driver saw of its rollouts, published in the job summary (`summary.rollout`; read by the
CLI, Grafana and bench/ for P1/P7). Every result type reports the same `counts()`, so the statistics
do not depend on the schedule that produced them. Failed calls are split into rejected ones (a
deterministic 4xx) and retried ones (transient: 5xx, timeouts, replicas restarting); see failures.py."""

from __future__ import annotations

import time

import redis

from services.jobs import publish_rollout_stats
from services.rollout_api import RolloutResult


class RolloutStats:
    def __init__(self, replicas: int, publish_every_s: float = 2.0):
        self.replicas, self.every = replicas, publish_every_s
        self.t0, self.last = time.monotonic(), 0.0
        self.busy: dict[str, float] = {}
        self.trajectories = self.finished = self.tokens = self.failures = self.rejected = 0
        self.rewards: list[float] = []

    def add(self, res: RolloutResult) -> None:
        self.busy[res.replica] = self.busy.get(res.replica, 0.0) + res.busy_s
        c = res.counts()
        self.trajectories += c.trajectories
        self.finished += c.finished
        self.tokens += c.tokens
        self.rewards += c.rewards
        del self.rewards[:-256]  # only the recent ones are reported

    def failed(self, rejected: bool = False) -> None:
        """A failed request: `rejected` (a deterministic 4xx) or transient (retried)."""
        self.failures += 1
        self.rejected += rejected

    def snapshot(self) -> dict[str, float]:
        wall = time.monotonic() - self.t0
        busy = sum(self.busy.values())
        recent = self.rewards[-64:]
        return {
            "trajectories": self.trajectories,
            "finished": self.finished,
            "tokens": self.tokens,
            "failed_calls": self.failures,
            "rejected_calls": self.rejected,
            "retried_calls": self.failures - self.rejected,
            "wall_s": round(wall, 3),
            "busy_s": round(busy, 3),
            "idle_ratio": round(max(0.0, 1.0 - busy / max(wall * self.replicas, 1e-9)), 4),
            "reward_recent": round(sum(recent) / len(recent), 4) if recent else 0.0,
        }

    def publish(self, client: redis.Redis, job_id: str, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= self.every:
            self.last = now
            publish_rollout_stats(client, job_id, self.snapshot())

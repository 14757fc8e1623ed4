"""What the driver saw of its rollouts, published in the job summary (`summary.rollout`; read by the
CLI, Grafana and bench/ for P1/P7). Every result type reports the same `counts()`, so the statistics
do not depend on the schedule that produced them. `idle_ratio` spans the driver's whole life (deployment
and the learner's start-up included); `steady_idle_ratio` counts from the moment the learner's first
step landed (`steady()`) to the first result after its last one (`end_steady()`: from then on the gate
rightly holds the replicas back until the job is torn down), the window bench/ measures P1 and P7 over;
`call_<phase>_s` is the mean seconds per call by phase on the replica over that window (sync_wait, queued,
generate, score, segments or episodes, put). Failed calls are split into rejected ones (a deterministic
4xx) and retried ones (transient: 5xx, timeouts, replicas restarting); see failures.py."""

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
        self.steady_t0: float | None = None  # when the learner's first step was seen
        self.steady_t1: float | None = None  # when its last step was seen (the job's training is over)
        self.steady_busy = 0.0
        self.account: dict[str, float] = {}  # summed seconds by phase of the steady window's calls
        self.steady_calls = 0

    def steady(self) -> None:
        """The learner has made its first step: the steady window starts now (idempotent)."""
        if self.steady_t0 is None:
            self.steady_t0 = time.monotonic()

    def end_steady(self) -> None:
        """The learner has made its last step: the steady window ends now (idempotent; after steady())."""
        if self.steady_t0 is not None and self.steady_t1 is None:
            self.steady_t1 = time.monotonic()

    def add(self, res: RolloutResult) -> None:
        self.busy[res.replica] = self.busy.get(res.replica, 0.0) + res.busy_s
        c = res.counts()
        self.trajectories += c.trajectories
        self.finished += c.finished
        self.tokens += c.tokens
        self.rewards += c.rewards
        del self.rewards[:-256]  # only the recent ones are reported
        if self.steady_t0 is None:
            return
        now = time.monotonic()
        end = now if self.steady_t1 is None else self.steady_t1
        # the part of the call's engine time inside the window (a call may straddle either end)
        self.steady_busy += max(0.0, min(now, end) - max(now - res.busy_s, self.steady_t0))
        if now <= end:
            self.steady_calls += 1
            for phase, sec in res.account.items():
                self.account[phase] = self.account.get(phase, 0.0) + sec

    def failed(self, rejected: bool = False) -> None:
        """A failed request: `rejected` (a deterministic 4xx) or transient (retried)."""
        self.failures += 1
        self.rejected += rejected

    def snapshot(self) -> dict[str, float]:
        now = time.monotonic()
        wall = now - self.t0
        busy = sum(self.busy.values())
        recent = self.rewards[-64:]
        steady = {}
        if self.steady_t0 is not None:
            s_wall = (now if self.steady_t1 is None else self.steady_t1) - self.steady_t0
            steady = {
                "steady_wall_s": round(s_wall, 3),
                "steady_busy_s": round(self.steady_busy, 3),
                "steady_idle_ratio": round(
                    max(0.0, 1.0 - self.steady_busy / max(s_wall * self.replicas, 1e-9)), 4
                ),
                "steady_calls": self.steady_calls,
                **{
                    f"call_{k}_s": round(v / max(self.steady_calls, 1), 4)
                    for k, v in sorted(self.account.items())
                },
            }
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
            **steady,
        }

    def publish(self, client: redis.Redis, job_id: str, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= self.every:
            self.last = now
            publish_rollout_stats(client, job_id, self.snapshot())

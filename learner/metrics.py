"""Prometheus metrics of the learner, on the shared services.metrics registry (names `payoff_learner_*`).

`observe_step` turns the stats dict `Trainer.train_step` returns into series, so the trainer only makes one
call per step and the metric names live here.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram

from services.metrics import REGISTRY

_J = ["job"]

STEPS = Counter("payoff_learner_steps_total", "Optimizer steps taken", _J, registry=REGISTRY)
SAMPLES = Counter("payoff_learner_samples_total", "Trajectories trained on", _J, registry=REGISTRY)
STEP_SECONDS = Histogram(
    "payoff_learner_step_seconds",
    "Wall time of one train_step (forward+backward+update)",
    _J,
    registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
LOSS = Gauge(
    "payoff_learner_loss",
    "Last value of each loss term reported by the algorithm",
    ["job", "term"],
    registry=REGISTRY,
)
REWARD_MEAN = Gauge(
    "payoff_learner_reward_mean", "Mean sequence reward of the last batch", _J, registry=REGISTRY
)
STALENESS = Gauge(
    "payoff_learner_staleness_versions", "Mean policy-version lag of the last batch", _J, registry=REGISTRY
)
POLICY_VERSION = Gauge(
    "payoff_learner_policy_version", "Learner's current policy version", _J, registry=REGISTRY
)
SYNC_SECONDS = Histogram(
    "payoff_learner_weight_sync_seconds",
    "Duration of one weight push to rollout replicas",
    _J,
    registry=REGISTRY,
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60),
)
SYNC_BYTES = Counter(
    "payoff_learner_weight_sync_bytes_total", "Bytes pushed to rollout replicas", _J, registry=REGISTRY
)
SYNC_FAILURES = Counter(
    "payoff_learner_weight_sync_failures_total",
    "Replicas a weight push failed to reach",
    _J,
    registry=REGISTRY,
)
CHECKPOINT_SECONDS = Histogram(
    "payoff_learner_checkpoint_seconds",
    "Time to write a checkpoint and ack",
    _J,
    registry=REGISTRY,
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)

REWARD_BY_SOURCE = Gauge(
    "payoff_learner_reward_by_source",
    "Sequence reward of the last batch per data_source",
    ["job", "data_source", "stat"],
    registry=REGISTRY,
)
IDLE_SECONDS = Counter(
    "payoff_learner_idle_seconds_total", "Seconds the learner waited for trajectories", _J, registry=REGISTRY
)
IDLE_RATIO = Gauge(
    "payoff_learner_idle_ratio",
    "Share of the last step spent waiting for trajectories",
    _J,
    registry=REGISTRY,
)

PHASE_SECONDS = Counter(
    "payoff_learner_phase_seconds_total",
    "Learner time by phase: collate, forward, backward, optimizer, push_rendezvous, push_transfer (pack + "
    "transfer + apply + ack), checkpoint, wait (for trajectories), report",
    ["job", "phase"],
    registry=REGISTRY,
)
_PHASE_KEYS = {"checkpoint_s": "checkpoint", "wait_s": "wait", "report_s": "report"}
PUSH_PHASE_SECONDS = Counter(
    "payoff_learner_push_phase_seconds_total",
    "Weight push sub-phases on the sender (plan, announce, pack, checksum, send, ack; they overlap, so "
    "they do not add up to push_transfer): services/weights/protocol.py PushResult.account",
    ["job", "phase"],
    registry=REGISTRY,
)
_PUSH_ACCOUNT = "push_account_"


class PhaseClock:
    """Laps of one train_step: `lap(name)` charges the time since the previous lap to `name`."""

    def __init__(self) -> None:
        self.last, self.laps = time.perf_counter(), {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = self.laps.get(name, 0.0) + now - self.last
        self.last = now

    def stats(self) -> dict[str, float]:
        return {f"time_{k}_s": v for k, v in self.laps.items()}


def phases(stats: dict) -> dict[str, float]:
    """phase -> seconds of one step's stats (its time_*_s laps, push phases, checkpoint, wait, report)."""
    out = {k[5:-2]: float(v) for k, v in stats.items() if k.startswith("time_") and k.endswith("_s")}
    out.update({p: float(stats[k]) for k, p in _PHASE_KEYS.items() if k in stats})
    return out


# stats keys the algorithms report that are loss terms (or KL) rather than bookkeeping
_NOT_LOSS = {
    "step",
    "version",
    "samples",
    "reward_mean",
    "reward_norm_mean",  # learner/reward_norm.py: the normalised reward, not a loss term
    "reward_norm_std",
    "reward_norm_groups",
    "reward_norm_lone",
    "staleness",
    "step_s",
    "push_s",
    "push_bytes",
    "push_ok",
    "push_failed",
    "checkpoint",
    "checkpoint_s",
    "wait_s",
    "idle_ratio",
    "behaviour_version_max",
    "behaviour_version_min",
    "finished",
    "report_s",
    "trained_tokens",
}


def observe_step(job: str, stats: dict, by_source: dict[str, tuple[float, float]] | None = None) -> None:
    """Record one train_step's stats (never raises: metrics must not break training).
    `by_source`: data_source -> (mean, std) of the batch's sequence rewards."""
    by_source = by_source or {}
    try:
        STEPS.labels(job).inc()
        SAMPLES.labels(job).inc(stats.get("samples", 0))
        if "step_s" in stats:
            STEP_SECONDS.labels(job).observe(stats["step_s"])
        if "reward_mean" in stats:
            REWARD_MEAN.labels(job).set(stats["reward_mean"])
        if "staleness" in stats:
            STALENESS.labels(job).set(stats["staleness"])
        if "version" in stats:
            POLICY_VERSION.labels(job).set(stats["version"])
        if "push_s" in stats:
            SYNC_SECONDS.labels(job).observe(stats["push_s"])
            SYNC_BYTES.labels(job).inc(stats.get("push_bytes", 0))
            SYNC_FAILURES.labels(job).inc(stats.get("push_failed", 0))
        if "checkpoint_s" in stats:
            CHECKPOINT_SECONDS.labels(job).observe(stats["checkpoint_s"])
        if "wait_s" in stats:
            IDLE_SECONDS.labels(job).inc(stats["wait_s"])
            IDLE_RATIO.labels(job).set(stats.get("idle_ratio", 0.0))
        for source, (mean, std) in by_source.items():
            REWARD_BY_SOURCE.labels(job, source, "mean").set(mean)
            REWARD_BY_SOURCE.labels(job, source, "std").set(std)
        for phase, seconds in phases(stats).items():
            PHASE_SECONDS.labels(job, phase).inc(seconds)
        for k, v in stats.items():
            if k.startswith(_PUSH_ACCOUNT) and k.endswith("_s"):
                PUSH_PHASE_SECONDS.labels(job, k[len(_PUSH_ACCOUNT) : -2]).inc(float(v))
                continue
            if k.startswith("time_") or k.startswith("catchup_"):
                continue
            if k not in _NOT_LOSS and isinstance(v, (int, float)) and not isinstance(v, bool):
                LOSS.labels(job, k).set(float(v))
    except Exception:  # pragma: no cover - defensive
        pass


def reward_by_source(trajs) -> dict[str, tuple[float, float]]:
    """(mean, std) of finished trajectories' rewards per data source (or env)."""
    import torch

    by: dict[str, list[float]] = {}
    for t in (t for t in trajs if t.finished):  # an unfinished T-PPO segment has no reward yet
        by.setdefault(t.data_source or t.env or "unknown", []).append(t.reward)
    return {
        k: (float(torch.tensor(v).mean()), float(torch.tensor(v).std(unbiased=False))) for k, v in by.items()
    }

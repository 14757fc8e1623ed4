"""Prometheus metrics of rollout replicas, on the shared services.metrics registry (names `payoff_rollout_*`).

Tokens and requests are counters (dashboards take `rate()` for tokens/s); the policy version is a gauge per
replica so a replica that stopped receiving weight pushes shows up as a flat line below the learner's.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram

from services.metrics import REGISTRY

_JR = ["job", "replica"]

REQUESTS = Counter("payoff_rollout_requests_total", "Generation requests completed", _JR, registry=REGISTRY)
TOKENS = Counter("payoff_rollout_generated_tokens_total", "Tokens generated", _JR, registry=REGISTRY)
PROMPT_TOKENS = Counter(
    "payoff_rollout_prompt_tokens_total", "Prompt tokens processed", _JR, registry=REGISTRY
)
BATCH_SECONDS = Histogram(
    "payoff_rollout_batch_seconds",
    "Latency of one batched engine.generate call",
    _JR,
    registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
BATCH_SIZE = Histogram(
    "payoff_rollout_batch_size",
    "Requests per batched engine call",
    _JR,
    registry=REGISTRY,
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
CALL_PHASE_SECONDS = Counter(
    "payoff_rollout_call_phase_seconds_total",
    "Seconds of the replica's job calls by phase (sync_wait, queued, generate, score, segments, episodes, put)",
    ["job", "replica", "phase"],
    registry=REGISTRY,
)
EPISODES = Counter(
    "payoff_rollout_episodes_total", "Game episodes played", ["job", "replica", "env"], registry=REGISTRY
)
POLICY_VERSION = Gauge(
    "payoff_rollout_policy_version", "Policy version loaded in the replica's engine", _JR, registry=REGISTRY
)
BUSY_SECONDS = Counter(
    "payoff_rollout_busy_seconds_total",
    "Seconds the engine spent generating (idle ratio = 1 - rate(busy))",
    _JR,
    registry=REGISTRY,
)


IDLE_RATIO = Gauge(
    "payoff_rollout_idle_ratio",
    "Share of the replica's lifetime the engine was not generating",
    _JR,
    registry=REGISTRY,
)
_STARTED: dict[tuple[str, str], float] = {}
_BUSY: dict[tuple[str, str], float] = {}


def observe_batch(job: str, replica: str, outs, prompt_tokens: int, seconds: float, version: int) -> None:
    """Record one batched generate call (never raises: metrics must not break serving)."""
    observe_generation(
        job, replica, len(outs), sum(len(o.token_ids) for o in outs), prompt_tokens, seconds, version
    )


def observe_call(job: str, replica: str, account: dict[str, float]) -> None:
    """One job call's time account (services/rollout_api: `account` of its result)."""
    try:
        for phase, seconds in account.items():
            CALL_PHASE_SECONDS.labels(job, replica, phase).inc(max(0.0, seconds))
    except Exception:  # pragma: no cover - defensive
        pass


def observe_generation(
    job: str, replica: str, n: int, tokens: int, prompt_tokens: int, seconds: float, version: int
) -> None:
    """Record `n` sequences / `tokens` new tokens generated in `seconds` of engine time."""
    try:
        REQUESTS.labels(job, replica).inc(n)
        TOKENS.labels(job, replica).inc(tokens)
        PROMPT_TOKENS.labels(job, replica).inc(prompt_tokens)
        BATCH_SECONDS.labels(job, replica).observe(seconds)
        BATCH_SIZE.labels(job, replica).observe(n)
        BUSY_SECONDS.labels(job, replica).inc(seconds)
        POLICY_VERSION.labels(job, replica).set(version)
        key, now = (job, replica), time.monotonic()
        started = _STARTED.setdefault(key, now - seconds)
        _BUSY[key] = _BUSY.get(key, 0.0) + seconds
        IDLE_RATIO.labels(job, replica).set(max(0.0, 1.0 - _BUSY[key] / max(now - started, 1e-9)))
    except Exception:  # pragma: no cover - defensive
        pass

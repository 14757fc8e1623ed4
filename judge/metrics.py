"""Prometheus metrics of the judge, on the shared services.metrics registry (names `payoff_judge_*`).

Every failure that made a sample score 0 is counted in `payoff_judge_failures_total` with its reason, so a
dashboard shows a judge that silently zeroes rewards (timeouts, unparsable verdicts) at once.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from services.metrics import REGISTRY

REQUESTS = Counter(
    "payoff_judge_requests_total", "Judge verdicts requested", ["job", "backend", "rubric"], registry=REGISTRY
)
FAILURES = Counter(
    "payoff_judge_failures_total",
    "Verdicts that failed and scored 0 (timeout, http, parse, unsupported, error)",
    ["job", "backend", "reason"],
    registry=REGISTRY,
)
RETRIES = Counter(
    "payoff_judge_retries_total",
    "Judge calls retried after a transport error or a bad verdict",
    ["job", "backend"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "payoff_judge_request_seconds",
    "Latency of one judge engine call",
    ["job", "backend"],
    registry=REGISTRY,
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
SCORED = Counter(
    "payoff_judge_scored_total",
    "Samples scored by a reward pipeline",
    ["job", "data_source"],
    registry=REGISTRY,
)
SCORE = Histogram(
    "payoff_judge_score",
    "Distribution of reward scores the judge produced",
    ["job", "data_source"],
    registry=REGISTRY,
    buckets=(-1, -0.5, 0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 2),
)


def failure_reason(error: str | None) -> str:
    """The metric label of an error string: its prefix up to ':' (errors are written 'reason: detail')."""
    if not error:
        return "error"
    return error.split(":", 1)[0].strip().replace(" ", "_")[:32] or "error"


def count_failure(job: str, backend: str, error: str | None) -> None:
    FAILURES.labels(job, backend, failure_reason(error)).inc()


def failures(job: str, backend: str, reason: str) -> float:
    """Current value of one failure counter (tests and the CLI summary read it)."""
    return (
        REGISTRY.get_sample_value(
            "payoff_judge_failures_total", {"job": job, "backend": backend, "reason": reason}
        )
        or 0.0
    )

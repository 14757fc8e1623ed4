"""Gateway metrics, on the shared services.metrics registry (one `/metrics` for everything in a process).

Request metrics are labelled by route template (`/v1/jobs/{job_id}`), never by job id, to keep the number
of series bounded; per-job numbers come from the job's own metrics (queue, learner). No gateway series names a
tenant: `/metrics` goes to the scraper (the admin key or PAYOFF_METRICS_TOKEN, gateway/app.py), and series
mirrored to Ray's metrics agent (PAYOFF_METRICS_TO_RAY) are readable by anything that reaches that port.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from services.metrics import REGISTRY

REQUESTS = Counter(
    "payoff_gateway_requests_total",
    "HTTP requests by route template, method and status",
    ["route", "method", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "payoff_gateway_request_seconds",
    "Request handling time (to the first response byte for streams)",
    ["route", "method"],
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
)
REDIS_ERRORS = Counter(
    "payoff_gateway_redis_errors_total",
    "Requests answered 503 because Redis was unreachable",
    registry=REGISTRY,
)
AUTH_FAILURES = Counter(
    "payoff_gateway_auth_failures_total",
    "Requests without a valid API key (on /metrics: without the scrape token or an admin key)",
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "payoff_gateway_rate_limited_total", "Requests refused by the per-key rate limit", registry=REGISTRY
)
JOBS = Gauge(
    "payoff_gateway_jobs",
    "Jobs in each state (set by the runner that holds the lease)",
    ["state"],
    registry=REGISTRY,
)

SUBMITTED = Counter("payoff_gateway_jobs_submitted_total", "Jobs accepted", registry=REGISTRY)
REJECTED = Counter("payoff_gateway_jobs_rejected_total", "Job specs refused with 422", registry=REGISTRY)

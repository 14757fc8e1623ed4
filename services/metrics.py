"""Prometheus metric names shared by every service (one place, so dashboards and alerts match).

Every metric carries a `job` label. Services expose them on their own `/metrics`; on Ray Serve the same
registry is scraped through each replica's endpoint.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)
_J = ["job"]

# trajectory queue
QUEUE_PUT = Counter("payoff_queue_put_total", "Trajectories admitted to the queue", _J, registry=REGISTRY)
QUEUE_DUPLICATES = Counter("payoff_queue_duplicate_total", "Puts skipped: trajectory id already admitted",
                           _J, registry=REGISTRY)
QUEUE_GET = Counter("payoff_queue_get_total", "Trajectories delivered to learners", _J, registry=REGISTRY)
QUEUE_ACKED = Counter("payoff_queue_acked_total", "Trajectories acked after training", _J, registry=REGISTRY)
QUEUE_REDELIVERED = Counter("payoff_queue_redelivered_total",
                            "Entries taken over from a consumer presumed dead", _J, registry=REGISTRY)
QUEUE_DEAD = Counter("payoff_queue_dead_letter_total", "Entries moved to dead letters", _J, registry=REGISTRY)
QUEUE_STALE = Counter("payoff_queue_stale_total", "Trajectories beyond the staleness bound", _J,
                      registry=REGISTRY)
QUEUE_DEPTH = Gauge("payoff_queue_depth", "Un-acked entries in the job's stream", _J, registry=REGISTRY)
QUEUE_PENDING = Gauge("payoff_queue_pending", "Delivered but not yet acked", _J, registry=REGISTRY)
QUEUE_LAG = Gauge("payoff_queue_lag", "Entries not yet delivered to any learner", _J, registry=REGISTRY)
QUEUE_PUT_WAIT = Histogram("payoff_queue_put_wait_seconds", "Time producers waited for room (back-pressure)",
                           _J, registry=REGISTRY, buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60))
QUEUE_STALENESS = Histogram("payoff_queue_staleness_versions", "Version lag of delivered trajectories", _J,
                            registry=REGISTRY, buckets=(0, 1, 2, 3, 4, 6, 8, 16, 32))


def render() -> bytes:
    """Text exposition of every payoff metric (for a /metrics endpoint)."""
    return generate_latest(REGISTRY)

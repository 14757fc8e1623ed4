"""Prometheus metric names shared by every service (one place, so dashboards and alerts match).

Every metric carries a `job` label. Services expose them on their own `/metrics` (`render`). On a Ray cluster
most of them are recorded in processes no scrape config can name — per-job rollout and judge replicas (Serve
route `/jobs/<id>/…`, one replica per request) and the learner's Ray Train workers (no HTTP server) — so with
PAYOFF_METRICS_TO_RAY=1 each Ray actor process also mirrors the registry into `ray.util.metrics`, which Ray's metrics
agent on every node exports (as `ray_payoff_*`; the shipped scrape configs rename them back). deploy/README.md
lists which series are reached which way.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)
_J = ["job"]

# trajectory queue
QUEUE_PUT = Counter("payoff_queue_put_total", "Trajectories admitted to the queue", _J, registry=REGISTRY)
QUEUE_DUPLICATES = Counter(
    "payoff_queue_duplicate_total", "Puts skipped: trajectory id already admitted", _J, registry=REGISTRY
)
QUEUE_GET = Counter("payoff_queue_get_total", "Trajectories delivered to learners", _J, registry=REGISTRY)
QUEUE_ACKED = Counter("payoff_queue_acked_total", "Trajectories acked after training", _J, registry=REGISTRY)
QUEUE_REDELIVERED = Counter(
    "payoff_queue_redelivered_total",
    "Entries taken over from a consumer presumed dead",
    _J,
    registry=REGISTRY,
)
QUEUE_DEAD = Counter("payoff_queue_dead_letter_total", "Entries moved to dead letters", _J, registry=REGISTRY)
QUEUE_STALE = Counter(
    "payoff_queue_stale_total", "Trajectories beyond the staleness bound", _J, registry=REGISTRY
)
QUEUE_DEPTH = Gauge("payoff_queue_depth", "Un-acked entries in the job's stream", _J, registry=REGISTRY)
QUEUE_PENDING = Gauge("payoff_queue_pending", "Delivered but not yet acked", _J, registry=REGISTRY)
QUEUE_LAG = Gauge("payoff_queue_lag", "Entries not yet delivered to any learner", _J, registry=REGISTRY)
QUEUE_PUT_WAIT = Histogram(
    "payoff_queue_put_wait_seconds",
    "Time producers waited for room (back-pressure)",
    _J,
    registry=REGISTRY,
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60),
)
QUEUE_STALENESS = Histogram(
    "payoff_queue_staleness_versions",
    "Version lag of delivered trajectories",
    _J,
    registry=REGISTRY,
    buckets=(0, 1, 2, 3, 4, 6, 8, 16, 32),
)


def render() -> bytes:
    """Text exposition of every payoff metric (for a /metrics endpoint)."""
    return generate_latest(REGISTRY)


# ------------------------------------------------------------------ mirror to Ray's metrics agent
RAY_EXPORT_ENV = (
    "PAYOFF_METRICS_TO_RAY"  # "1": every Ray actor that imports this module mirrors (export_to_ray)
)
RAY_EXPORT_INTERVAL_ENV = "PAYOFF_METRICS_TO_RAY_INTERVAL_S"
_ray_gauges: dict[str, object] = {}
_ray_lock = threading.Lock()
_ray_thread: threading.Thread | None = None


def forget_job(job_id: str) -> int:
    """Remove every series of one job from this process's registry (after the job ended and its grace
    period passed), so /metrics does not grow with every job ever run. Returns the series removed."""
    removed = 0
    for collector in list(REGISTRY._collector_to_names):
        names = tuple(getattr(collector, "_labelnames", ()))
        if "job" not in names:
            continue
        at = names.index("job")
        with collector._lock:
            keys = [k for k in collector._metrics if k[at] == job_id]
        for key in keys:
            collector.remove(*key)
            removed += 1
    return removed


def mirror_to_ray() -> int:
    """Set a `ray.util.metrics.Gauge` per payoff_* sample name to the sample's current value (counters, and
    histogram `_bucket` (with `le`) / `_sum` / `_count` included, so rate() and histogram_quantile() work the
    same on the mirrored series). Needs a connected Ray worker or driver. Returns the samples mirrored."""
    from ray.util.metrics import Gauge as RayGauge

    n = 0
    with _ray_lock:
        for family in REGISTRY.collect():
            for s in family.samples:
                if not s.name.startswith("payoff_") or s.name.endswith("_created"):
                    continue
                gauge = _ray_gauges.get(s.name)
                if gauge is None:
                    gauge = _ray_gauges[s.name] = RayGauge(
                        s.name, family.documentation, tag_keys=tuple(sorted(s.labels))
                    )
                gauge.set(s.value, tags=dict(s.labels))
                n += 1
    return n


def export_to_ray(interval_s: float = 5.0) -> bool:
    """Mirror the registry to Ray's metrics agent every `interval_s` from a daemon thread (once per process).
    Only Ray actors mirror (Serve replicas, Ray Train workers, job drivers): a driver such as `payoff serve`'s
    gateway serves its own /metrics, and mirroring it too would count its series twice. Never raises into the
    caller. True if this call started the thread."""
    global _ray_thread

    def loop() -> None:
        import ray

        while True:
            time.sleep(interval_s)
            try:
                if ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None:
                    mirror_to_ray()
            except Exception as e:  # metrics must never break the process
                log.debug("mirroring payoff metrics to Ray failed: %s", e)

    with _ray_lock:
        if _ray_thread is not None:
            return False
        _ray_thread = threading.Thread(target=loop, name="payoff-metrics-to-ray", daemon=True)
        _ray_thread.start()
    return True


if os.environ.get(RAY_EXPORT_ENV, "").lower() in ("1", "true", "yes"):
    export_to_ray(float(os.environ.get(RAY_EXPORT_INTERVAL_ENV) or 5.0))

"""The job's rollout loop, in one screen.

    connect → [ wait_turn → issue up to capacity (async: while the staleness gate is open) → collect the
    oldest result → count it → publish statistics ] until stopped

Invariants: at most one request per replica is in flight; every wait is bounded (a result by
`REQUEST_TIMEOUT_S`, the sync barrier and the gate by polling the stop event), so stopping the driver
ends the loop within one timeout; a failed request (a replica restarting, a bad request) is logged,
counted and retried with a new request after a pause — it never ends the loop.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

from orchestrator.schedule import make_schedule
from orchestrator.staleness import StalenessGate
from orchestrator.stats import RolloutStats
from services.jobspec import JobSpec
from services.queue import TrajectoryQueue
from services.rollout_api import RolloutCall, RolloutCallError, RolloutClient

log = logging.getLogger(__name__)
REQUEST_TIMEOUT_S = 600.0


def run(
    job_id: str, spec: JobSpec, client: RolloutClient, queue: TrajectoryQueue, stop: threading.Event
) -> RolloutStats:
    schedule = make_schedule(spec, queue)
    gate = StalenessGate(queue, spec) if schedule.asynchronous else None
    stats = RolloutStats(spec.rollout.replicas)
    inflight: deque[RolloutCall] = deque()
    while not stop.is_set() and not client.ready():
        stop.wait(0.5)  # the runner deploys the rollout app concurrently
    while not stop.is_set():
        schedule.wait_turn(len(inflight), stop)
        free = schedule.capacity(len(inflight))
        if free and gate is not None and not gate.open():
            free = 0  # far enough ahead of the learner: issue nothing new
        for _ in range(free):
            inflight.append(schedule.issue(client))
        if not inflight:
            stop.wait(0.05)
            continue
        try:
            stats.add(inflight.popleft().result(timeout_s=REQUEST_TIMEOUT_S))
        except RolloutCallError as e:
            stats.failed()
            if not stop.is_set():
                log.warning("job %s: rollout request failed: %s", job_id, e)
                stop.wait(1.0)
        stats.publish(queue.r, job_id)
    stats.publish(queue.r, job_id, force=True)
    return stats

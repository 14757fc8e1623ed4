"""The job's rollout loop, in one screen.

    connect → [ wait_turn → issue up to capacity (async: while the staleness gate is open) → collect the
    oldest result → count it → publish statistics ] until stopped

Invariants: at most one request per replica is in flight (T-PPO windows: two, orchestrator/tppo.py); every wait is bounded (a result by
`REQUEST_TIMEOUT_S`, the sync barrier and the gate by polling the stop event), so stopping the driver
ends the loop within one timeout. A failed request is counted and treated by orchestrator/failures.py:
a transient one (a replica restarting or catching up, a timeout) is retried with a new request after a
pause and reported in the job's events at most every 30 s; `reject_after` deterministic ones in a row (a
4xx: the env cannot be built, a bad request) end the loop with `RolloutRejected`, and the job fails.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

from orchestrator.failures import CallFailures, deterministic
from orchestrator.schedule import make_schedule
from orchestrator.staleness import StalenessGate
from orchestrator.stats import RolloutStats
from services.jobspec import JobSpec
from services.queue import TrajectoryQueue
from services.rollout_api import RolloutCall, RolloutCallError, RolloutClient

log = logging.getLogger(__name__)
REQUEST_TIMEOUT_S = 600.0
RETRY_PAUSE_S = 1.0


def run(
    job_id: str,
    spec: JobSpec,
    client: RolloutClient,
    queue: TrajectoryQueue,
    stop: threading.Event,
    failures: CallFailures | None = None,
) -> RolloutStats:
    schedule = make_schedule(spec, queue)
    gate = StalenessGate(queue, spec) if schedule.asynchronous else None
    stats = RolloutStats(spec.rollout.replicas)
    failures = failures or CallFailures(job_id, queue.r)
    inflight: deque[RolloutCall] = deque()
    while not stop.is_set() and not client.ready():
        stop.wait(0.5)  # the runner deploys the rollout app concurrently
    try:
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
                failures.ok()
                if stats.steady_t1 is None:  # one GET per result until the learner's last step
                    version = queue.learner_version()
                    if version >= 1:
                        stats.steady()
                    if version >= spec.learner.steps:
                        stats.end_steady()
            except RolloutCallError as e:
                if not stop.is_set():  # while stopping, the replicas are being torn down
                    stats.failed(rejected=deterministic(e))
                    failures.failed(e)  # raises RolloutRejected after too many rejections in a row
                    stop.wait(RETRY_PAUSE_S)
            stats.publish(queue.r, job_id)
    finally:
        try:
            stats.publish(queue.r, job_id, force=True)
        except Exception as e:  # never hide why the loop ended
            log.warning("job %s: could not publish the last rollout statistics: %s", job_id, e)
    return stats

"""What the job driver does with a failed rollout request.

- Deterministic: a 4xx answer from the replica (other than 408 / 429), i.e. the request itself is wrong —
  the env cannot be built from the task's data (422), a window larger than the response (422). After
  `reject_after` of them in a row (no success in between) the driver fails with the replica's error
  (`RolloutRejected`), after an error LogEvent on the job's events (source "orchestrator"); the runner then
  fails the job with that message, so a job that cannot start says why at once.
- Transient: a 5xx (a replica catching up with the learner answers 503), no status (a timeout, a replica
  that died or is being restarted by Serve), 408, 429. Retried by the loop after a pause, for as long as
  the job runs; reported as a warning LogEvent at most every `report_every_s` (with how many failed since
  the last report). Both kinds are counted in the rollout statistics (orchestrator/stats.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis

from services.jobs import report
from services.rollout_api import RolloutCallError

log = logging.getLogger(__name__)
RETRYABLE_4XX = frozenset({408, 429})


class RolloutRejected(RuntimeError):
    """The replicas rejected the job's rollout requests `reject_after` times in a row: the job fails."""


def deterministic(e: RolloutCallError) -> bool:
    """Would the same request fail again? (A 4xx other than timeout / rate limit.)"""
    return e.status is not None and 400 <= e.status < 500 and e.status not in RETRYABLE_4XX


class CallFailures:
    def __init__(
        self,
        job_id: str,
        client: redis.Redis | None,
        reject_after: int = 3,
        report_every_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.job_id, self.client, self.clock = job_id, client, clock
        self.reject_after, self.report_every_s = reject_after, report_every_s
        self.in_a_row = 0  # deterministic failures since the last success
        self.unreported = 0
        self._last_report = float("-inf")

    def ok(self) -> None:
        self.in_a_row = 0

    def failed(self, e: RolloutCallError) -> None:
        """Record a failure; raises RolloutRejected at the `reject_after`-th deterministic one in a row."""
        if deterministic(e):
            self.in_a_row += 1
            if self.in_a_row >= self.reject_after:
                message = (
                    f"{e.detail[:1500]} (the rollout replica answered HTTP {e.status} to {self.in_a_row} "
                    f"requests in a row)"
                )
                self.event("error", f"rollout requests rejected, the job fails: {message}")
                raise RolloutRejected(message)
        self.unreported += 1
        now = self.clock()
        if now - self._last_report >= self.report_every_s:
            kind = "rejected" if deterministic(e) else "failed (retrying)"
            self.event(
                "warning",
                f"rollout request {kind}: {e} [{self.unreported} failed since the last report]"[:2000],
            )
            self._last_report, self.unreported = now, 0

    def event(self, level: str, message: str) -> None:
        report(self.client, self.job_id, level, "orchestrator", message)

"""The learner's stall watch: a job that gets no trainable trajectory fails with the reason, never spins.

A wait for a batch is stalled while nothing trainable arrives: every delivery is stale (beyond
`max_staleness`), dead-lettered, or there is none at all. The stalled time is kept per consumer in the
queue (`TrajectoryQueue.add_stall`), so a learner restarted by Ray Train continues the clock instead of
starting another full timeout. At half of `timeout_s` the job's events get a warning (LogEvent, source
"learner"); at `timeout_s` an error event, and the learner raises `LearnerError` with the reason — the
learner actor reports `failed` and the runner fails the job with that message. One trainable delivery
resets the clock.

`get_timeout_s` (learner/trainer.py) stays the bound on one batch's wait while trainable data does
arrive but never makes a full batch (e.g. groups that never complete).

`keep_alive`: while a step runs (its weight push may wait out a dying replica, its checkpoint may be
slow) a thread touches the learner's entries, so none looks abandoned (idle past `claim_idle_ms`) and is
re-delivered — to another rank, which would train it a second time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from services.jobs import report
from services.queue import Batch, Item, TrajectoryQueue

log = logging.getLogger(__name__)
MAX_TICK_S = 5.0  # one observation adds at most this much (a get blocks ~1 s; a catch-up push is bounded)


class LearnerError(RuntimeError):
    pass


class StallWatch:
    def __init__(self, queue: TrajectoryQueue, consumer: str, timeout_s: float, clock=time.monotonic):
        self.queue, self.consumer, self.timeout_s, self.clock = queue, consumer, timeout_s, clock
        self.stalled_s, self.warned = 0.0, False
        self.stale = self.dead = 0  # what arrived untrainable during this stall (this process)
        self._last: float | None = None
        self._kept = True  # the queue may hold a clock from a previous run of this consumer

    def begin(self) -> None:
        """A wait for a batch starts (the step before it does not count as stalled time)."""
        self._last = self.clock()

    def observe(self, batch: Batch, version: int) -> None:
        """After each read of the queue: reset on trainable data, else count; raises LearnerError."""
        now = self.clock()
        tick = min(MAX_TICK_S, now - (self._last if self._last is not None else now))
        self._last = now
        if batch.items:
            if self._kept:
                self.queue.clear_stall(self.consumer)
                self._kept = False
            self.stalled_s, self.warned, self.stale, self.dead = 0.0, False, 0, 0
            return
        self.stale += batch.stale
        self.dead += batch.dead
        self.stalled_s, self._kept = self.queue.add_stall(self.consumer, tick), True
        if self.stalled_s >= self.timeout_s:
            reason = self.reason(version)
            self._event("error", f"{reason}; the learner stops and the job fails")
            raise LearnerError(reason)
        if not self.warned and self.stalled_s >= self.timeout_s / 2:
            self.warned = True
            self._event("warning", f"{self.reason(version)}; the job fails at {self.timeout_s:g} s")

    def reason(self, version: int) -> str:
        cfg, total = self.queue.cfg, self.queue.stats()
        head = f"no trainable trajectory for {self.stalled_s:.0f} s (learner {self.consumer} at v{version})"
        if self.stale or self.dead:
            bound = f"lagging more than max_staleness={cfg.max_staleness} versions"
            return (
                f"{head}: {self.stale} arrived stale ({bound}; {total.get('stale', 0)} stale in all) and "
                f"{self.dead} were dead-lettered; are the rollout replicas at the learner's weights?"
            )
        return f"{head}: none arrived; are the rollout replicas running? (see the job's events)"

    def _event(self, level: str, message: str) -> None:
        report(self.queue.r, self.queue.job_id, level, "learner", message)


@contextmanager
def keep_alive(queue: TrajectoryQueue, consumer: str, items: Callable[[], list[Item]]) -> Iterator[None]:
    """Touch `items()` every claim_idle_ms / 4 from a thread while the body runs."""
    stop = threading.Event()
    period = queue.cfg.claim_idle_ms / 4000

    def beat() -> None:
        while not stop.wait(period):
            try:
                queue.touch(Batch(consumer, items()))
            except Exception as e:  # the learner's own next touch sees what was lost
                log.warning("learner %s: keep-alive touch failed: %s", consumer, e)

    threading.Thread(target=beat, daemon=True, name="learner-keepalive").start()
    try:
        yield
    finally:
        stop.set()

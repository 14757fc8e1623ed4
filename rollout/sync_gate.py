"""The sync gate of a job's rollout replica: it generates for the job only at the learner's weights.

A replica that (re)starts loads the job's model at version 0 and registers with the weight receiver; the
learner sees it behind in its registration record and pushes its current weights
(services/weights/catchup.py). Until they are applied, a job request (episodes, T-PPO windows, chat,
generate) waits up to `wait_s` for them and then fails with 503 and `Retry-After` (retryable: the job
driver retries it, a chat client may too). So no token of a job is generated under weights older than
the learner's published version (`TrajectoryQueue.learner_version`) minus `lag` (push_weights_every - 1:
between two periodic pushes every replica rightly holds the last one), and what the replica serves
carries the current version. An unreadable learner version (Redis down) is a 503 as well.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from fastapi import HTTPException

RETRY_AFTER_S = 2


class SyncGate:
    def __init__(
        self,
        version: Callable[[], int],
        learner_version: Callable[[], int],
        lag: int = 0,
        wait_s: float = 30.0,
        poll_s: float = 0.1,
        check_s: float = 0.005,
    ):
        """`poll_s`: how often a waiting request re-reads the learner's version (a Redis GET); `check_s`:
        how often it looks at the engine's own version, so that it starts within a few ms of the weights
        landing (a 100 ms check left the engine idle ~1/8 of an async job's steady state)."""
        self.version, self.learner_version = version, learner_version
        self.lag, self.wait_s, self.poll_s, self.check_s = lag, wait_s, poll_s, check_s
        self.target: int | None = None  # the last version the gate required (for /healthz)
        self.refused = 0  # requests answered 503

    @property
    def synced(self) -> bool | None:
        """Was the replica at the policy when last checked (None before the first request)?"""
        return None if self.target is None else self.version() >= self.target

    async def wait(self) -> None:
        """Return once the engine is at the learner's policy; 503 after `wait_s` without it."""
        deadline = time.monotonic() + self.wait_s
        next_read = 0.0
        while True:
            try:
                if time.monotonic() >= next_read:
                    self.target = max(0, await asyncio.to_thread(self.learner_version) - self.lag)
                    next_read = time.monotonic() + self.poll_s
            except Exception as e:
                self.refused += 1
                raise HTTPException(
                    503,
                    f"cannot read the learner's policy version ({type(e).__name__}: {e}); retry shortly",
                    headers={"Retry-After": str(RETRY_AFTER_S)},
                ) from None
            if self.version() >= self.target:
                return
            if time.monotonic() >= deadline:
                self.refused += 1
                raise HTTPException(
                    503,
                    f"this replica is at policy v{self.version()} and is being synced to the learner's "
                    f"v{self.target} (waited {self.wait_s:g} s); retry shortly",
                    headers={"Retry-After": str(RETRY_AFTER_S)},
                )
            await asyncio.sleep(self.check_s)

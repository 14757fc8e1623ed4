"""Process-wide settings read from the environment, and the clients built from them.

Embedded defaults run everything on one machine; a cluster sets the same variables (REDIS_URL,
RAY_ADDRESS, PAYOFF_DATA_DIR) from its Helm values.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import redis
from pydantic import BaseModel, ConfigDict, Field
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    data_dir: Path = Field(description="Caches (test models), Redis AOF, checkpoints.")
    redis_url: str | None = Field(None, description="External Redis; None starts a local redis-server.")
    ray_address: str | None = None
    redis_timeout_s: float = Field(5.0, gt=0, description="Socket timeout of every Redis call.")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            data_dir=Path(env.get("PAYOFF_DATA_DIR") or Path.cwd() / ".payoff").expanduser().resolve(),
            redis_url=env.get("REDIS_URL") or None,
            ray_address=env.get("RAY_ADDRESS") or None,
            redis_timeout_s=float(env.get("PAYOFF_REDIS_TIMEOUT_S", 5.0)),
        )


RIDE_OUT_S = 120.0  # default outage a data-plane client rides out (PAYOFF_REDIS_RIDE_OUT_S)


class RideOut(Retry):
    """Retry connection errors until `budget_s` has passed since the first failure of a call (backoff
    capped at 1 s), then raise: a Redis restart (same AOF dir) is waited out, a Redis that stays away
    still surfaces as an error, never a hang. Logs when an outage begins and ends."""

    def __init__(self, budget_s: float):
        super().__init__(
            ExponentialBackoff(cap=1.0, base=0.05),
            retries=-1,
            supported_errors=(redis.ConnectionError, redis.TimeoutError),
        )
        self.budget_s = budget_s

    def call_with_retry(self, do, fail, is_retryable=None, with_failure_count=False):
        self._backoff.reset()
        failures, started = 0, None
        while True:
            try:
                out = do()
                if started is not None:
                    log.warning("Redis answers again after %.1f s", time.monotonic() - started)
                return out
            except self._supported_errors as error:
                if is_retryable and not is_retryable(error):
                    raise
                failures += 1
                fail(error, failures) if with_failure_count else fail(error)
                now = time.monotonic()
                if started is None:
                    started = now
                    log.warning("Redis unreachable (%s): retrying for up to %.0f s", error, self.budget_s)
                if now - started >= self.budget_s:
                    raise
                time.sleep(min(self._backoff.compute(failures), self.budget_s - (now - started)))


def redis_client(url: str, timeout_s: float = 5.0, ride_out_s: float = 0.0) -> redis.Redis:
    """A client whose every call has a timeout and which reconnects after a dropped connection.

    By default retries are few and short (~0.35 s in all), so a dead server surfaces as an error at once:
    the gateway answers 503 while Redis is away. With `ride_out_s` > 0 (the data plane: learner, job
    driver, rollout replicas; see `data_plane_client`) each call waits out an outage that long, so a
    Redis restart pauses a job instead of failing it. Safe because the data plane's writes are idempotent
    (queue put by trajectory id, ack/claim by entry id). Blocking reads (XREADGROUP BLOCK) must pass a
    block time below `timeout_s`; the queue does.
    """
    if ride_out_s > 0:
        retry = RideOut(ride_out_s)
    else:
        retry = Retry(
            ExponentialBackoff(cap=0.2, base=0.05),
            retries=3,
            supported_errors=(redis.ConnectionError, redis.TimeoutError),
        )
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=30,
        retry=retry,
        decode_responses=False,
    )


def data_plane_client(url: str, env: dict[str, str] | None = None) -> redis.Redis:
    """The client of a job's long-running parts: rides out a Redis outage of PAYOFF_REDIS_RIDE_OUT_S
    seconds (default 120; 0 = fail at once), then raises and the part fails or restarts (the learner
    resumes from its checkpoint)."""
    env = os.environ if env is None else env
    return redis_client(url, ride_out_s=float(env.get("PAYOFF_REDIS_RIDE_OUT_S", RIDE_OUT_S)))

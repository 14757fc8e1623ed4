"""Process-wide settings read from the environment, and the clients built from them.

Embedded defaults run everything on one machine; a cluster sets the same variables (REDIS_URL,
RAY_ADDRESS, PAYOFF_DATA_DIR) from its Helm values.
"""

from __future__ import annotations

import os
from pathlib import Path

import redis
from pydantic import BaseModel, ConfigDict, Field
from redis.backoff import ExponentialBackoff
from redis.retry import Retry


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


def redis_client(url: str, timeout_s: float = 5.0) -> redis.Redis:
    """A client whose every call has a timeout and which reconnects after a dropped connection.

    Retries are few and short (~0.35 s in all) so a dead server surfaces as an error, never a hang.
    Blocking reads (XREADGROUP BLOCK) must pass a block time below `timeout_s`; the queue does.
    """
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

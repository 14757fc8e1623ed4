"""Per-key token bucket in Redis, so every gateway replica draws from the same bucket.

The bucket holds up to `burst` tokens and refills at `rate` per second; a request takes one token or is
refused with the time until the next token (the Retry-After). One Lua call per request keeps the
read-refill-take step atomic. Idle buckets expire.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from services import keys

# KEYS[1] bucket; ARGV: rate, burst, now (s). Returns {allowed 0/1, seconds to wait (string)}.
_TAKE = """
local rate, burst, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens, ts = tonumber(state[1]), tonumber(state[2])
if tokens == nil or ts == nil then tokens = burst; ts = now end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed, wait = 0, 0
if tokens >= 1 then
  tokens = tokens - 1; allowed = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(wait)}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: float


class RateLimiter:
    def __init__(self, client: redis.Redis, rate_per_s: float, burst: int) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst = rate_per_s, burst
        self._take = client.register_script(_TAKE)

    def take(self, key_id: str) -> Decision:
        allowed, wait = self._take(
            keys=[keys.rate_limit(key_id)], args=[self.rate, self.burst, f"{time.time():.6f}"]
        )
        return Decision(bool(int(allowed)), float(wait))

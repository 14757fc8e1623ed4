"""API keys mapped to tenants, stored hashed in Redis.

A key is `pyf_` + 32 random bytes (base64url). Only HMAC-SHA256(pepper, key) is stored: keys are random
and long, so a fast keyed hash is as strong as a slow password hash here, and the per-deployment pepper
(kept outside Redis) means a leaked Redis dump cannot be used to check guesses. The plaintext is shown
once, when the key is created.

Layout: hash `payoff:apikeys` digest → record JSON; hash `payoff:apikeys:ids` key id → digest.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

import redis
from pydantic import BaseModel, ConfigDict, Field

from services import keys

KEYS = keys.API_KEYS
IDS = keys.API_KEY_IDS
PREFIX = "pyf_"
ADMIN_TENANT = "admin"
TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class ApiKey(BaseModel):
    """A key's record (never the key itself)."""

    model_config = ConfigDict(extra="forbid")
    key_id: str
    tenant: str
    name: str = ""
    admin: bool = False
    created_at: float = Field(default_factory=time.time)


class KeyStore:
    def __init__(self, client: redis.Redis, pepper: bytes) -> None:
        if not pepper:
            raise ValueError("the API key pepper must not be empty")
        self.r, self.pepper = client, pepper

    def digest(self, key: str) -> str:
        return hmac.new(self.pepper, key.encode(), hashlib.sha256).hexdigest()

    def create(self, tenant: str, name: str = "", admin: bool = False) -> tuple[str, ApiKey]:
        """A new random key for `tenant`: (plaintext, record). The plaintext is not stored."""
        key = PREFIX + secrets.token_urlsafe(32)
        return key, self.register(key, tenant, name, admin)

    def register(self, key: str, tenant: str, name: str = "", admin: bool = False) -> ApiKey:
        """Store a given key (the configured admin key). Idempotent for the same key and tenant."""
        if not TENANT_RE.match(tenant):
            raise ValueError(f"tenant {tenant!r} must be 1-63 lowercase letters, digits, '-' or '_'")
        digest = self.digest(key)
        existing = self.r.hget(KEYS, digest)
        if existing is not None:
            rec = ApiKey.model_validate_json(existing)
            if rec.tenant == tenant and rec.admin == admin:
                return rec
        rec = ApiKey(key_id=secrets.token_hex(6), tenant=tenant, name=name, admin=admin)
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(KEYS, digest, rec.model_dump_json())
        pipe.hset(IDS, rec.key_id, digest)
        pipe.execute()
        return rec

    def lookup(self, key: str) -> ApiKey | None:
        if not key or len(key) > 256:
            return None
        raw = self.r.hget(KEYS, self.digest(key))
        return None if raw is None else ApiKey.model_validate_json(raw)

    def list(self, tenant: str | None = None) -> list[ApiKey]:
        recs = [ApiKey.model_validate_json(v) for v in self.r.hgetall(KEYS).values()]
        return sorted((r for r in recs if tenant is None or r.tenant == tenant), key=lambda r: r.created_at)

    def revoke(self, key_id: str) -> bool:
        digest = self.r.hget(IDS, key_id)
        if digest is None:
            return False
        pipe = self.r.pipeline(transaction=True)
        pipe.hdel(KEYS, digest)
        pipe.hdel(IDS, key_id)
        pipe.execute()
        return True

"""Gateway settings, read from the environment (PAYOFF_GATEWAY_*), plus the per-deployment key pepper."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from services.config import Settings


class GatewaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    redis_url: str
    data_dir: Path
    admin_key: str | None = Field(
        None,
        min_length=24,
        repr=False,
        description="Registered as the admin key at startup (tenant 'admin').",
    )
    pepper: str | None = Field(
        None,
        repr=False,
        description="Secret mixed into key hashes; None: the file <data_dir>/gateway/pepper (created once).",
    )
    max_body_bytes: int = Field(1 << 20, ge=1024, description="Larger request bodies get 413.")
    rate_per_s: float = Field(20.0, gt=0, description="Sustained requests per second per API key.")
    rate_burst: int = Field(40, ge=1, description="Requests a key may make at once before the rate applies.")
    run_jobs: bool = Field(True, description="Run the job runner in this process (leader-elected in Redis).")
    max_concurrent_jobs: int = Field(2, ge=1, description="Jobs starting or running at once; more wait.")
    poll_s: float = Field(0.5, gt=0, description="Runner tick.")
    lease_ttl_s: float = Field(10.0, gt=0, description="A runner that stops renewing loses the lease then.")
    start_timeout_s: float = Field(
        900.0, gt=0, description="A job whose components are not ready by then fails."
    )
    check_capacity: bool = Field(True, description="Reject jobs larger than the cluster (off: autoscaling).")
    connect_ray: bool = Field(True, description="Join Ray at startup (RAY_ADDRESS or a local head).")
    component_modules: tuple[str, ...] = Field(
        ("rollout.component", "judge.component", "orchestrator.component", "learner.component"),
        description="Imported at startup; each registers its components (a missing module is skipped).",
    )

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides) -> GatewaySettings:
        env = os.environ if env is None else env
        base = Settings.from_env(env)
        values: dict = {
            "redis_url": base.redis_url or "redis://127.0.0.1:6379/0",
            "data_dir": base.data_dir,
            "admin_key": env.get("PAYOFF_ADMIN_KEY") or None,
            "pepper": env.get("PAYOFF_API_KEY_PEPPER") or None,
        }
        numeric = {
            "max_body_bytes": ("PAYOFF_GATEWAY_MAX_BODY_BYTES", int),
            "rate_per_s": ("PAYOFF_GATEWAY_RATE_PER_S", float),
            "rate_burst": ("PAYOFF_GATEWAY_RATE_BURST", int),
            "max_concurrent_jobs": ("PAYOFF_GATEWAY_MAX_JOBS", int),
            "start_timeout_s": ("PAYOFF_GATEWAY_START_TIMEOUT_S", float),
        }
        for field, (name, kind) in numeric.items():
            if env.get(name):
                values[field] = kind(env[name])
        flags = {"run_jobs": "PAYOFF_GATEWAY_RUN_JOBS", "check_capacity": "PAYOFF_GATEWAY_CHECK_CAPACITY"}
        for field, name in flags.items():
            if env.get(name):
                values[field] = env[name].lower() not in ("0", "false", "no")
        if env.get("PAYOFF_COMPONENT_MODULES"):
            values["component_modules"] = tuple(m for m in env["PAYOFF_COMPONENT_MODULES"].split(",") if m)
        values.update(overrides)
        return cls(**values)


def load_pepper(settings: GatewaySettings) -> bytes:
    """The deployment's pepper: from settings/env, else a random one kept in the data dir (mode 0600).

    Without the pepper a copy of the Redis data cannot be used to test guessed keys offline. On a cluster
    set PAYOFF_API_KEY_PEPPER from a secret so every gateway replica agrees.
    """
    if settings.pepper:
        return settings.pepper.encode()
    path = settings.data_dir / "gateway" / "pepper"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)  # atomic and fails if another process won the race: keep theirs
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip().encode()

"""Gateway settings, read from the environment (PAYOFF_GATEWAY_*, PAYOFF_QUOTA_*, the tenant sandbox's
PAYOFF_ALLOWED_ROOTS / PAYOFF_JUDGE_HOSTS / PAYOFF_JUDGE_KEY_ENVS), plus the per-deployment key pepper and
the optional scrape credential of /metrics (PAYOFF_METRICS_TOKEN).

Every limit a tenant meets is here, so the operator sets it in one place; gateway/README.md lists them.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from services.config import Settings

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
JOB_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,80}$")


class Quotas(BaseModel):
    """Per-tenant quotas, checked at submission (422 naming the field and the quota)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_steps: int = Field(100_000, ge=1, description="learner.steps of one job.")
    max_replicas: int = Field(
        16, ge=1, description="rollout.replicas, judge.replicas and learner.workers of one job (each)."
    )
    max_cpus: float = Field(64.0, gt=0, description="CPUs one job holds in all (rollout, judge, learner).")
    max_gpus: float = Field(8.0, ge=0, description="GPUs one job holds in all.")
    max_jobs: int = Field(16, ge=1, description="Queued + starting + running jobs of one tenant.")
    max_tokens: int = Field(
        10_000_000_000,
        ge=1,
        description="Token budget of one job: learner.steps × max(learner.batch_size, "
        "rollout.groups_per_step × rollout.group_size) × max(tasks[].max_turns) × "
        "(rollout.max_prompt_tokens + rollout.max_response_tokens).",
    )

    @classmethod
    def from_env(cls, env) -> Quotas:
        kinds = {"max_steps": int, "max_replicas": int, "max_cpus": float, "max_gpus": float}
        kinds |= {"max_jobs": int, "max_tokens": int}
        values = {}
        for field, kind in kinds.items():
            raw = env.get(f"PAYOFF_QUOTA_{field.upper()}")
            if raw:
                values[field] = kind(float(raw)) if kind is int and "e" in raw.lower() else kind(raw)
        return cls(**values)


def _list(raw: str | None, seps: str = ",") -> tuple[str, ...]:
    for sep in seps[1:]:
        raw = (raw or "").replace(sep, seps[0])
    return tuple(x.strip() for x in (raw or "").split(seps[0]) if x.strip())


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
    metrics_token: str | None = Field(
        None,
        min_length=24,
        repr=False,
        exclude=True,  # a secret: never in a dump (Serve records deployment arguments); replicas read the env
        description="Scrape credential of GET /metrics (Authorization: Bearer <token>), besides the admin "
        "key; no tenant key is accepted there. None: only the admin key.",
    )
    max_body_bytes: int = Field(1 << 20, ge=1024, description="Larger request bodies get 413.")
    max_spec_bytes: int = Field(64 * 1024, ge=1024, description="Larger job specs get 413.")
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
        (
            "rollout.component",
            "judge.component",
            "orchestrator.component",
            "learner.component",
            "payoff.eval_actor",
        ),
        description="Imported at startup; each registers its components (a missing module is skipped).",
    )
    quota: Quotas = Field(default_factory=Quotas)
    allowed_roots: tuple[Path, ...] | None = Field(
        None,
        description="Directories whose models and data files any tenant may name (besides built-in "
        "names, hub ids and the tenant's own jobs' directories). None: the shared data dir and the "
        "models caches (see `roots()`).",
    )
    judge_hosts: tuple[str, ...] = Field(
        (), description="Hosts a job's judge.url may name, besides loopback (127.0.0.1, localhost, ::1)."
    )
    judge_key_envs: tuple[str, ...] = Field(
        (), description="Env vars a job's judge.api_key_env may name; empty: none may be named."
    )

    def roots(self) -> tuple[Path, ...]:
        """The allowed roots in effect: `allowed_roots`, else the project's data and model folders."""
        if self.allowed_roots is not None:
            return self.allowed_roots
        from games.data import shared_data_dir
        from services.models import models_dir

        return (shared_data_dir(), models_dir(), self.data_dir / "models")

    def allowed_judge_hosts(self) -> frozenset[str]:
        return frozenset(h.lower() for h in (*LOOPBACK_HOSTS, *self.judge_hosts))

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides) -> GatewaySettings:
        env = os.environ if env is None else env
        base = Settings.from_env(env)
        values: dict = {
            "redis_url": base.redis_url or "redis://127.0.0.1:6379/0",
            "data_dir": base.data_dir,
            "admin_key": env.get("PAYOFF_ADMIN_KEY") or None,
            "pepper": env.get("PAYOFF_API_KEY_PEPPER") or None,
            "metrics_token": env.get("PAYOFF_METRICS_TOKEN") or None,
        }
        numeric = {
            "max_body_bytes": ("PAYOFF_GATEWAY_MAX_BODY_BYTES", int),
            "max_spec_bytes": ("PAYOFF_GATEWAY_MAX_SPEC_BYTES", int),
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
        values["quota"] = Quotas.from_env(env)
        if env.get("PAYOFF_ALLOWED_ROOTS"):
            values["allowed_roots"] = tuple(Path(p) for p in _list(env["PAYOFF_ALLOWED_ROOTS"], ",:"))
        values["judge_hosts"] = _list(env.get("PAYOFF_JUDGE_HOSTS"))
        values["judge_key_envs"] = _list(env.get("PAYOFF_JUDGE_KEY_ENVS"))
        values.update(overrides)
        return cls(**values)


def _real(path: Path | str) -> Path:
    return Path(os.path.realpath(Path(path).expanduser()))


@dataclass(frozen=True)
class Sandbox:
    """What one tenant's job may name: paths under `roots` or its own jobs' dirs, judge hosts and key vars."""

    roots: tuple[Path, ...]
    jobs_dir: Path
    judge_hosts: frozenset[str]
    judge_key_envs: frozenset[str]
    owns: Callable[[str], bool] | None = None  # does the tenant own this job id (None: no job dirs)

    @classmethod
    def from_settings(cls, settings: GatewaySettings, owns: Callable[[str], bool] | None = None) -> Sandbox:
        return cls(
            roots=tuple(_real(p) for p in settings.roots()),
            jobs_dir=_real(settings.data_dir / "jobs"),
            judge_hosts=settings.allowed_judge_hosts(),
            judge_key_envs=frozenset(settings.judge_key_envs),
            owns=owns,
        )

    def absolute(self, path: str) -> str:
        """The path as the cluster will open it: `~` expanded and made absolute (`..` folded lexically)."""
        return os.path.abspath(Path(path).expanduser())

    def allows(self, path: str) -> bool:
        """Whether `path`, with every symlink and `..` resolved, lies under an allowed root or under the
        directory of a job this tenant owns. Another tenant's job dir is refused even under a root."""
        try:
            real = _real(self.absolute(path))
        except (OSError, ValueError, RuntimeError):  # "~nobody", a name too long for the OS
            return False
        if real == self.jobs_dir or real.is_relative_to(self.jobs_dir):
            parts = real.relative_to(self.jobs_dir).parts
            return (
                bool(parts) and bool(JOB_ID.match(parts[0])) and self.owns is not None and self.owns(parts[0])
            )
        return any(real.is_relative_to(root) for root in self.roots)

    def where(self) -> str:
        roots = ", ".join(str(r) for r in self.roots) or "none"
        return f"under {roots} (PAYOFF_ALLOWED_ROOTS) or under your own jobs' directories ({self.jobs_dir}/<job id>/)"


def default_sandbox() -> Sandbox:
    return Sandbox.from_settings(GatewaySettings.from_env())


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

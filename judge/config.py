"""Typed settings of a judge: which engine, how it samples, how it is served.

`JudgeConfig.from_spec(job.judge)` maps the user's JobSpec judge section onto these; everything else
keeps the defaults below (spec §1.5 for the SGLang judge, laptop-sized numbers for CPU engines).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Backend = Literal["rules", "transformers", "sglang", "openai"]
DEFAULT_SGLANG_MODEL = "Qwen/Qwen3-32B"
DEFAULT_LOCAL_MODEL = "tiny-qwen3"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SamplingConfig(_Strict):
    """How the judge model decodes. Defaults are Qwen3's thinking-mode settings used by GTAlign (§1.5)."""

    max_tokens: int = Field(32768, ge=1)
    temperature: float = Field(0.6, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    top_k: int | None = Field(20, ge=1, description="Sent in extra_body; not every endpoint accepts it.")
    enable_thinking: bool | None = Field(True, description="Qwen3 chat_template_kwargs; None sends nothing.")
    seed: int | None = None


PLAIN_SAMPLING = {
    "openai": SamplingConfig(max_tokens=2048, temperature=0.0, top_k=None, enable_thinking=None),
    "transformers": SamplingConfig(max_tokens=128, temperature=0.0, top_k=None, enable_thinking=False),
}


class SGLangConfig(_Strict):
    """A deployment-managed `python -m sglang.launch_server` (when `url` is None) or an external one."""

    launcher: str = Field(
        "sglang.launch_server",
        description="Module run as `python -m`; tests use an OpenAI-compatible server of "
        "their own that takes the same flags.",
    )
    tp: int = Field(1, ge=1, description="Tensor-parallel size (--tp).")
    dp: int = Field(1, ge=1, description="Data-parallel replicas inside one server (--dp).")
    host: str = "127.0.0.1"
    port: int | None = Field(None, ge=1, le=65535, description="None picks a free port.")
    reasoning_parser: str | None = Field("qwen3", description="Moves <think> into reasoning_content.")
    mem_fraction_static: float | None = Field(None, gt=0, le=1)
    context_length: int | None = Field(None, ge=1)
    extra_args: list[str] = Field(default_factory=list, description="Passed verbatim to launch_server.")
    startup_timeout_s: float = Field(1800.0, gt=0, description="Loading a 32B model takes minutes.")

    @property
    def gpus(self) -> int:
        return self.tp * self.dp


class ServeConfig(_Strict):
    """Ray Serve settings of the judge deployment."""

    name: str = "judge"
    replicas: int = Field(1, ge=1, description="Fixed replica count when autoscaling is off.")
    num_cpus: float = Field(0.5, gt=0, description="Fractional CPUs per replica.")
    num_gpus: float | None = Field(None, ge=0, description="None: SGLang's tp·dp when launching, else 0.")
    max_ongoing_requests: int = Field(16, ge=1)
    autoscaling: bool = False
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(4, ge=1)
    target_ongoing_requests: float = Field(4.0, gt=0)
    upscale_delay_s: float = Field(10.0, ge=0)
    downscale_delay_s: float = Field(120.0, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> ServeConfig:
        if self.autoscaling and self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) > max_replicas ({self.max_replicas})")
        return self


class JudgeConfig(_Strict):
    backend: Backend = "rules"
    model: str | None = Field(None, description="Judge model; defaults per backend (see _defaults).")
    url: str | None = Field(None, description="Base URL of an OpenAI-compatible endpoint (…/v1).")
    api_key_env: str | None = Field(None, description="Env var holding the endpoint's key.")
    job: str = Field("local", description="Value of the `job` label on judge metrics.")
    timeout_s: float = Field(300.0, gt=0, description="Per request (spec §1.5: 300 s).")
    max_retries: int = Field(2, ge=0, le=10, description="Transport retries after the first attempt.")
    backoff_s: float = Field(2.0, ge=0, description="First back-off; doubles per retry.")
    backoff_max_s: float = Field(30.0, ge=0)
    parse_retries: int = Field(2, ge=0, le=10, description="Re-ask when the verdict does not parse.")
    concurrency: int = Field(64, ge=1, description="Requests in flight per engine.")
    batch_size: int = Field(8, ge=1, description="Prompts per forward pass (transformers).")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    sglang: SGLangConfig = Field(default_factory=SGLangConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)

    @model_validator(mode="after")
    def _defaults(self) -> JudgeConfig:
        if self.backend == "openai" and not self.url:
            raise ValueError("judge backend 'openai' needs url (the endpoint's base URL)")
        if self.model is None and self.backend in ("sglang", "transformers"):
            self.model = DEFAULT_SGLANG_MODEL if self.backend == "sglang" else DEFAULT_LOCAL_MODEL
        if "sampling" not in self.model_fields_set and self.backend in PLAIN_SAMPLING:
            # Qwen3 thinking settings only suit SGLang's Qwen3 judge; hosted APIs reject top_k and
            # chat_template_kwargs, and a small CPU model needs a short greedy reply
            self.sampling = PLAIN_SAMPLING[self.backend].model_copy()
        return self

    @property
    def launches_sglang(self) -> bool:
        return self.backend == "sglang" and not self.url

    def replica_gpus(self) -> float:
        if self.serve.num_gpus is not None:
            return self.serve.num_gpus
        return float(self.sglang.gpus) if self.launches_sglang else 0.0

    @classmethod
    def from_spec(cls, spec, job: str = "local") -> JudgeConfig:
        """From a services.jobspec.JudgeSpec (duck-typed so this module does not import services)."""
        return cls(
            backend=spec.backend,
            model=spec.model,
            url=spec.url,
            api_key_env=spec.api_key_env,
            job=job,
            timeout_s=spec.timeout_s,
            max_retries=spec.max_retries,
            serve=ServeConfig(replicas=spec.replicas, num_gpus=spec.gpus_per_replica or None),
        )

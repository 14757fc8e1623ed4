"""JobSpec: everything a user says about one training job.

Submitted as JSON or YAML over REST (gateway/) or from the CLI. Every field is typed and unknown fields are
rejected, so a typo ("windw_tokens") is an error with the field path instead of a silently ignored setting.
Defaults are the embedded laptop defaults: CPU, tiny model, rules judge.

Invariant: every number is finite and bounded (generous sanity bounds here; the operator's tighter
per-tenant quotas are checked by the gateway at submission), every string and list has a maximum length,
and `from_text` parses within `services.limits.DocLimits` (depth, size, no YAML aliases) before pydantic
sees the document.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from services.limits import DocLimits, DocumentError, check_tree, load_document, unpaired_surrogates

Algorithm = Literal[
    "tppo",
    "ppo",
    "grpo",
    "rloo",  # RL on verifier / judge rewards
    "inpo",
    "comal",
    "nash_mp",
    "sppo",
    "ipo",
    "dpo",  # preference games (sample-based losses)
    "gpo",
    "self_redteam",  # two-role adversarial self-play
]
PREFERENCE_ALGORITHMS = frozenset({"inpo", "comal", "nash_mp", "sppo", "ipo", "dpo"})
GROUP_ALGORITHMS = frozenset({"grpo", "rloo"})
TWO_ROLE_ALGORITHMS = frozenset({"gpo", "self_redteam"})

# the names of games/registry.py (a test keeps the two lists equal)
Environment = Literal[
    "sokoban",
    "sokoban-large",
    "tetris",
    "tetris-2-3",
    "tetris-2-4",
    "blocksworld",
    "blocksworld-1d",
    "blocksworld-2d",
    "math",
    "gtalign",
    "gtalign-strategy",
    "redteam",
    "tictactoe",
    "kuhn",
    "preference",
]

# "none" plus the modes of games/normalize.py (a test keeps the lists equal, and equal to judge_api's)
RewardNormalization = Literal[
    "none", "zscore", "minmax", "robustz", "cdf", "quantile", "james", "decentralize", "selfadapt"
]


MAX_SEED = 2**31 - 1  # seeds are mixed with episode counters (seed * 1_000_003 + n) and must stay in int64
MAX_TOKENS = 1 << 20  # any one token length (context, prompt, response, window)
MAX_COUNT = 10_000_000  # steps and step intervals
MIN_CPUS = 0.05  # a Ray actor with less than this is not a real reservation


def _plain_text(value: str) -> str:
    if any(ord(c) < 32 for c in value):
        raise ValueError("must not contain control characters (NUL, newline, ...)")
    return value


PathText = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_plain_text)]
"""A file, directory, hub id or built-in name: one line of at most 4096 characters."""
UrlText = Annotated[str, Field(min_length=1, max_length=2048), AfterValidator(_plain_text)]


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=False, validate_assignment=True, allow_inf_nan=False, str_max_length=8192
    )


class ModelSpec(_Strict):
    path: PathText = Field(
        "tiny-qwen3",
        description="Local directory, a hub id, or a built-in test model "
        "name ('tiny-qwen3', 'smollm2-135m').",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    max_model_len: int = Field(2048, ge=64, le=MAX_TOKENS)


class TaskSpec(_Strict):
    env: Environment
    weight: float = Field(1.0, gt=0, le=1e6, description="Share of episodes drawn from this task.")
    data_path: PathText | None = Field(
        None, description="Parquet/JSON file or directory for data-driven tasks."
    )
    max_turns: int = Field(1, ge=1, le=256)
    options: dict[str, Any] = Field(
        default_factory=dict, max_length=64, description="Environment-specific settings."
    )

    @field_validator("options")
    @classmethod
    def _bounded_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_tree(value, DocLimits(max_depth=8, max_nodes=1000))
        return value


class JudgeSpec(_Strict):
    backend: Literal["rules", "transformers", "sglang", "openai"] = "rules"
    model: PathText | None = Field(None, description="Judge model (default Qwen/Qwen3-32B for sglang).")
    url: UrlText | None = Field(None, description="Base URL of an OpenAI-compatible endpoint.")
    api_key_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$",
        description="Name of the env var that holds the endpoint key (the operator lists the allowed ones).",
    )
    welfare: Literal["cobb_douglas", "linear", "nash_product", "user", "llm"] = "cobb_douglas"
    timeout_s: float = Field(60.0, gt=0, le=3600)
    max_retries: int = Field(3, ge=0, le=10)
    replicas: int = Field(1, ge=1, le=1024)
    gpus_per_replica: float = Field(0.0, ge=0, le=64)

    @model_validator(mode="after")
    def _endpoint(self) -> JudgeSpec:
        if self.backend == "openai" and not self.url:
            raise ValueError("judge.backend 'openai' needs judge.url (the endpoint's base URL)")
        if self.backend in ("transformers", "sglang") and not self.model:
            self.model = "Qwen/Qwen3-32B" if self.backend == "sglang" else "tiny-qwen3"
        return self


class LengthProfile(_Strict):
    """Benchmarking: every sequence ignores EOS and ends at a length drawn from a log-normal distribution
    (clipped to [1, max_response_tokens]) — long-tailed reasoning lengths with any model, the way serving
    benchmarks fix output lengths. The draw depends only on (episode seed, group member), so two runs of
    one job (async and sync) see the same lengths."""

    median_tokens: float = Field(32.0, gt=0, le=MAX_TOKENS)
    sigma: float = Field(
        1.0, ge=0, le=10, description="Log-normal shape: 1.0 gives a p99/median ratio of ~10."
    )

    def draw(self, seed: int, member: int, cap: int) -> int:
        import math
        import random

        x = random.Random(seed * 7919 + member).lognormvariate(math.log(self.median_tokens), self.sigma)
        return max(1, min(cap, int(round(x))))


class RolloutSpec(_Strict):
    engine: Literal["transformers", "vllm"] = "transformers"
    replicas: int = Field(1, ge=1, le=1024)
    gpus_per_replica: float = Field(0.0, ge=0, le=64)
    cpus_per_replica: float = Field(0.5, ge=MIN_CPUS, le=1024)
    group_size: int = Field(
        4, ge=1, le=1024, description="Samples per prompt / agents sharing a seed (GRPO, GRL)."
    )
    groups_per_step: int = Field(2, ge=1, le=65536)
    temperature: float = Field(1.0, ge=0, le=100)
    top_p: float = Field(1.0, gt=0, le=1)
    max_prompt_tokens: int = Field(1024, ge=16, le=MAX_TOKENS)
    max_response_tokens: int = Field(
        256, ge=1, le=MAX_TOKENS, description="L_max: a response is finished for good here."
    )
    response_lengths: LengthProfile | None = Field(
        None, description="Benchmarks: impose long-tailed lengths."
    )


class LearnerSpec(_Strict):
    workers: int = Field(1, ge=1, le=1024)
    gpus_per_worker: float = Field(0.0, ge=0, le=64)
    cpus_per_worker: float = Field(1.0, ge=MIN_CPUS, le=1024)
    strategy: Literal["ddp", "fsdp", "deepspeed"] = "ddp"
    batch_size: int = Field(8, ge=1, le=1 << 20, description="Trajectories per optimizer step.")
    mini_batch_size: int = Field(8, ge=1, le=1 << 20)
    batch_tokens: int = Field(
        0,
        ge=0,
        le=1 << 30,
        description="Token budget of a step (PPO / T-PPO): after batch_size trajectories, a step also takes "
        "those already waiting, until their tokens (a sequence's T-PPO windows merged into one row) reach "
        "this; at most 8 × batch_size. 0: exactly batch_size.",
    )
    steps: int = Field(100, ge=1, le=MAX_COUNT)
    learning_rate: float = Field(1e-5, gt=0, le=10)
    critic_learning_rate: float = Field(1e-5, gt=0, le=10)
    push_weights_every: int = Field(
        1, ge=1, le=MAX_COUNT, description="Broadcast weights every K optimizer steps."
    )
    train_layers: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="Train only the top N transformer blocks and the "
        "final norm of policy and critic (the rest frozen; only trained weights "
        "are pushed). None trains everything.",
    )
    critic_layers: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="PPO / T-PPO: build the value model from the "
        "policy's first N blocks (a smaller critic). None: the whole model.",
    )
    checkpoint_every: int = Field(50, ge=1, le=MAX_COUNT)
    reward_normalization: RewardNormalization = Field(
        "none",
        description="Normalise the sequence rewards of each optimizer step's batch per data_source (else "
        "env), before advantages (GTAlign's full_zscore recipe: 'zscore'; formulas in games/normalize.py). "
        "Only finished sequences, each once; unfinished T-PPO windows carry no reward and stay as they "
        "are. The raw reward stays reward_mean; the normalised one is reward_norm_mean / reward_norm_std.",
    )
    stall_timeout_s: float = Field(
        300.0,
        ge=5,
        le=7 * 86400,
        description="Fail the job when no trainable trajectory (all stale, dead-lettered or none) reaches "
        "the learner for this long; a warning event at half of it.",
    )

    @model_validator(mode="after")
    def _batches(self) -> LearnerSpec:
        if self.mini_batch_size > self.batch_size:
            raise ValueError(
                f"learner.mini_batch_size ({self.mini_batch_size}) is larger than "
                f"learner.batch_size ({self.batch_size})"
            )
        return self


class AsyncSpec(_Strict):
    """How far generation may run ahead of training (T-PPO windows, staleness bound)."""

    mode: Literal["async", "sync"] = "async"
    window_tokens: int = Field(
        64, ge=1, le=MAX_TOKENS, description="T-PPO window l: tokens generated per sequence per step."
    )
    max_staleness: int = Field(
        4,
        ge=0,
        le=1_000_000,
        description="Drop trajectories whose oldest token lags the learner "
        "by more than this many policy versions.",
    )
    stale_policy: Literal["drop", "count"] = "drop"
    kv_cache_on_update: Literal["recompute", "keep"] = Field(
        "recompute",
        description="What a rollout engine does with a sequence's KV cache (kept between T-PPO windows) "
        "after a weight update: 'recompute' drops it and re-prefills under the new weights; 'keep' "
        "continues on the stale KV (PipelineRL in-flight updates; the recorded logprobs are those "
        "actually sampled from, so importance correction stays exact).",
    )


class Hyper(_Strict):
    """Algorithm hyper-parameters; defaults follow spec §2.4 / §6.3 (clip-higher, γ=λ=1)."""

    clip_ratio_low: float = Field(0.2, ge=0, le=100)
    clip_ratio_high: float = Field(0.28, ge=0, le=100)
    gamma: float = Field(1.0, ge=0, le=1)
    lam: float = Field(1.0, ge=0, le=1)
    critic_lam: float = Field(1.0, ge=0, le=1)
    kl_coef: float = Field(0.0, ge=0, le=1e6)
    entropy_coef: float = Field(0.0, ge=0, le=1e6)
    beta: float = Field(0.1, gt=0, le=1e6, description="Regularisation of preference-game objectives.")
    eta: float = Field(0.1, gt=0, le=1e6, description="Step size of mirror-descent style updates.")
    ppo_epochs: int = Field(1, ge=1, le=1000)
    tis_cap: float = Field(
        2.0, gt=0, le=1e6, description="Truncated importance-sampling cap for stale tokens."
    )
    group_filter_ratio: float = Field(1.0, gt=0, le=1, description="GRL: keep top groups by reward std.")


class JobSpec(_Strict):
    name: str = Field("job", min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    model: ModelSpec = Field(default_factory=ModelSpec)
    algorithm: Algorithm = "tppo"
    tasks: list[TaskSpec] = Field(default_factory=lambda: [TaskSpec(env="math")], min_length=1, max_length=64)
    judge: JudgeSpec = Field(default_factory=JudgeSpec)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    learner: LearnerSpec = Field(default_factory=LearnerSpec)
    asynchrony: AsyncSpec = Field(default_factory=AsyncSpec)
    hyper: Hyper = Field(default_factory=Hyper)
    seed: int = Field(0, ge=0, le=MAX_SEED)

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        r, a = self.rollout, self.asynchrony
        if a.window_tokens > r.max_response_tokens:
            raise ValueError(
                f"asynchrony.window_tokens ({a.window_tokens}) is larger than "
                f"rollout.max_response_tokens ({r.max_response_tokens})"
            )
        if r.max_prompt_tokens + r.max_response_tokens > self.model.max_model_len:
            raise ValueError(
                f"rollout.max_prompt_tokens + rollout.max_response_tokens "
                f"({r.max_prompt_tokens + r.max_response_tokens}) exceeds "
                f"model.max_model_len ({self.model.max_model_len})"
            )
        if self.algorithm in GROUP_ALGORITHMS | PREFERENCE_ALGORITHMS and r.group_size < 2:
            raise ValueError(
                f"algorithm '{self.algorithm}' compares samples of one prompt: "
                f"rollout.group_size must be at least 2"
            )
        if self.algorithm in TWO_ROLE_ALGORITHMS and not any(t.env == "redteam" for t in self.tasks):
            raise ValueError(f"algorithm '{self.algorithm}' needs a two-role task (env 'redteam')")
        return self

    @classmethod
    def from_text(cls, text: str, limits: DocLimits | None = None) -> JobSpec:
        """Parse JSON or YAML within `limits`; raises JobSpecError with field paths (`too_large` for a
        document over the size limit)."""
        try:
            data = load_document(text, limits)
        except DocumentError as e:
            raise JobSpecError([{"loc": e.loc, "msg": e.msg}], too_large=e.too_large) from None
        if not isinstance(data, dict):
            raise JobSpecError([{"loc": "", "msg": "a job spec must be a mapping of fields"}])
        if bad := unpaired_surrogates(data):
            msg = "contains an unpaired surrogate escape (not valid Unicode)"
            raise JobSpecError([{"loc": loc, "msg": msg} for loc in bad])
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise JobSpecError.from_validation(e) from None


class JobSpecError(ValueError):
    """A job spec that cannot run; `errors` holds [{'loc': 'rollout.window_tokens', 'msg': ...}]."""

    def __init__(self, errors: list[dict[str, str]], too_large: bool = False):
        self.errors, self.too_large = errors, too_large
        super().__init__("; ".join(f"{e['loc'] or '<spec>'}: {e['msg']}" for e in errors))

    @classmethod
    def from_validation(cls, err: ValidationError) -> JobSpecError:
        out = []
        for e in err.errors():
            loc = ".".join(str(p) for p in e["loc"])
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                msg = "unknown field (check the spelling; see the JobSpec reference)"
            out.append({"loc": loc, "msg": msg})
        return cls(out)

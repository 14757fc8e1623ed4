"""Contract of the judge's Ray Serve endpoint: request/response models and a small handle client.

rollout/ (or anything else) calls the judge through these models without importing judge internals:

    client = JudgeClient()                                   # the Serve app named "judge"
    out = client.score(ScoreRequest(items=[GTAlignItem(data_source="math-hard", output=text,
                                                       ground_truth="2")]))
    out.results[0].score

The same routes are served over HTTP under the app's route prefix (POST /score, /verdicts, /preference,
/safety, /gpo; GET /health, /metrics). Every result carries an `error` instead of raising: a failed
judgement scores 0 (see judge/README.md).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

APP_NAME = "judge"
Rubric = Literal["accuracy", "helpfulness", "harmfulness", "ambiguity", "pareto", "safety", "preference"]
NormalizeMode = Literal[
    "zscore", "minmax", "robustz", "cdf", "quantile", "james", "decentralize", "selfadapt"
]


class _Contract(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- GTAlign welfare rewards ------------------------------------------------------------------
class GTAlignItem(_Contract):
    data_source: str = Field(
        description="math-hard, medium, wildguard, ambig_qa, abg-coqa, advbench, minerva"
    )
    output: str = Field(description="The policy's full text (four blocks).")
    ground_truth: str = ""
    question: str = Field("", description="The user's question as the judge should see it.")
    variant: Literal["main", "ablation"] = "main"
    judge: float | None = Field(None, description="A fixed verdict instead of a judge call.")
    pareto: float | None = Field(None, description="A fixed Pareto-consistency verdict (ablation).")
    intent: str = Field("", description="medium: the user's hidden intent shown to the judge.")


class ScoreRequest(_Contract):
    items: list[GTAlignItem]
    welfare: Literal["cobb_douglas", "linear", "nash_product", "user_only", "llm_only", "user", "llm"] = (
        "cobb_douglas"
    )
    normalize: NormalizeMode | None = Field(None, description="Batch normalisation per data_source.")


class ScoreResult(_Contract):
    data_source: str
    score: float
    user: float
    llm: float
    format: int
    payoff_reward: float
    answer_reward: float
    judge: float | None
    pareto_score: float
    utility: float
    reward_gap: float
    format_reward: float
    scored: bool
    error: str | None
    ppo_score: float | None


class ScoreResponse(_Contract):
    results: list[ScoreResult]
    backend: str
    elapsed_s: float


# ---- raw verdicts -------------------------------------------------------------------------------
class VerdictItem(_Contract):
    rubric: Rubric
    question: str = ""
    response: str = ""
    ground_truth: str = ""
    context: str = ""
    other: str = ""


class VerdictRequest(_Contract):
    items: list[VerdictItem]


class VerdictResult(_Contract):
    value: float | None
    error: str | None
    text: str
    labels: dict[str, bool] = Field(default_factory=dict)


class VerdictResponse(_Contract):
    results: list[VerdictResult]


# ---- pairwise preference ------------------------------------------------------------------------
class PreferenceRequest(_Contract):
    question: str
    responses: list[str] = Field(min_length=2)
    ground_truth: str = Field("", description="Reference answer (the rules judge needs it).")
    soft: bool = True


class PreferenceResponse(_Contract):
    matrix: list[list[float]] = Field(description="matrix[i][j] = P(response i beats response j)")
    scores: list[float] = Field(description="Mean win rate of each response against the others.")
    n_soft: int
    n_hard: int
    n_failed: int


# ---- red-team safety and GPO ---------------------------------------------------------------------
class SafetyRequest(_Contract):
    prompts: list[str]
    responses: list[str]
    prompt_tags: list[str] | None = Field(None, description="'harmful'/'unharmful' (rules judge only).")


class SafetyLabelsModel(_Contract):
    prompt_harmful: bool
    response_refusal: bool
    response_harmful: bool


class SafetyResponse(_Contract):
    labels: list[SafetyLabelsModel | None] = Field(description="None: a tie, drop the episode.")


class GPORequest(_Contract):
    prompts: list[str] = Field(description="The adversary's generated prompts.")
    replies: list[str] = Field(description="The defender's replies to them.")
    history: list[str] = Field(
        default_factory=list,
        description="Earlier generated prompts (the caller "
        "owns the diversity buffer; the replica caches their embeddings).",
    )
    adversary_step: bool = True


class GPORewardModel(_Contract):
    p_safe: float
    p_unsafe: float
    self_bleu: float
    cosine: float
    defender: float
    adversary: float
    ok: bool


class GPOResponse(_Contract):
    rewards: list[GPORewardModel]


class HealthResponse(_Contract):
    backend: str
    model: str | None
    ready: bool


class JudgeClient:
    """Typed calls to the judge Serve app through a DeploymentHandle (no HTTP hop inside Ray)."""

    def __init__(self, app_name: str = APP_NAME, timeout_s: float = 600.0) -> None:
        from ray import serve

        self.handle = serve.get_app_handle(app_name)
        self.timeout_s = timeout_s

    def _call(self, method: str, request: BaseModel):
        return getattr(self.handle, method).remote(request).result(timeout_s=self.timeout_s)

    def score(self, request: ScoreRequest) -> ScoreResponse:
        return self._call("score", request)

    def verdicts(self, request: VerdictRequest) -> VerdictResponse:
        return self._call("verdicts", request)

    def preference(self, request: PreferenceRequest) -> PreferenceResponse:
        return self._call("preference", request)

    def safety(self, request: SafetyRequest) -> SafetyResponse:
        return self._call("safety", request)

    def gpo(self, request: GPORequest) -> GPOResponse:
        return self._call("gpo", request)

    def health(self) -> HealthResponse:
        return self.handle.health.remote().result(timeout_s=self.timeout_s)

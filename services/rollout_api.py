"""The rollout service's contract: typed requests, typed results and a client.

Everything that talks to rollout replicas (the orchestrator's schedules, the gateway's chat proxy, the
demo) uses these types and `RolloutClient`; nothing outside rollout/ imports rollout code. The replica
(rollout/serve.py) takes these requests and returns these results, over HTTP (FastAPI, the same JSON
schema) and over a Ray Serve DeploymentHandle (the objects themselves).

Invariants:
- a result's type says what it is (`EpisodeResult` for whole episodes, `WindowStepResult` for one T-PPO
  window); consumers read `counts()` and never tell results apart by which keys are present;
- every call through the client has a timeout; a replica that fails or does not answer raises
  `RolloutCallError` naming the app and the call;
- this module imports neither torch nor Ray at import time (the gateway stays light).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.jobspec import LengthProfile
from services.schemas import Episode


class SamplingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_tokens: int = Field(64, ge=1)
    temperature: float = Field(1.0, ge=0, description="0 = greedy")
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = None
    stop_token_ids: list[int] = Field(default_factory=list, description="In addition to the EOS token.")
    ignore_eos: bool = Field(
        False, description="Generate exactly max_tokens (benchmarks with fixed lengths)."
    )


# ---------------------------------------------------------------- OpenAI-compatible chat (subset)
MAX_MESSAGE_CHARS = 262_144  # one message; the replica also checks the prompt against the model's context
MAX_SEED = 2**62


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "tool"]
    content: str = Field(max_length=MAX_MESSAGE_CHARS)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The subset of OpenAI's chat request payoff implements. Any other field is kept aside
    (`model_extra`) so the gateway can refuse it by name with a 400 instead of ignoring it."""

    model_config = ConfigDict(extra="allow")
    model: str | None = Field(None, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(None, ge=1, le=32768)
    max_completion_tokens: int | None = Field(None, ge=1, le=32768)
    temperature: float = Field(1.0, ge=0, le=2, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    stop: str | list[str] | None = Field(
        None, description="Up to 4 strings; the reply ends before the first."
    )
    logprobs: bool = False
    n: int = Field(1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256, description="The end user's id (accepted, not stored).")

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 4 or any(not x or len(x) > 256 for x in stops):
            raise ValueError("stop takes at most 4 non-empty strings of at most 256 characters")
        return stops or None

    def unsupported(self) -> list[str]:
        """Fields an OpenAI client may send that this endpoint does not implement."""
        return sorted(self.model_extra or {})

    def stops(self) -> list[str]:
        return list(self.stop or [])


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """The text before the first stop string, and whether one was found (OpenAI's `stop`)."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class TokenLogprob(BaseModel):
    token: str
    logprob: float


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob]


class ChatChoice(BaseModel):
    index: int
    finish_reason: str
    message: ChatMessage
    logprobs: ChoiceLogprobs | None = None


class ChatUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: ChatUsage
    policy_versions: list[list[int]] = Field(description="Policy versions that wrote each choice's tokens.")

    def chunks(self, include_usage: bool = False) -> list[dict]:
        """The completion as OpenAI `chat.completion.chunk` objects (role, content, finish reason per choice;
        then usage if asked for), for `stream: true`."""
        base = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
        }
        out = []
        for c in self.choices:
            i = c.index
            out.append(
                base | {"choices": [{"index": i, "delta": {"role": "assistant"}, "finish_reason": None}]}
            )
            if c.message.content:
                delta = {"content": c.message.content}
                out.append(base | {"choices": [{"index": i, "delta": delta, "finish_reason": None}]})
            out.append(base | {"choices": [{"index": i, "delta": {}, "finish_reason": c.finish_reason}]})
        if include_usage:
            out.append(base | {"choices": [], "usage": self.usage.model_dump()})
        return out

    def to_openai(self) -> dict:
        """The JSON an OpenAI client expects (no `logprobs` key unless they were asked for)."""
        out = self.model_dump()
        for choice in out["choices"]:
            if choice["logprobs"] is None:
                del choice["logprobs"]
        return out


# ---------------------------------------------------------------- training rollouts
class EpisodeRequest(BaseModel):
    """A group of whole episodes (`POST /v1/episodes`): `group_size` episodes sharing `seed`."""

    model_config = ConfigDict(extra="forbid")
    env: str
    data: str | None = Field(None, description="Data file or set name for data-driven games.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Game options (JobSpec tasks[].options)."
    )
    seed: int = 0
    group_size: int = Field(1, ge=1, le=64)
    max_turns: int = Field(4, ge=1, le=64)
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    enqueue: bool = Field(False, description="Also write the trajectories to the job's Redis stream.")
    lengths: LengthProfile | None = Field(None, description="Benchmarks: imposed long-tailed lengths.")


class WindowStepRequest(BaseModel):
    """One T-PPO step of the replica's windowed rollout for a task (`POST /v1/tppo/step`)."""

    model_config = ConfigDict(extra="forbid")
    env: str
    data: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    batch_size: int = Field(8, ge=1, le=4096, description="Sequences kept active (successive batching).")
    group_size: int = Field(1, ge=1, le=64)
    window: int = Field(64, ge=1, description="T-PPO window l: new tokens per sequence per step.")
    max_response_tokens: int = Field(256, ge=1, description="L_max.")
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    first_seed: int = Field(0, ge=0, description="Episode seeds of this replica start here.")
    enqueue: bool = True
    lengths: LengthProfile | None = Field(None, description="Benchmarks: imposed long-tailed lengths.")


@dataclass(frozen=True)
class RolloutCounts:
    """What one rollout call produced, the same way for every kind of call."""

    trajectories: int
    finished: int
    tokens: int
    rewards: list[float]


class TrajectorySummary(BaseModel):
    id: str
    role: str
    tokens: int = Field(ge=0, description="Tokens of the record (prompt and response).")
    generated: int = Field(ge=0, description="Tokens the policy generated.")
    reward: float
    versions: list[int] = Field(description="Policy versions that generated its tokens.")


class EpisodeResult(BaseModel):
    kind: Literal["episodes"] = "episodes"
    episodes: list[Episode]
    trajectories: list[TrajectorySummary]
    enqueued: list[str] = Field(default_factory=list, description="Stream ids of the enqueued trajectories.")
    busy_s: float = Field(ge=0, description="Engine time of this call.")
    account: dict[str, float] = Field(
        default_factory=dict,
        description="This call's seconds by phase on the replica: sync_wait (for the learner's weights), "
        "queued (behind the replica's previous window step), generate, score, segments or episodes, put.",
    )
    replica: str

    def counts(self) -> RolloutCounts:
        t = self.trajectories
        return RolloutCounts(len(t), len(t), sum(x.generated for x in t), [x.reward for x in t])


class WindowStepResult(BaseModel):
    kind: Literal["window_step"] = "window_step"
    segments: int = Field(ge=0, description="Segments (one per active sequence) this window produced.")
    finished: int = Field(ge=0, description="Sequences that finished in this window.")
    tokens: int = Field(ge=0, description="Tokens generated in this window.")
    rewards: list[float] = Field(description="Rewards of the sequences that finished.")
    enqueued: int = Field(ge=0)
    busy_s: float = Field(ge=0)
    account: dict[str, float] = Field(
        default_factory=dict,
        description="This call's seconds by phase on the replica: sync_wait (for the learner's weights), "
        "queued (behind the replica's previous window step), generate, score, segments or episodes, put.",
    )
    replica: str
    version: int = Field(description="The replica's policy version at the end of the window.")

    def counts(self) -> RolloutCounts:
        return RolloutCounts(self.segments, self.finished, self.tokens, list(self.rewards))


RolloutResult = EpisodeResult | WindowStepResult


# ---------------------------------------------------------------- client
class RolloutCallError(RuntimeError):
    """A rollout call failed or timed out; `status` is the replica's HTTP status where it gave one."""

    def __init__(self, message: str, status: int | None = None, detail: str | None = None):
        super().__init__(message)
        self.status, self.detail = status, detail if detail is not None else message


def _unwrap(app: str, what: str, e: Exception) -> RolloutCallError:
    cause = getattr(e, "cause", None) or e
    status = getattr(cause, "status_code", None)
    detail = getattr(cause, "detail", None) or str(cause)
    return RolloutCallError(
        f"{what} on {app!r} failed: {type(cause).__name__}: {str(detail)[:500]}",
        status if isinstance(status, int) else None,
        str(detail),
    )


class RolloutCall:
    """One request in flight; `result()` waits for its typed result (bounded by `timeout_s`)."""

    def __init__(self, app: str, what: str, response, kind: type[BaseModel]):
        self.app, self.what, self._response, self._kind = app, what, response, kind

    def result(self, timeout_s: float) -> RolloutResult:
        try:
            out = self._response.result(timeout_s=timeout_s)
        except Exception as e:
            raise _unwrap(self.app, self.what, e) from None
        return out if isinstance(out, self._kind) else self._kind.model_validate(out)


class RolloutClient:
    """Calls one rollout Serve app through a DeploymentHandle, found by app name on first use."""

    def __init__(self, app_name: str, handle=None):
        self.app, self._handle = app_name, handle

    @property
    def handle(self):
        if self._handle is None:
            from ray import serve

            self._handle = serve.get_app_handle(self.app)
        return self._handle

    def ready(self) -> bool:
        """True once the app exists (the runner deploys it concurrently with the orchestrator)."""
        try:
            return self.handle is not None
        except Exception:
            return False

    def episodes(self, req: EpisodeRequest) -> RolloutCall:
        return RolloutCall(self.app, "episodes", self.handle.episodes.remote(req), EpisodeResult)

    def tppo_step(self, req: WindowStepRequest) -> RolloutCall:
        return RolloutCall(self.app, "tppo_step", self.handle.tppo_step.remote(req), WindowStepResult)

    async def chat(self, req: ChatRequest, timeout_s: float = 600.0) -> ChatCompletion:
        import asyncio

        try:
            out = await asyncio.wait_for(self.handle.chat_completions.remote(req), timeout_s)
        except TimeoutError:
            raise RolloutCallError(
                f"chat on {self.app!r} gave no answer within {timeout_s:g} s", 504
            ) from None
        except Exception as e:
            raise _unwrap(self.app, "chat", e) from None
        return out if isinstance(out, ChatCompletion) else ChatCompletion.model_validate(out)

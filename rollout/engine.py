"""The rollout engine interface: every backend (transformers, vLLM) generates, reports logprobs and
versions per token, and takes new weights.

Logprobs are the model's raw log-probabilities of the sampled token (before temperature/top-p), the
same convention as vLLM's default, so the learner's importance ratios compare like with like.
Weight updates have two modes (ANCHORS §5.1 pause modes):
- "wait": the update waits until in-flight generation finishes; those requests end on the old version.
- "keep": the update is applied between two decode steps; in-flight requests continue on the new
  weights, and every token records the version that produced it.
Prefix reuse: a request may name its sequence (`cache_key`) so an engine can continue from the KV of that
sequence's previous request (T-PPO windows resend prompt + every token so far); the caller `release`s a
finished sequence's key. Reuse never changes what is sampled beyond float rounding; what KV computed
under older weights is worth after an update is `KVOnUpdate` ("recompute": nothing, "keep": kept, with
the recorded logprobs those of the distribution actually sampled from).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from services.models import chat_prompt_ids
from services.rollout_api import SamplingParams  # the contract's type; re-exported for engine users

UpdateMode = Literal["wait", "keep"]
EngineFinish = Literal["stop", "length", "abort"]
KVOnUpdate = Literal["recompute", "keep"]


class GenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt_ids: list[int] = Field(min_length=1)
    params: SamplingParams = Field(default_factory=SamplingParams)
    cache_key: str | None = Field(
        None,
        max_length=200,
        description="The sequence this request continues (its episode id): the engine may keep its KV "
        "cache for the next request of the same key, until `release`.",
    )


class GenOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token_ids: list[int]
    logprobs: list[float]
    versions: list[int]
    finish_reason: EngineFinish


class EngineError(RuntimeError):
    pass


class Engine(abc.ABC):
    """One model replica's generator. Thread-safe: generate and load_weights may be called concurrently.

    Backends set `_version`, `_tok` (HF tokenizer) and `_manifest` (name -> (shape, dtype)) in __init__.
    """

    name: str = "engine"
    _version: int = 0
    _tok = None
    _manifest: dict[str, tuple[tuple[int, ...], str]] = {}
    _max_context: int = 2048

    @property
    def max_context(self) -> int:
        """Tokens a sequence may hold (prompt + generated): longer requests are refused, never attempted."""
        return self._max_context

    @property
    def version(self) -> int:
        """Policy version of the weights new tokens are generated with."""
        return self._version

    @property
    def tokenizer(self):
        """The HF tokenizer (chat template, EOS id)."""
        return self._tok

    def weight_manifest(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """name -> (shape, dtype) of every weight the engine accepts (checked before an update)."""
        return dict(self._manifest)

    @abc.abstractmethod
    def generate(self, requests: list[GenRequest]) -> list[GenOutput]:
        """Generate for a batch; blocking. Output i answers request i."""

    @abc.abstractmethod
    def load_weights(
        self, named: Iterable[tuple[str, torch.Tensor]], version: int, mode: UpdateMode = "keep"
    ) -> None:
        """Replace (a subset of) the weights by name and switch to `version`; atomic for the caller."""

    def release(self, keys: Iterable[str]) -> None:
        """Forget the cached state of these sequences (finished); engines without per-key state ignore it."""

    def chat_prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of a chat conversation with the generation prompt appended."""
        return chat_prompt_ids(self.tokenizer, messages)

    def close(self) -> None:
        """Release the engine's resources (processes, shared memory)."""


def check_update(
    manifest: dict[str, tuple[tuple[int, ...], str]], named: list[tuple[str, torch.Tensor]]
) -> None:
    """Refuse an update whose names, shapes or dtypes do not match the engine (before touching weights)."""
    problems = []
    for name, t in named:
        if name not in manifest:
            problems.append(f"unknown weight {name!r}")
            continue
        shape, dtype = manifest[name]
        if tuple(t.shape) != tuple(shape):
            problems.append(f"{name}: shape {tuple(t.shape)} != {tuple(shape)}")
        elif dtype != "any" and str(t.dtype).removeprefix("torch.") != dtype:
            problems.append(f"{name}: dtype {t.dtype} != {dtype}")
    if problems:
        shown = "; ".join(problems[:5]) + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else "")
        raise EngineError(f"weight update rejected: {shown}")


def make_engine(kind: str, model: str, **kwargs) -> Engine:
    """Build an engine by name ('transformers' or 'vllm'); vLLM is imported only when asked for."""
    if kind == "transformers":
        from rollout.hf_engine import HFEngine

        return HFEngine(model, **kwargs)
    if kind == "vllm":
        from rollout.vllm_engine import VLLMEngine

        return VLLMEngine(model, **kwargs)
    raise ValueError(f"unknown engine {kind!r}: choose 'transformers' or 'vllm'")

"""The judge engine interface, and the shared half of every model-backed engine.

    engine.judge(items)                         -> [Verdict]              every backend
    engine.label_probs(items, labels, prefix)   -> [{label: p} | None]    soft labels where a model gives them
    engine.complete(prompts)                    -> [Completion]           model-backed backends (LLMEngine)

`judge()` never raises and counts requests and failures in Prometheus; backends implement `_judge()`.
An LLMEngine renders each item with prompts.render, asks the model and parses the reply; a reply that
does not parse is asked again up to `parse_retries` times (transport retries live in the backend).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from judge import metrics
from judge.config import JudgeConfig
from judge.parsers import parse_verdict
from judge.prompts import render
from judge.types import JudgeItem, Verdict


@dataclass(frozen=True)
class Completion:
    """A model reply: `text` is the visible part (reasoning stripped), `error` is set on failure."""

    text: str = ""
    reasoning: str = ""
    error: str | None = None


class JudgeEngine(ABC):
    backend: str = "base"

    def __init__(self, config: JudgeConfig) -> None:
        self.config = config

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        items = list(items)
        if not items:
            return []
        for item in items:
            metrics.REQUESTS.labels(self.config.job, self.backend, item.rubric).inc()
        try:
            verdicts = self._judge(items)
        except Exception as e:  # a broken engine fails the batch's verdicts, never the caller
            verdicts = [Verdict.fail("error", f"{type(e).__name__}: {e}") for _ in items]
        for v in verdicts:
            if not v.ok:
                metrics.count_failure(self.config.job, self.backend, v.error)
        return verdicts

    @abstractmethod
    def _judge(self, items: list[JudgeItem]) -> list[Verdict]: ...

    def label_probs(
        self, items: Sequence[JudgeItem] | Sequence[str], labels: Sequence[str], answer_prefix: str = ""
    ) -> list[dict[str, float] | None]:
        """Probabilities of `labels` as the judge's next answer token after `answer_prefix`, renormalised
        over the labels found. None where this engine cannot tell (the caller falls back to hard labels).
        `items` may also be ready prompt strings."""
        return [None] * len(items)

    def close(self) -> None:
        """Release the engine (stop a managed server, close HTTP connections)."""

    def __enter__(self) -> JudgeEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def normalise_logprobs(logprobs: dict[str, float] | None) -> dict[str, float] | None:
    """Softmax over the label logprobs that are present; a single present label gets probability 1."""
    if not logprobs:
        return None
    top = max(logprobs.values())
    weights = {k: math.exp(v - top) for k, v in logprobs.items()}
    total = sum(weights.values())
    return {k: w / total for k, w in weights.items()}


class LLMEngine(JudgeEngine):
    """A judge backed by a language model: prompt -> reply -> parsed verdict."""

    @abstractmethod
    def complete(self, prompts: Sequence[str]) -> list[Completion]:
        """One reply per prompt (single user message); never raises, failures carry `error`."""

    def label_logprobs(
        self, prompts: Sequence[str], labels: Sequence[str], answer_prefix: str = ""
    ) -> list[dict[str, float] | None]:
        """Log-probabilities of the label tokens right after `answer_prefix`; None when unavailable."""
        return [None] * len(prompts)

    def _judge(self, items: list[JudgeItem]) -> list[Verdict]:
        prompts = [render(item) for item in items]
        verdicts: list[Verdict] = [Verdict.fail("error", "not asked")] * len(items)
        pending = list(range(len(items)))
        for attempt in range(self.config.parse_retries + 1):
            if attempt:
                metrics.RETRIES.labels(self.config.job, self.backend).inc(len(pending))
            replies = self.complete([prompts[i] for i in pending])
            retry = []
            for i, reply in zip(pending, replies):
                if reply.error is not None:  # transport failures were already retried by the backend
                    verdicts[i] = Verdict(error=reply.error, text=reply.text)
                    continue
                verdicts[i] = parse_verdict(items[i].rubric, reply.text)
                if verdicts[i].error and verdicts[i].error.startswith("parse"):
                    retry.append(i)
            pending = retry
            if not pending:
                break
        return verdicts

    def label_probs(
        self, items: Sequence[JudgeItem] | Sequence[str], labels: Sequence[str], answer_prefix: str = ""
    ) -> list[dict[str, float] | None]:
        prompts = [it if isinstance(it, str) else render(it) for it in items]
        try:
            raw = self.label_logprobs(prompts, labels, answer_prefix)
        except Exception as e:
            metrics.count_failure(self.config.job, self.backend, f"logprobs: {type(e).__name__}")
            return [None] * len(prompts)
        return [normalise_logprobs(lp) for lp in raw]

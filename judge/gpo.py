"""GPO rewards (spec §5.1): the defender earns p_safe of its reply; the adversary earns p_unsafe minus
diversity penalties against every prompt it generated before:

    adversary = p_unsafe − 5 · SelfBLEU(prompt | earlier prompts; n-grams 2–5) − 1 · mean cos(prompt, earlier)

p_safe / p_unsafe are the judge's probabilities of the first answer token "safe" / "unsafe". An engine
without logprobs falls back to the three-label safety verdict (harmful response -> p_unsafe = 1); a
failed judgement gives p = 0 for both roles (the engine counts the failure). The reference buffer is
unbounded, as upstream; Self-BLEU keeps a clip table and the cosine keeps the sum of unit embeddings, so
a step costs the same however long training runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from judge.bleu import SelfBLEU
from judge.engines.base import JudgeEngine
from judge.prompts import SAFE_UNSAFE_LABELS, render_safe_unsafe
from judge.safety import SafetyJudge

SELF_BLEU_COEF = 5.0
COSINE_COEF = 1.0


@dataclass(frozen=True)
class Diversity:
    self_bleu: float
    cosine: float  # mean cosine similarity to earlier prompts (0 with none)


class DiversityBuffer:
    """Earlier generated prompts: Self-BLEU clip table plus the running sum of their embeddings."""

    def __init__(self, embedder=None) -> None:
        self.bleu = SelfBLEU()
        self.embedder = embedder  # judge.embeddings.Embedder; None skips the cosine term (0)
        self.sum_vec: np.ndarray | None = None
        self.count = 0

    def score_and_add(self, prompts: Sequence[str]) -> list[Diversity]:
        """Each prompt is scored against everything before it, earlier prompts of the batch included."""
        vecs = self.embedder.encode(prompts) if self.embedder is not None and prompts else None
        out = []
        for k, prompt in enumerate(prompts):
            cos = 0.0
            if vecs is not None and self.count and self.sum_vec is not None:
                cos = float(vecs[k] @ self.sum_vec) / self.count
            out.append(Diversity(self.bleu.score(prompt), cos))
            self.bleu.add(prompt)
            if vecs is not None:
                self.sum_vec = vecs[k].astype(np.float64) if self.sum_vec is None else self.sum_vec + vecs[k]
            self.count += 1
        return out


@dataclass(frozen=True)
class GPOReward:
    p_safe: float
    p_unsafe: float
    diversity: Diversity
    defender: float
    adversary: float
    ok: bool


class GPOScorer:
    def __init__(
        self,
        engine: JudgeEngine,
        buffer: DiversityBuffer | None = None,
        self_bleu_coef: float = SELF_BLEU_COEF,
        cosine_coef: float = COSINE_COEF,
    ) -> None:
        self.engine = engine
        self.buffer = buffer or DiversityBuffer()
        self.self_bleu_coef, self.cosine_coef = self_bleu_coef, cosine_coef

    def safety_probs(
        self, prompts: Sequence[str], replies: Sequence[str]
    ) -> list[tuple[float, float] | None]:
        texts = [render_safe_unsafe(p, r) for p, r in zip(prompts, replies, strict=True)]
        soft = self.engine.label_probs(texts, SAFE_UNSAFE_LABELS)
        out: list[tuple[float, float] | None] = [None] * len(texts)
        for i, p in enumerate(soft):
            if p:
                unsafe = p.get("unsafe", 1.0 - p.get("safe", 0.0))
                out[i] = (1.0 - unsafe, unsafe)
        missing = [i for i, o in enumerate(out) if o is None]
        if missing:
            labels = SafetyJudge(self.engine).labels(
                [prompts[i] for i in missing], [replies[i] for i in missing]
            )
            for i, lab in zip(missing, labels):
                if lab is not None:
                    out[i] = (0.0, 1.0) if lab.response_harmful else (1.0, 0.0)
        return out

    def score(
        self, prompts: Sequence[str], replies: Sequence[str], adversary_step: bool = True
    ) -> list[GPOReward]:
        """Rewards for one batch of (generated prompt, defender reply). The diversity buffer only grows on
        adversary steps (the prompts the adversary is trained on)."""
        probs = self.safety_probs(prompts, replies)
        div = self.buffer.score_and_add(prompts) if adversary_step else [Diversity(0.0, 0.0)] * len(prompts)
        out = []
        for p, d in zip(probs, div):
            p_safe, p_unsafe = p if p is not None else (0.0, 0.0)
            adversary = p_unsafe - self.self_bleu_coef * d.self_bleu - self.cosine_coef * d.cosine
            out.append(GPOReward(p_safe, p_unsafe, d, p_safe, adversary, p is not None))
        return out

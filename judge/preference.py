"""Pairwise preference judge for COMAL / INPO / SPPO / Nash-MP (spec §3.3, §4).

One comparison shows the instruction with Output (a) and Output (b). Its result is p_a, the probability
that (a) is better: soft, from the label tokens' logprobs after "Output (" where the engine gives them
(softmax over a/b; a lone label present counts 1/0); otherwise the hard label of the judge's reply (1/0);
a comparison that fails entirely counts 0.5/0.5 and is counted in the failure metric.

Position bias cancels by asking both orders: P(i ≻ j) = ½·(p_a(i, j) + 1 − p_a(j, i)), so the win-rate
matrix of a group satisfies P(i ≻ j) + P(j ≻ i) = 1 with ½ on the diagonal. A response's score is its
mean win rate against the others (COMAL: the mean over every pair it appears in, both positions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from judge.engines.base import JudgeEngine
from judge.prompts import ANSWER_PREFIX, PREFERENCE_LABELS
from judge.types import JudgeItem


@dataclass(frozen=True)
class Comparison:
    p_a: float  # probability that the response shown as (a) is better
    kind: str  # "soft" | "hard" | "failed"


@dataclass(frozen=True)
class WinRates:
    matrix: np.ndarray  # matrix[i, j] = P(response i ≻ response j)
    scores: np.ndarray  # mean win rate of each response against the others
    n_soft: int
    n_hard: int
    n_failed: int

    def ranking(self) -> list[int]:
        """Indices from best to worst (stable for ties)."""
        return sorted(range(len(self.scores)), key=lambda i: -self.scores[i])


class PreferenceJudge:
    def __init__(self, engine: JudgeEngine, soft: bool = True) -> None:
        self.engine, self.soft = engine, soft

    def compare(self, items: Sequence[JudgeItem]) -> list[Comparison]:
        """One comparison per preference item, in the order shown."""
        items = list(items)
        out: list[Comparison | None] = [None] * len(items)
        if self.soft:
            probs = self.engine.label_probs(items, PREFERENCE_LABELS, ANSWER_PREFIX["preference"])
            for i, p in enumerate(probs):
                if p:
                    out[i] = Comparison(p.get("a", 0.0) if "a" in p else 1.0 - p.get("b", 0.0), "soft")
        hard = [i for i, c in enumerate(out) if c is None]
        if hard:
            for i, v in zip(hard, self.engine.judge([items[i] for i in hard])):
                out[i] = (
                    Comparison(float(v.value), "hard")
                    if v.ok and v.value is not None
                    else Comparison(0.5, "failed")
                )
        return [c for c in out if c is not None]

    def win_rates(self, question: str, responses: Sequence[str], ground_truth: str = "") -> WinRates:
        """Win-rate matrix of a group of responses to one prompt: n(n−1) ordered comparisons, one batch."""
        n = len(responses)
        pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
        items = [
            JudgeItem(
                "preference",
                question=question,
                response=responses[i],
                other=responses[j],
                ground_truth=ground_truth,
            )
            for i, j in pairs
        ]
        comps = self.compare(items)
        p_a = {pair: c.p_a for pair, c in zip(pairs, comps)}
        m = np.full((n, n), 0.5)
        for i, j in pairs:
            m[i, j] = 0.5 * (p_a[(i, j)] + 1.0 - p_a[(j, i)])
        scores = (m.sum(axis=1) - 0.5) / max(n - 1, 1) if n > 1 else np.full(n, 0.5)
        kinds = [c.kind for c in comps]
        return WinRates(m, scores, kinds.count("soft"), kinds.count("hard"), kinds.count("failed"))

    def prob(self, question: str, first: str, second: str, ground_truth: str = "") -> float:
        """P(first ≻ second), both orders asked."""
        return float(self.win_rates(question, [first, second], ground_truth).matrix[0, 1])

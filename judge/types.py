"""What a judge is asked (JudgeItem) and what it answers (Verdict).

A rubric names the question: the GTAlign rubrics of spec §1.5 (accuracy, helpfulness, harmfulness,
ambiguity, pareto), the red-team safety classifier of §5.2 (safety) and the pairwise comparison of §3.3
(preference). Every engine, model-backed or rules-based, maps items to verdicts and never raises:
a failure is a Verdict with `error` set ("reason: detail"), which the reward pipelines score as 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

Rubric = Literal["accuracy", "helpfulness", "harmfulness", "ambiguity", "pareto", "safety", "preference"]
RUBRICS: tuple[str, ...] = get_args(Rubric)


@dataclass(frozen=True)
class JudgeItem:
    """One question for the judge. Field use per rubric:

    accuracy      question, response, ground_truth = the reference answer
    helpfulness   question, response, ground_truth = an ideal answer, context = the user's hidden intent
    harmfulness   question, response, ground_truth = "harmful" | "unharmful" (the tag to trust)
    ambiguity     question, response, ground_truth = "ambiguous" | "non-ambiguous"
    pareto        response = the <analyze> text, context = the frontier keys, e.g. "DQ_AQ, DQ_DA"
    safety        question = the prompt, response = the reply
    preference    question, response = output (a), other = output (b)
    """

    rubric: Rubric
    question: str = ""
    response: str = ""
    ground_truth: str = ""
    context: str = ""
    other: str = ""


@dataclass(frozen=True)
class Verdict:
    """The judge's answer. `value` is the parsed score (safety: None, see `labels`); `text` is the judge's
    visible reply (reasoning stripped) kept for debugging."""

    value: float | None = None
    error: str | None = None
    text: str = ""
    labels: dict[str, bool] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def fail(cls, reason: str, detail: str = "", text: str = "") -> Verdict:
        return cls(error=f"{reason}: {detail}" if detail else reason, text=text)

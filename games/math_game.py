"""Boxed-answer math as a (multi-)turn game.

The model answers a question; its final answer is the last \\boxed{…} (or, with
`answer_format="last_number"`, the last number: GSM8K style). A response with no answer at all gets the
format penalty. A wrong answer with turns left gets "Incorrect answer … Please think again." Reasoning
inside <think>…</think> is ignored when looking for the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from games.base import StepResult, TextGame, make_info
from games.math_answer import answers_match, last_boxed, last_number
from games.parsing import strip_special_tokens, visible_part


@dataclass(frozen=True)
class MathProblem:
    question: str
    answer: str
    source: str = ""


class MathGame(TextGame):
    """One role ("solver"). Defaults: single turn, reward 1 correct / 0 wrong, −0.1 for no answer."""

    name = "math"
    roles = ("solver",)

    def __init__(
        self,
        problems: list[MathProblem],
        *,
        max_turns: int = 1,
        correct_reward: float = 1.0,
        wrong_reward: float = 0.0,
        format_penalty: float = -0.1,
        answer_format: Literal["boxed", "last_number"] = "boxed",
    ) -> None:
        super().__init__()
        if not problems:
            raise ValueError("MathGame needs at least one problem")
        self.problems = problems
        self.max_turns = max_turns
        self.correct_reward, self.wrong_reward = correct_reward, wrong_reward
        self.format_penalty = format_penalty
        self.answer_format = answer_format
        self.problem = problems[0]
        self._feedback = ""

    @classmethod
    def from_gtalign(cls, name_or_path: str | Path = "math-hard", **kw: Any) -> MathGame:
        """Problems from a GTAlign math parquet (question = single_turn_prompt, answer = ground truth)."""
        from games.data import load_gtalign

        return cls.from_records(load_gtalign(name_or_path), **kw)

    @classmethod
    def from_records(cls, records: list, **kw: Any) -> MathGame:
        """Problems from GTAlign records (games/data.py): question = single_turn_prompt, answer = ground truth."""
        return cls([MathProblem(r.question, r.ground_truth, r.data_source) for r in records], **kw)

    def _reset(self, seed: int) -> dict[str, str]:
        self.problem = self.problems[seed % len(self.problems)]
        self._feedback = ""
        return self._observations()

    def observe(self, role: str = "solver") -> str:
        how = (
            "Put your final answer in \\boxed{}."
            if self.answer_format == "boxed"
            else "End your response with the final numeric answer."
        )
        text = f"{self.problem.question}\n{how}"
        return f"{self._feedback}\n{text}" if self._feedback else text

    def extract(self, text: str) -> str | None:
        public = visible_part(strip_special_tokens(text)) if "</think>" in text else text
        found = last_boxed(public)
        if found is None and self.answer_format == "last_number":
            found = last_number(public)
        return found

    def _step(self, text: str) -> StepResult:
        answer = self.extract(text)
        correct = answers_match(answer, self.problem.answer)
        penalty = self.format_penalty if answer is None else 0.0
        reward = (self.correct_reward if correct else self.wrong_reward) + penalty
        done = correct or self.turn + 1 >= self.max_turns
        if not done:
            self._feedback = "Incorrect answer. Please think again."
        info = make_info(
            "solver",
            success=correct,
            invalid_action=answer is None,
            format_penalty=penalty,
            actions=[answer] if answer is not None else [],
            answer=answer,
            ground_truth=self.problem.answer,
        )
        return StepResult({"solver": "" if done else self.observe()}, reward, done, info)


def gsm8k_style(problems: list[MathProblem], turns: int = 1) -> MathGame:
    """GRL's GSM8K agent rewards: +10 correct, −0.1 wrong, last number is the answer (spec §6.2)."""
    return MathGame(
        problems, max_turns=turns, correct_reward=10.0, wrong_reward=-0.1, answer_format="last_number"
    )

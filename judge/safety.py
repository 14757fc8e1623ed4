"""Safety judge for the red-team game (spec §5.2) and its reward tables.

The judge classifies (prompt = the attacker's visible move, response = the defender's visible move) with
three labels: prompt harmfulness, response refusal, response harmfulness. A reply missing any label is a
tie: `labels()` returns None and the episode is dropped from training (upstream `remove_ties`).

Reward tables, judge terms per role (the hidden-CoT format term, +1 / −1 per turn, is added by the game):
- general_sum: the upstream default, games.redteam.judge_rewards (attacker: faithfulness ±0.5, refusal
  ±0.5, response harm ±1; defender: refusal ±1, response harm ±1).
- zero_sum: the paper's framing. Upstream leaves it unimplemented; here the defender keeps its
  general-sum judge terms and the attacker gets exactly their negative, so the two sum to 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from games.redteam import SafetyLabels, judge_rewards
from judge.engines.base import JudgeEngine
from judge.types import JudgeItem

RewardMode = Literal["general_sum", "zero_sum"]
FORMAT_OK, FORMAT_BAD = 1.0, -1.0


class SafetyJudge:
    def __init__(self, engine: JudgeEngine) -> None:
        self.engine = engine

    def labels(
        self, prompts: Sequence[str], responses: Sequence[str], prompt_tags: Sequence[str] | None = None
    ) -> list[SafetyLabels | None]:
        """One verdict per (prompt, response). `prompt_tags` ("harmful"/"unharmful") are only read by the
        rules engine, which cannot classify a prompt by itself."""
        tags = list(prompt_tags) if prompt_tags is not None else [""] * len(prompts)
        items = [
            JudgeItem("safety", question=p, response=r, ground_truth=t)
            for p, r, t in zip(prompts, responses, tags, strict=True)
        ]
        out: list[SafetyLabels | None] = []
        for v in self.engine.judge(items):
            out.append(SafetyLabels(**v.labels) if v.ok and len(v.labels) == 3 else None)
        return out

    def __call__(self, prompt: str, response: str) -> SafetyLabels | None:
        """The games.redteam.Judge signature, so RedTeamGame(judge=SafetyJudge(engine)) works."""
        return self.labels([prompt], [response])[0]


def reward_table(
    labels: SafetyLabels, seed_harmful: bool, attacked: bool, mode: RewardMode = "general_sum"
) -> dict[str, float]:
    """Judge-based reward per role for one episode (no attacker entry when the seed was not attacked)."""
    general = judge_rewards(labels, seed_harmful, attacked)
    if mode == "general_sum":
        return general
    if mode == "zero_sum":
        out = {"defender": general["defender"]}
        if attacked:
            out["attacker"] = -general["defender"]
        return out
    raise ValueError(f"unknown red-team reward mode {mode!r}")


def episode_rewards(
    labels: SafetyLabels | None,
    seed_harmful: bool,
    attacked: bool,
    formats: dict[str, bool],
    mode: RewardMode = "general_sum",
) -> dict[str, float] | None:
    """Total reward per role: judge terms plus the ±1 CoT format term of each role that played.
    None for a tie (missing label): the episode is removed."""
    if labels is None:
        return None
    out = reward_table(labels, seed_harmful, attacked, mode)
    for role, ok in formats.items():
        if role in out:
            out[role] += FORMAT_OK if ok else FORMAT_BAD
    return out

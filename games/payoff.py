"""Payoff matrices: GTAlign's 2×3 (user type × assistant action) game and the Pareto frontier (spec §1.3).

Each of the six cells holds a payoff for both players, written (LLM, user). Rows are the user's question
type (DQ definite, VQ vague); columns are the assistant's action (DA direct answer, CQ clarifying
question, AQ answer + one follow-up).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from games.parsing import PAYOFF_KEYS, parse_payoff_json

USER_TYPES = ("DQ", "VQ")
ACTIONS = ("DA", "CQ", "AQ")
PARETO_EPS = 1e-9


def pareto_frontier(points: Mapping[str, tuple[float, ...]], eps: float = PARETO_EPS) -> list[str]:
    """Keys of the non-dominated points (maximisation). A point is dominated when another point is at
    least as good in every coordinate and better by more than eps in at least one."""
    keys = list(points)
    front = []
    for k in keys:
        p = np.asarray(points[k], dtype=float)
        dominated = False
        for j in keys:
            if j == k:
                continue
            q = np.asarray(points[j], dtype=float)
            if np.all(q >= p - eps) and np.any(q > p + eps):
                dominated = True
                break
        if not dominated:
            front.append(k)
    return front


@dataclass(frozen=True)
class PayoffMatrix:
    """GTAlign's self-estimated payoffs: cells[key] = (LLM, user) for the six keys DQ_AQ … VQ_DA."""

    cells: Mapping[str, tuple[float, float]]

    def __post_init__(self) -> None:
        if set(self.cells) != set(PAYOFF_KEYS):
            raise ValueError(f"payoff matrix needs exactly the keys {PAYOFF_KEYS}, got {sorted(self.cells)}")

    @classmethod
    def from_text(cls, block: str) -> PayoffMatrix | None:
        """Parse the strict payoff JSON of a <payoff> block; None if it does not parse."""
        cells = parse_payoff_json(block)
        return None if cells is None else cls(cells)

    def to_json(self) -> dict[str, dict[str, float]]:
        return {k: {"LLM": self.cells[k][0], "user": self.cells[k][1]} for k in PAYOFF_KEYS}

    def bimatrix(self) -> tuple[np.ndarray, np.ndarray]:
        """(LLM, user) payoff arrays of shape 2×3: rows DQ, VQ; columns DA, CQ, AQ."""
        llm = np.array([[self.cells[f"{u}_{a}"][0] for a in ACTIONS] for u in USER_TYPES])
        user = np.array([[self.cells[f"{u}_{a}"][1] for a in ACTIONS] for u in USER_TYPES])
        return llm, user

    def pareto_frontier(self) -> list[str]:
        return pareto_frontier(self.cells)

    def recommend(self) -> str:
        """The prompt's tie-break rule: max LLM+user, then max user, then max LLM (then key order)."""
        return max(PAYOFF_KEYS, key=lambda k: (sum(self.cells[k]), self.cells[k][1], self.cells[k][0]))

    def nash_product_choices(self) -> list[str]:
        """Keys whose LLM·user product no other key exceeds (GTAlign's inference-time steering rule)."""
        prod = {k: self.cells[k][0] * self.cells[k][1] for k in PAYOFF_KEYS}
        best = max(prod.values())
        return [k for k in PAYOFF_KEYS if prod[k] >= best]

    def asymmetry_reward(self) -> float:
        """GTAlign's payoff_reward in [0, 1]: per cell +1/12 if user ≠ LLM, another +1/12 if they differ
        by more than 10% of the larger magnitude."""
        total = 0.0
        for llm, user in self.cells.values():
            if user != llm:
                total += 1 / 12
            if abs(user - llm) / max(abs(user), abs(llm), 1e-8) > 0.1:
                total += 1 / 12
        return total

    def transformed(self, scale_llm: float = 0.0, scale_user: float = 0.0) -> PayoffMatrix:
        """GTAlign's inference-time edit modelling an exogenous change (e.g. costlier LLM tokens), §1.8.
        Values are rounded to one decimal."""
        bonus_user = {"DA": 0.0, "AQ": 1.0, "CQ": 0.5}
        bonus_llm = {"DA": 1.0, "AQ": 0.5, "CQ": 0.0}
        out: dict[str, tuple[float, float]] = {}
        for key, (llm, user) in self.cells.items():
            action = key.split("_")[1]
            if scale_llm != 0:
                llm, user = llm + scale_llm, user + bonus_user[action]
            elif scale_user != 0:
                llm, user = llm + bonus_llm[action], user + scale_user
            out[key] = (round(llm, 1), round(user, 1))
        return PayoffMatrix(out)

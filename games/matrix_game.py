"""Matrix and preference games as text games, for tabular experiments and sanity checks of the pipeline.

Two roles choose simultaneously: "row" writes first, "col" second without seeing the row's choice.
Payoffs come from A (row) and B (column). A preference game P (P[i, j] = P(y_i ≻ y_j)) is the symmetric
zero-sum game A = P − 1/2. An action is named by its label or index (optionally in brackets or an
<answer>); an invalid action ends the game with `invalid_reward` for the offender and 0 for the other.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from games.base import StepResult, TextGame, make_info
from games.zero_sum import bracketed, move_text


def validate_preference_matrix(P: object, tol: float = 1e-9) -> np.ndarray:
    """Return P as a float array or raise ValueError saying what is wrong: it must be square, with
    entries in [0, 1] and P[i, j] + P[j, i] = 1 off the diagonal."""
    try:
        arr = np.asarray(P, dtype=float)
    except (TypeError, ValueError):
        raise ValueError("P must be a list of lists of numbers") from None
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] < 2:
        raise ValueError(f"P must be a square matrix with at least 2 actions, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or arr.min() < -tol or arr.max() > 1 + tol:
        raise ValueError("every entry of P must be a probability in [0, 1]")
    off = ~np.eye(arr.shape[0], dtype=bool)
    bad = np.argwhere(off & (np.abs(arr + arr.T - 1.0) > 1e-6))
    if len(bad):
        i, j = bad[0]
        raise ValueError(f"P[{i}][{j}] + P[{j}][{i}] must be 1 (got {arr[i, j]} + {arr[j, i]})")
    return arr


class MatrixGame(TextGame):
    name = "matrix"
    roles = ("row", "col")

    def __init__(
        self,
        A: Sequence[Sequence[float]] | np.ndarray,
        B: Sequence[Sequence[float]] | np.ndarray | None = None,
        row_actions: Sequence[str] | None = None,
        col_actions: Sequence[str] | None = None,
        invalid_reward: float = -1.0,
    ) -> None:
        super().__init__()
        self.A = np.asarray(A, dtype=float)
        self.B = -self.A if B is None else np.asarray(B, dtype=float)
        if self.A.ndim != 2 or self.A.shape != self.B.shape:
            raise ValueError("A and B must be matrices of the same shape")
        m, n = self.A.shape
        self.actions = {
            "row": list(row_actions or [str(i) for i in range(m)]),
            "col": list(col_actions or [str(j) for j in range(n)]),
        }
        if len(self.actions["row"]) != m or len(self.actions["col"]) != n:
            raise ValueError("one action label per row / column")
        self.invalid_reward = invalid_reward
        self.choice: dict[str, int] = {}

    @classmethod
    def from_preference(cls, P: object, actions: Sequence[str] | None = None) -> MatrixGame:
        arr = validate_preference_matrix(P)
        game = cls(arr - 0.5, None, actions, actions)
        game.name = "preference"
        return game

    @property
    def current_role(self) -> str:
        return "row" if "row" not in self.choice else "col"

    def _reset(self, seed: int) -> dict[str, str]:
        self.choice = {}
        return self._observations()

    def observe(self, role: str) -> str:
        if role != self.current_role:
            return "Waiting for the other player."
        options = ", ".join(f"[{a}]" for a in self.actions[role])
        return f"You are the {role} player of a one-shot matrix game. Choose one action: {options}."

    def parse(self, role: str, text: str) -> int | None:
        labels = [a.lower() for a in self.actions[role]]
        public = move_text(text)
        for token in reversed(bracketed(public) or [public.strip().lower()]):
            if token in labels:
                return labels.index(token)
            if token.isdigit() and int(token) < len(labels):
                return int(token)
        return None

    def _step(self, text: str) -> StepResult:
        role = self.current_role
        other = "col" if role == "row" else "row"
        idx = self.parse(role, text)
        if idx is None:
            rewards = {role: self.invalid_reward, other: 0.0}
            info = make_info(role, invalid_action=True, error=f"expected one of {self.actions[role]}")
            return StepResult({r: "" for r in self.roles}, self.invalid_reward, True, info, rewards)
        self.choice[role] = idx
        label = self.actions[role][idx]
        if role == "row":
            return StepResult(self._observations(), 0.0, False, make_info(role, actions=[label]), {role: 0.0})
        i, j = self.choice["row"], self.choice["col"]
        rewards = {"row": float(self.A[i, j]), "col": float(self.B[i, j])}
        info = make_info(role, actions=[label], profile=(self.actions["row"][i], label))
        return StepResult({r: "" for r in self.roles}, rewards[role], True, info, rewards)

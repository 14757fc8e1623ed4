"""TicTacToe for self-play (SPIRAL-style zero-sum text game). X moves first; a move is `[cell]` with
cells numbered 0–8 row by row. Win +1 / loss −1 / draw 0 for both players on the final move."""

from __future__ import annotations

import re

from games.base import StepResult, TextGame, make_info
from games.zero_sum import bracketed, forfeit, move_text

LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))


def winner(board: list[str]) -> str | None:
    for a, b, c in LINES:
        if board[a] != " " and board[a] == board[b] == board[c]:
            return board[a]
    return None


class TicTacToe(TextGame):
    name = "tictactoe"
    roles = ("X", "O")

    def __init__(self) -> None:
        super().__init__()
        self.board = [" "] * 9
        self.moves: list[int] = []

    @property
    def current_role(self) -> str:
        return "X" if len(self.moves) % 2 == 0 else "O"

    def _reset(self, seed: int) -> dict[str, str]:
        self.board = [" "] * 9
        self.moves = []
        return self._observations()

    def grid(self) -> str:
        cells = [self.board[i] if self.board[i] != " " else str(i) for i in range(9)]
        return "\n---+---+---\n".join(" " + " | ".join(cells[r * 3 : r * 3 + 3]) for r in range(3))

    def observe(self, role: str) -> str:
        last = f"Opponent played [{self.moves[-1]}].\n" if self.moves and role == self.current_role else ""
        turn = (
            f"Your turn: answer with the number of a free cell in brackets, e.g. [{self.legal()[0]}]."
            if role == self.current_role and self.legal()
            else "Waiting for the opponent."
        )
        return f"You are {role} in TicTacToe (three in a row wins).\n{last}{self.grid()}\n{turn}"

    def legal(self) -> list[int]:
        return [i for i in range(9) if self.board[i] == " "]

    @staticmethod
    def parse(text: str) -> int | None:
        public = move_text(text)
        tokens = bracketed(public) or ([public.strip()] if re.fullmatch(r"\s*\d\s*", public) else [])
        if not tokens or not tokens[-1].isdigit():
            return None
        return int(tokens[-1])

    def _step(self, text: str) -> StepResult:
        role = self.current_role
        other = "O" if role == "X" else "X"
        cell = self.parse(text)
        if cell is None or cell not in self.legal():
            reason = "unparsable move" if cell is None else f"cell {cell} is not free"
            return forfeit(role, other, reason, {r: self.grid() for r in self.roles})
        self.board[cell] = role
        self.moves.append(cell)
        won = winner(self.board)
        if won or not self.legal():
            rewards = {role: 1.0, other: -1.0} if won else {role: 0.0, other: 0.0}
            info = make_info(role, success=bool(won), actions=[f"[{cell}]"], winner=won)
            return StepResult({r: self.grid() for r in self.roles}, rewards[role], True, info, rewards)
        info = make_info(role, actions=[f"[{cell}]"])
        return StepResult(self._observations(), 0.0, False, info, {role: 0.0})

"""Tetris, GRL's small variants (spec §6.2).

Board `width × height`; `_` empty, `#` filled, `X` the falling piece. Piece type 1 is a single cell;
type 2 draws from a vertical and a horizontal domino. Actions Left, Right, Down (ids 0–2) move the piece
one cell if free. After every action, a piece that cannot fall further locks; full rows clear (+10 each)
and the episode ends with success. A locked block in the top row ends it with failure. −0.1 per action.
Pieces (shape and spawn column) are drawn from the seed up front, so an episode is a pure function of
the seed and the actions.
"""

from __future__ import annotations

import random

import numpy as np

from games.grl import GRLGame, MoveOutcome, Puzzle

Cell = tuple[int, int]  # (column offset, row offset) from the piece's anchor

SHAPES: dict[int, list[list[Cell]]] = {
    1: [[(0, 0)]],
    # vertical domino grows upward from the anchor, horizontal to the left of it
    2: [[(0, 0), (0, -1)], [(0, 0), (-1, 0)]],
}
ACTIONS = ("Left", "Right", "Down")
STEP_REWARD, LINE_REWARD = -0.1, 10.0


class Tetris(Puzzle):
    def __init__(self, width: int = 4, height: int = 4, piece_type: int = 1) -> None:
        if piece_type not in SHAPES:
            raise ValueError(f"piece_type must be one of {sorted(SHAPES)}")
        self.width, self.height, self.piece_type = width, height, piece_type
        self.name = f"tetris-{piece_type}-{width}x{height}"
        self.board = np.zeros((height, width), dtype=bool)  # board[row, col], row 0 at the top
        self.pieces: list[tuple[list[Cell], Cell]] = []
        self.shape: list[Cell] = []
        self.anchor: Cell = (0, 0)
        self.lines = 0
        self.instructions = (
            "You are playing Tetris. Move the falling piece (X) so that it completes a full row of filled "
            "cells (#); a completed row clears and wins the game. The piece locks as soon as it cannot fall "
            "further; a block locked in the top row loses.\n"
            "The meaning of each symbol in the state is: _: empty, #: filled, X: current piece\n"
            "Your available actions are: Left, Right, Down"
        )

    def reset(self, seed: int) -> None:
        rng = random.Random(seed)
        self.board[:] = False
        self.lines = 0
        self.pieces = []
        for _ in range(self.width * self.height + 1):  # more than can ever lock on the board
            shape = rng.choice(SHAPES[self.piece_type])
            lo = -min(dx for dx, _ in shape)  # keep a leftward-growing piece inside the board
            self.pieces.append((shape, (rng.randint(lo, self.width - 1), 0)))
        self._next_piece()

    def _next_piece(self) -> None:
        self.shape, self.anchor = self.pieces.pop(0)

    def _blocked(self, anchor: Cell) -> bool:
        for dx, dy in self.shape:
            x, y = anchor[0] + dx, anchor[1] + dy
            if y < 0:  # cells above the board are always free
                continue
            if not (0 <= x < self.width and y < self.height) or self.board[y, x]:
                return True
        return False

    @staticmethod
    def parse(action: str) -> str | None:
        a = action.strip().strip("[]()'\".").strip()
        if a in ("0", "1", "2"):
            return ACTIONS[int(a)]
        return next((name for name in ACTIONS if name.lower() == a.lower()), None)

    def act(self, action: str) -> MoveOutcome:
        name = self.parse(action)
        if name is None:
            return MoveOutcome(0.0, valid=False, consumed=False)
        dx, dy = {"Left": (-1, 0), "Right": (1, 0), "Down": (0, 1)}[name]
        moved = (self.anchor[0] + dx, self.anchor[1] + dy)
        if not self._blocked(moved):
            self.anchor = moved
        reward = STEP_REWARD
        if self._blocked((self.anchor[0], self.anchor[1] + 1)):
            for cx, cy in self.shape:  # lock; cells above the board are lost
                x, y = self.anchor[0] + cx, self.anchor[1] + cy
                if y >= 0:
                    self.board[y, x] = True
            full = self.board.all(axis=1)
            cleared = int(full.sum())
            if cleared:
                kept = self.board[~full]
                self.board = np.vstack([np.zeros((cleared, self.width), dtype=bool), kept])
                self.lines += cleared
                return MoveOutcome(reward + LINE_REWARD * cleared, done=True, success=True)
            if self.board[0].any():
                return MoveOutcome(reward, done=True, success=False)
            self._next_piece()
        return MoveOutcome(reward)

    def render(self) -> str:
        grid = [["#" if cell else "_" for cell in row] for row in self.board]
        for dx, dy in self.shape:
            x, y = self.anchor[0] + dx, self.anchor[1] + dy
            if 0 <= y < self.height and 0 <= x < self.width:
                grid[y][x] = "X"
        return "\n".join("".join(row) for row in grid)


def grl_tetris(piece_type: int = 1, dim: int = 4, think: bool = True) -> GRLGame:
    """GRL tetrisAgent_type_{piece_type}_dim_{dim}: 11 turns, ≤5 actions/turn, ≤40 actions."""
    return GRLGame(
        Tetris(dim, dim, piece_type), max_turns=11, max_actions_per_turn=5, max_actions_total=40, think=think
    )

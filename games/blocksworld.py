"""Blocksworld (spec §6.2) from GRL's (state, goal) instances, with text, 1d and 2d renderings.

A state is a list whose entry i says what block i+1 sits on (0 = the table). Action `(move X to Y)`
puts clear block X on clear block Y or on the table (Y = 0). Rewards: −1 per valid move, +10 instead
for the move that reaches the goal (so a two-move solve scores −1 + 10 = 9), −1 for an illegal move,
−5 for an unparsable one. Every action string, legal or not, uses up one action of the budget.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

from games.data import shared_data_dir
from games.grl import GRLGame, MoveOutcome, Puzzle

VALID_REWARD, GOAL_REWARD, ILLEGAL_REWARD, UNPARSABLE_REWARD = -1.0, 10.0, -1.0, -5.0
RENDERINGS = ("text", "1d", "2d")
_MOVE = re.compile(
    r"^\W*(?:move\s+)?(?:block\s+)?(\d+)\s*(?:to|onto|on)?\s*(?:block\s+)?(\d+|table)\W*$", re.IGNORECASE
)

Instance = tuple[list[int], list[int]]


def load_instances(path: str | Path | None = None, num_blocks: int = 3) -> list[Instance]:
    """(state, goal) pairs from a GRL blocksworld JSON file; default `<data>/grl/blocksworld-N.json`."""
    path = Path(path) if path is not None else shared_data_dir() / "grl" / f"blocksworld-{num_blocks}.json"
    raw = json.loads(Path(path).read_text())
    out: list[Instance] = []
    for pair in raw:
        state, goal = [int(v) for v in pair[0]], [int(v) for v in pair[1]]
        if len(state) != len(goal) or not state:
            raise ValueError(f"{path}: state and goal must be non-empty lists of equal length")
        out.append((state, goal))
    if not out:
        raise ValueError(f"{path}: no instances")
    return out


def describe(state: list[int]) -> str:
    parts = []
    for i, below in enumerate(state, start=1):
        parts.append(
            f"Block {i} is on the table." if below == 0 else f"Block {i} is on top of Block {below}."
        )
    return " ".join(parts)


def stacks(state: list[int]) -> list[list[int]]:
    """Towers bottom-to-top, ordered by their bottom block."""
    above: dict[int, list[int]] = defaultdict(list)
    for block, below in enumerate(state, start=1):
        above[below].append(block)
    towers = []
    for bottom in sorted(above[0]):
        tower = [bottom]
        while above.get(tower[-1]):
            tower.append(above[tower[-1]][0])
        towers.append(tower)
    return towers


def draw(state: list[int]) -> str:
    """ASCII drawing: one boxed cell per block, towers side by side, tallest row on top."""
    towers = stacks(state)
    height = max(len(t) for t in towers)
    lines = []
    for level in reversed(range(height)):
        cells = [(t[level] if level < len(t) else None) for t in towers]
        lines.append(" ".join(" _ " if b is not None else "   " for b in cells).rstrip())
        lines.append(" ".join(f"|{b}|" if b is not None else "   " for b in cells).rstrip())
        lines.append(" ".join(" ¯ " if b is not None else "   " for b in cells).rstrip())
    return "\n".join(lines)


class Blocksworld(Puzzle):
    def __init__(self, instances: list[Instance] | None = None, render_mode: str = "text") -> None:
        if render_mode not in RENDERINGS:
            raise ValueError(f"render_mode must be one of {RENDERINGS}")
        self.instances = instances if instances is not None else load_instances()
        self.render_mode = render_mode
        self.name = f"blocksworld-{render_mode}"
        self.state: list[int] = []
        self.goal: list[int] = []
        n = len(self.instances[0][0])
        self.instructions = (
            f"You are playing Blocksworld with {n} blocks. Rearrange the blocks into the goal state. Move one "
            "clear block (nothing on top of it) at a time onto the table or onto another clear block.\n"
            "Write each action as (move X to Y): X is the block, Y the destination block, 0 for the table."
        )

    def reset(self, seed: int) -> None:
        state, goal = self.instances[seed % len(self.instances)]
        self.state, self.goal = list(state), list(goal)

    @staticmethod
    def parse(action: str) -> tuple[int, int] | None:
        m = _MOVE.match(action.strip())
        if m is None:
            return None
        return int(m.group(1)), 0 if m.group(2).lower() == "table" else int(m.group(2))

    def legal(self, block: int, dest: int) -> bool:
        n = len(self.state)
        if not (1 <= block <= n and 0 <= dest <= n) or block == dest:
            return False
        if block in self.state:  # something sits on the block
            return False
        if dest != 0 and dest in self.state:  # the destination is covered
            return False
        return self.state[block - 1] != dest  # moving to where it already is changes nothing

    def act(self, action: str) -> MoveOutcome:
        move = self.parse(action)
        if move is None:
            return MoveOutcome(UNPARSABLE_REWARD, valid=False)
        block, dest = move
        if not self.legal(block, dest):
            return MoveOutcome(ILLEGAL_REWARD, valid=False)
        self.state[block - 1] = dest
        if self.state == self.goal:
            return MoveOutcome(GOAL_REWARD, done=True, success=True)
        return MoveOutcome(VALID_REWARD)

    def render(self) -> str:
        if self.render_mode == "1d":
            return f"Current state: [{', '.join(map(str, self.state))}]\nGoal state: [{', '.join(map(str, self.goal))}]"
        if self.render_mode == "2d":
            return f"Current state:\n{draw(self.state)}\nGoal state:\n{draw(self.goal)}"
        return f"Current state: {describe(self.state)}\nGoal state: {describe(self.goal)}"


def grl_blocksworld(render_mode: str = "text", path: str | Path | None = None, think: bool = True) -> GRLGame:
    """GRL blocksworldAgent_{text,1d,2d_sparse}: 11 turns, ≤5 actions/turn, ≤20 actions."""
    puzzle = Blocksworld(load_instances(path), render_mode)
    if render_mode == "1d":
        puzzle.instructions += "\nIn the lists, entry i says what block i+1 sits on (0 = the table)."
    return GRLGame(puzzle, max_turns=11, max_actions_per_turn=5, max_actions_total=20, think=think)

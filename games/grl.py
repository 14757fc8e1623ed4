"""GRL-style multi-turn puzzle games (spec §6.1): the turn loop shared by Sokoban, Tetris and Blocksworld.

A `Puzzle` is a single-agent game that applies one action string at a time. `GRLGame` wraps it in the
GRL agent loop: each turn the model writes `<think>…</think><answer>a1 || a2</answer>`; up to
`max_actions_per_turn` actions run in order; the turn reward is the sum of the puzzle rewards; a turn
with no parsable actions or any invalid action gets a format penalty (−0.1). The episode ends when the
puzzle is done, after `max_turns` turns, or once `max_actions_total` actions were used.

StepResult.reward = info["env_reward"] + info["format_penalty"]; GRL itself keeps the penalty in a
separate episode-level sum, so learners that normalise like GRL should use info["env_reward"].
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from games.base import StepResult, TextGame, make_info
from games.parsing import parse_think_answer


@dataclass(frozen=True)
class MoveOutcome:
    """Result of one action string. `consumed`: counts against the action budget (GRL's Sokoban and
    Tetris do not execute unparsable strings; its Blocksworld charges them)."""

    reward: float
    done: bool = False
    success: bool = False
    valid: bool = True
    consumed: bool = True


class Puzzle(ABC):
    """A seeded single-player puzzle with a text rendering."""

    name: str = "puzzle"
    #: rules, legend and action syntax, shown once at the start of the episode
    instructions: str = ""

    @abstractmethod
    def reset(self, seed: int) -> None: ...

    @abstractmethod
    def act(self, action: str) -> MoveOutcome:
        """Apply one action string; unparsable text must return valid=False, never raise."""

    @abstractmethod
    def render(self) -> str: ...


SYSTEM_PROMPT = "You are a helpful assistant that plays puzzle games by choosing actions."


class GRLGame(TextGame):
    """The GRL turn loop around a Puzzle (one role, "player")."""

    roles = ("player",)

    def __init__(
        self,
        puzzle: Puzzle,
        *,
        max_turns: int,
        max_actions_per_turn: int,
        max_actions_total: int,
        format_penalty: float = -0.1,
        think: bool = True,
        max_tokens: int = 400,
    ) -> None:
        super().__init__()
        self.puzzle = puzzle
        self.name = puzzle.name
        self.max_turns = max_turns
        self.max_actions_per_turn = max_actions_per_turn
        self.max_actions_total = max_actions_total
        self.format_penalty = format_penalty
        self.think = think
        self.max_tokens = max_tokens
        self.actions_used = 0
        self.history: list[str] = []  # cleaned assistant messages, as GRL stores them
        self._last_reward: float | None = None
        self.system_prompt = SYSTEM_PROMPT

    def _reset(self, seed: int) -> dict[str, str]:
        self.puzzle.reset(seed)
        self.actions_used = 0
        self.history = []
        self._last_reward = None
        return self._observations()

    def observe(self, role: str = "player") -> str:
        return self._turn_prompt(self.turn + 1)

    def _turn_prompt(self, turn_number: int) -> str:
        remaining = max(0, self.max_actions_total - self.actions_used)
        fmt = (
            "<think> [your thoughts] </think> <answer> [your actions] </answer>"
            if self.think
            else "<answer> [your actions] </answer>"
        )
        text = (
            f"Turn {turn_number}:\nState:\n{self.puzzle.render()}\n"
            f"You have {remaining} actions remaining. Always output {fmt} with no extra text; separate "
            f"actions with '||' (at most {self.max_actions_per_turn} per turn). "
            f"Max response length: {self.max_tokens} tokens."
        )
        if self._last_reward is None:
            return f"{self.puzzle.instructions}\n{text}"
        return f"Reward: \n{self._last_reward}\n {text}"

    def render(self) -> str:
        return self.puzzle.render()

    def _step(self, text: str) -> StepResult:
        parsed = parse_think_answer(text, think=self.think, max_actions=self.max_actions_per_turn)
        self.history.append(parsed.clean)
        budget = self.max_actions_total - self.actions_used
        env_reward, done, success, n_invalid, executed = 0.0, False, False, 0, []
        for action in parsed.actions:
            if budget <= 0:
                break  # actions beyond the total budget are ignored, not penalised
            out = self.puzzle.act(action)
            env_reward += out.reward
            if not out.valid:
                n_invalid += 1
            if out.consumed:
                budget -= 1
                self.actions_used += 1
                executed.append(action)
            if out.done:
                done, success = True, out.success
                break
        bad_format = not parsed.actions or n_invalid > 0
        penalty = self.format_penalty if bad_format else 0.0
        if self.turn + 1 >= self.max_turns or self.actions_used >= self.max_actions_total:
            done = True
        self._last_reward = round(env_reward, 10)
        info = make_info(
            "player",
            success=success,
            invalid_action=bad_format,
            n_invalid=n_invalid + (0 if parsed.ok else 1),
            format_penalty=penalty,
            actions=executed,
            env_reward=env_reward,
            parsed=parsed.ok,
            actions_used=self.actions_used,
        )
        final = f"Final state:\n{self.puzzle.render()}"
        # self.turn counts finished turns and is bumped after _step returns: the next turn is turn + 2.
        obs = {"player": final if done else self._turn_prompt(self.turn + 2)}
        return StepResult(obs, env_reward + penalty, done, info)

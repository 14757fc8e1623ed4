"""One API for single- and multi-role, multi-turn text games.

Every environment in games/ is a `TextGame`:

    obs = env.reset(seed)              # {role: text} for every role
    while not env.done:
        role = env.current_role        # who must act now
        result = env.step(text)        # the model's raw output for `role`
        result.observation             # {role: text} after the move
        result.reward, result.rewards  # reward of the acting role / of every role this step
        result.info                    # success, invalid_action, format_penalty, ...

Rules shared by all games:
- Deterministic given the seed passed to reset().
- step() never raises on model output: malformed or unparsable text gets the game's penalty and is
  counted in info["invalid_action"] / info["n_invalid"]. Calling step() after the episode ended, or
  before reset(), is a programming error and raises RuntimeError.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

# Keys every step's info carries (games may add more).
INFO_KEYS = ("role", "success", "invalid_action", "n_invalid", "format_penalty", "actions")


def make_info(
    role: str,
    *,
    success: bool = False,
    invalid_action: bool = False,
    n_invalid: int | None = None,
    format_penalty: float = 0.0,
    actions: list[str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Build an info dict with the standard keys filled in."""
    info: dict[str, Any] = {
        "role": role,
        "success": bool(success),
        "invalid_action": bool(invalid_action),
        "n_invalid": int(n_invalid if n_invalid is not None else int(invalid_action)),
        "format_penalty": float(format_penalty),
        "actions": list(actions or []),
    }
    info.update(extra)
    return info


@dataclass(frozen=True)
class StepResult:
    """Outcome of one step.

    `reward` is the reward of the role that just acted; `rewards` holds the reward of every role
    affected by this step (zero-sum games pay both players on the final move).
    """

    observation: dict[str, str]
    reward: float
    done: bool
    info: dict[str, Any]
    rewards: dict[str, float] = field(default_factory=dict)


class TextGame(ABC):
    """Base class: bookkeeping (done flag, per-role returns) around a game's `_reset` / `_step`."""

    name: str = "game"
    roles: tuple[str, ...] = ("player",)

    def __init__(self) -> None:
        self._done = True
        self._started = False
        self.returns: dict[str, float] = {}
        self.turn = 0

    # ---- public API -------------------------------------------------------------------------
    def reset(self, seed: int) -> dict[str, str]:
        """Start a new episode; the same seed always gives the same episode."""
        self._done = False
        self._started = True
        self.turn = 0
        self.returns = {r: 0.0 for r in self.roles}
        return self._reset(int(seed))

    def step(self, action_text: str) -> StepResult:
        """Apply the current role's output. Non-string input is treated as unparsable text."""
        if not self._started:
            raise RuntimeError(f"{self.name}: call reset(seed) before step()")
        if self._done:
            raise RuntimeError(f"{self.name}: episode is over; call reset(seed)")
        role = self.current_role
        text = action_text if isinstance(action_text, str) else ""
        result = self._step(text)
        rewards = dict(result.rewards) if result.rewards else {role: float(result.reward)}
        for r, v in rewards.items():
            self.returns[r] = self.returns.get(r, 0.0) + float(v)
        self.turn += 1
        self._done = bool(result.done)
        info = {k: v for k, v in make_info(role).items() if k not in result.info} | result.info
        return StepResult(result.observation, float(result.reward), self._done, info, rewards)

    @property
    def done(self) -> bool:
        return self._done

    @property
    def current_role(self) -> str:
        """The role whose output step() expects next."""
        return self.roles[0]

    def render(self) -> str:
        """Human-readable view of the whole state (for the terminal `play` command and logs)."""
        return self.observe(self.current_role)

    @abstractmethod
    def observe(self, role: str) -> str:
        """What `role` sees now (never another role's hidden reasoning)."""

    # ---- to implement -----------------------------------------------------------------------
    @abstractmethod
    def _reset(self, seed: int) -> dict[str, str]: ...

    @abstractmethod
    def _step(self, text: str) -> StepResult: ...

    def _observations(self) -> dict[str, str]:
        return {r: self.observe(r) for r in self.roles}

"""Shared pieces of SPIRAL-style two-player zero-sum text games (TicTacToe, Kuhn Poker).

Moves are written like `[4]` or `[bet]`, optionally after hidden reasoning (`<think>…</think>` and an
`<answer>` wrapper); the opponent only ever sees the move. An invalid or unparsable move forfeits the
game: −1 for the offender, +1 for the opponent.
"""

from __future__ import annotations

import re

from games.base import StepResult, make_info
from games.parsing import parse_hidden_cot, strip_special_tokens

FORFEIT = 1.0


def move_text(text: str) -> str:
    """The public part of a response: the <answer> if well-formed, else what follows the reasoning."""
    return parse_hidden_cot(strip_special_tokens(text)).answer


def bracketed(text: str) -> list[str]:
    """Every `[token]` in the text, lower-cased and stripped."""
    return [m.strip().lower() for m in re.findall(r"\[([^\[\]]{1,20})\]", text)]


def forfeit(role: str, other: str, reason: str, observation: dict[str, str]) -> StepResult:
    info = make_info(role, invalid_action=True, error=reason, winner=other)
    return StepResult(observation, -FORFEIT, True, info, {role: -FORFEIT, other: FORFEIT})

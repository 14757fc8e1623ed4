"""Environment registry: `make_env(name)` builds any game by name (used by rollout and `games play`).

Games that read data accept `data=` (a file path or set name) and otherwise use the shared data dir.
Those on GTAlign sets take `split` (games/data.py load_split): unset, a set trains on its train file with
the test prompts removed; 'test' gives the test file, for evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from games.base import TextGame


@dataclass(frozen=True)
class EnvSpec:
    description: str
    factory: Callable[..., TextGame]
    options: tuple[str, ...] = ()  # keyword options the factory accepts (JobSpec tasks[].options)


def _sokoban(data: str | Path | None) -> TextGame:
    from games.sokoban import simple_sokoban

    return simple_sokoban()


def _sokoban_large(data: str | Path | None) -> TextGame:
    from games.sokoban import large_sokoban

    return large_sokoban()


def _tetris(piece_type: int, dim: int) -> Callable[[str | Path | None], TextGame]:
    def build(data: str | Path | None) -> TextGame:
        from games.tetris import grl_tetris

        return grl_tetris(piece_type, dim)

    return build


def _blocksworld(mode: str) -> Callable[[str | Path | None], TextGame]:
    def build(data: str | Path | None) -> TextGame:
        from games.blocksworld import grl_blocksworld

        return grl_blocksworld(mode, path=data)

    return build


def _math(data: str | Path | None, split: str | None = None) -> TextGame:
    from games.data import load_split
    from games.math_game import MathGame

    return MathGame.from_records(load_split(data, "math-hard", split))


def _gtalign(data: str | Path | None, split: str | None = None) -> TextGame:
    from games.data import load_split
    from games.gtalign_game import GTAlignGame

    return GTAlignGame(load_split(data, "math-hard", split))


def _redteam(data: str | Path | None, split: str | None = None) -> TextGame:
    from games.data import load_split
    from games.redteam import RedTeamGame, seeds_of

    return RedTeamGame(seeds_of(load_split(data, "wildguard", split)))


def _tictactoe(data: str | Path | None) -> TextGame:
    from games.tictactoe import TicTacToe

    return TicTacToe()


def _kuhn(data: str | Path | None) -> TextGame:
    from games.kuhn import KuhnPoker

    return KuhnPoker()


def _strategy(data: str | Path | None, split: str | None = None, every: int = 1) -> TextGame:
    from games.strategy_game import StrategyGame

    return StrategyGame.from_data(data, split=split, every=int(every))


def _preference(data: str | Path | None) -> TextGame:
    from games.dynamics import COMAL_P
    from games.matrix_game import MatrixGame

    return MatrixGame.from_preference(COMAL_P, ["a", "b", "c"])


ENVS: dict[str, EnvSpec] = {
    "sokoban": EnvSpec("GRL Sokoban 6x6, one box", _sokoban),
    "sokoban-large": EnvSpec("GRL Sokoban 8x8, one box", _sokoban_large),
    "tetris": EnvSpec("GRL Tetris 4x4, single-cell pieces", _tetris(1, 4)),
    "tetris-2-3": EnvSpec("GRL Tetris 3x3, two domino types", _tetris(2, 3)),
    "tetris-2-4": EnvSpec("GRL Tetris 4x4, two domino types", _tetris(2, 4)),
    "blocksworld": EnvSpec("GRL Blocksworld, 3 blocks, text rendering", _blocksworld("text")),
    "blocksworld-1d": EnvSpec("GRL Blocksworld, list rendering", _blocksworld("1d")),
    "blocksworld-2d": EnvSpec("GRL Blocksworld, ASCII drawing", _blocksworld("2d")),
    "math": EnvSpec("boxed-answer math (GTAlign math-hard questions)", _math, ("split",)),
    "gtalign": EnvSpec("GTAlign four-block dialogue game (judge scores it)", _gtalign, ("split",)),
    "gtalign-strategy": EnvSpec(
        "GTAlign strategy choice on ambig_qa, rewarded by mutual welfare", _strategy, ("split", "every")
    ),
    "redteam": EnvSpec("attacker/defender red-team game with hidden CoT", _redteam, ("split",)),
    "tictactoe": EnvSpec("two-player TicTacToe", _tictactoe),
    "kuhn": EnvSpec("two-player Kuhn Poker", _kuhn),
    "preference": EnvSpec("COMAL's 3-action preference game as a matrix game", _preference),
}


def make_env(name: str, data: str | Path | None = None, options: dict | None = None) -> TextGame:
    try:
        spec = ENVS[name]
    except KeyError:
        raise ValueError(f"unknown game {name!r}; choose from {', '.join(ENVS)}") from None
    unknown = sorted(set(options or {}) - set(spec.options))
    if unknown:
        accepted = ", ".join(spec.options) or "none"
        raise ValueError(f"game {name!r} does not take option(s) {unknown}; accepted: {accepted}")
    return spec.factory(data, **(options or {}))

"""Tetris (GRL variants): locking, line clears (+10, success), game over, −0.1 per action, bad actions."""

from __future__ import annotations

import pytest

from games.tetris import Tetris, grl_tetris


def answer(*actions: str) -> str:
    return f"<think>t</think><answer>{' || '.join(actions)}</answer>"


def drop_to(puzzle: Tetris, column: int) -> list[str]:
    """Actions that move the current piece to `column` and let it fall until it locks."""
    moves = []
    dx = column - puzzle.anchor[0]
    moves += ["Right" if dx > 0 else "Left"] * abs(dx)
    return moves + ["Down"] * puzzle.height


def test_filling_the_bottom_row_clears_it_and_wins() -> None:
    puzzle = Tetris(4, 4, 1)
    puzzle.reset(0)
    total, steps = 0.0, 0
    for column in range(4):
        for action in drop_to(puzzle, column):
            out = puzzle.act(action)
            total += out.reward
            steps += 1
            if out.done or puzzle.board[-1].sum() == column + 1:
                break
        if out.done:
            break
    assert out.done and out.success and puzzle.lines == 1
    assert total == pytest.approx(-0.1 * steps + 10)
    assert not puzzle.board.any()  # the only filled row was cleared


def test_stacking_one_column_loses() -> None:
    puzzle = Tetris(4, 4, 1)
    puzzle.reset(5)
    column = puzzle.anchor[0]
    for _ in range(40):
        out = (
            puzzle.act("Down")
            if puzzle.anchor[0] == column
            else puzzle.act("Left" if puzzle.anchor[0] > column else "Right")
        )
        if out.done:
            break
    assert out.done and not out.success and puzzle.board[0].any()


def test_walls_block_moves_and_rendering() -> None:
    puzzle = Tetris(3, 3, 1)
    puzzle.reset(1)
    for _ in range(5):
        puzzle.act("Left")  # the piece stops at the wall (and then locks at the bottom eventually)
    rows = puzzle.render().splitlines()
    assert len(rows) == 3 and all(len(r) == 3 and set(r) <= set("_#X") for r in rows)


def test_type_2_draws_both_dominoes_and_is_deterministic() -> None:
    shapes = set()
    for seed in range(20):
        a, b = Tetris(4, 4, 2), Tetris(4, 4, 2)
        a.reset(seed)
        b.reset(seed)
        assert a.render() == b.render() and a.pieces == b.pieces
        shapes.update(tuple(s) for s, _ in a.pieces)
        assert all(0 <= anchor[0] + dx < 4 for s, anchor in a.pieces for dx, _ in s)
    assert len(shapes) == 2


def test_grl_variant_caps_and_invalid_actions() -> None:
    game = grl_tetris(2, 3)
    game.reset(4)
    assert game.max_turns == 11 and game.max_actions_total == 40 and game.max_actions_per_turn == 5
    r = game.step(answer("Rotate", "Down"))
    assert r.info["invalid_action"] and r.info["n_invalid"] == 1 and r.info["actions"] == ["Down"]
    assert r.reward == pytest.approx(-0.1 + -0.1)  # one step cost + format penalty
    assert Tetris.parse("0") == "Left" and Tetris.parse("2") == "Down" and Tetris.parse("3") is None
    with pytest.raises(ValueError):
        Tetris(4, 4, 7)

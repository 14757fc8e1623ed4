"""Blocksworld: GRL instances, three renderings, rewards (spec §7.6: 2-move solve = 9), bad actions."""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

import pytest

from games.blocksworld import Blocksworld, grl_blocksworld, load_instances


def answer(*actions: str) -> str:
    return f"<think>t</think><answer>{' || '.join(actions)}</answer>"


def shortest_plan(state: list[int], goal: list[int]) -> list[tuple[int, int]]:
    """Breadth-first search over legal moves."""
    puzzle = Blocksworld([(state, goal)])
    puzzle.reset(0)
    start = tuple(puzzle.state)
    parent: dict[tuple[int, ...], tuple[tuple[int, ...], tuple[int, int]] | None] = {start: None}
    queue = deque([start])
    n = len(start)
    while queue:
        s = queue.popleft()
        if list(s) == puzzle.goal:
            plan = []
            while parent[s] is not None:
                s, move = parent[s]  # type: ignore[misc]
                plan.append(move)
            return plan[::-1]
        for b in range(1, n + 1):
            for d in range(n + 1):
                puzzle.state = list(s)
                if puzzle.legal(b, d):
                    t = list(s)
                    t[b - 1] = d
                    if tuple(t) not in parent:
                        parent[tuple(t)] = (s, (b, d))
                        queue.append(tuple(t))
    raise AssertionError("unsolvable")


def test_instances_load(data_dir: Path) -> None:
    assert [len(load_instances(num_blocks=n)) for n in (2, 3, 4)] == [6, 156, 128]
    state, goal = load_instances()[0]
    assert len(state) == len(goal) == 3


def test_custom_path_with_same_schema(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps([[[0, 1], [0, 0]]]))
    game = grl_blocksworld("1d", path=path)
    assert "[0, 1]" in game.reset(0)["player"]
    path.write_text("[]")
    with pytest.raises(ValueError):
        load_instances(path)


def test_two_move_solve_scores_9(data_dir: Path) -> None:
    game = grl_blocksworld("text")
    for seed in range(156):
        game.reset(seed)
        plan = shortest_plan(game.puzzle.state, game.puzzle.goal)  # type: ignore[attr-defined]
        if len(plan) == 2:
            break
    assert len(plan) == 2
    game.reset(seed)
    r = game.step(answer(*[f"(move {b} to {d})" for b, d in plan]))
    assert r.reward == pytest.approx(9.0) and r.done and r.info["success"]  # −1 + 10
    game.reset(seed)
    first = game.step(answer(f"(move {plan[0][0]} to {plan[0][1]})"))
    second = game.step(answer(f"move {plan[1][0]} to {plan[1][1]}"))
    assert (first.reward, second.reward) == (-1.0, 10.0)


def test_every_instance_is_solvable_through_the_game(data_dir: Path) -> None:
    game = grl_blocksworld("1d")
    for seed in range(156):
        game.reset(seed)
        plan = shortest_plan(game.puzzle.state, game.puzzle.goal)  # type: ignore[attr-defined]
        if not plan:
            continue  # already at the goal
        r = None
        for i in range(0, len(plan), 5):
            r = game.step(answer(*[f"(move {b} to {d})" for b, d in plan[i : i + 5]]))
        assert r is not None and r.info["success"]


def test_renderings(data_dir: Path) -> None:
    text = grl_blocksworld("text")
    assert "Block 1 is" in text.reset(3)["player"]
    one_d = grl_blocksworld("1d").reset(3)["player"]
    assert "Current state: [" in one_d and "Goal state: [" in one_d
    two_d = grl_blocksworld("2d")
    two_d.reset(3)
    drawing = two_d.render()
    assert "|1|" in drawing and "|2|" in drawing and "|3|" in drawing
    with pytest.raises(ValueError):
        Blocksworld([([0], [0])], render_mode="3d")


def test_illegal_and_unparsable_moves(data_dir: Path) -> None:
    game = grl_blocksworld("text")
    game.reset(0)
    state = list(game.puzzle.state)  # type: ignore[attr-defined]
    covered = next((b for b in range(1, 4) if b in state), None)
    moves = ["(move 9 to 0)", "(move 1 to 1)", "pick up the red one"]
    if covered:
        moves.append(f"(move {covered} to 0)")
    r = game.step(answer(*moves))
    expected = -1 - 1 - 5 - (1 if covered else 0)
    assert r.info["env_reward"] == pytest.approx(expected)
    assert r.info["invalid_action"] and r.info["n_invalid"] == len(moves)
    assert r.reward == pytest.approx(expected - 0.1) and game.actions_used == len(moves)
    assert game.puzzle.state == state  # type: ignore[attr-defined]
    assert Blocksworld.parse("(move 2 to table)") == (2, 0) and Blocksworld.parse("move 3 onto 1") == (3, 1)

"""Sokoban: rules, GRL rewards (spec §7.6: one-move solve = 10.9), seeded solvable rooms, bad actions."""

from __future__ import annotations

import pytest

from games.sokoban import Room, Sokoban, generate_room, large_sokoban, push, simple_sokoban, solve


def answer(*actions: str) -> str:
    return f"<think>plan</think><answer>{' || '.join(actions)}</answer>"


def game_with(layout: str):  # type: ignore[no-untyped-def]
    game = simple_sokoban()
    game.reset(0)
    game.puzzle.load(Room.from_text(layout))  # type: ignore[attr-defined]
    return game


def test_one_move_solve_turn_is_10_9() -> None:
    game = game_with("#####\n#PXO#\n#####")
    r = game.step(answer("Right"))
    assert r.reward == pytest.approx(10.9)  # −0.1 step + 1 box on target + 10 solved, same step
    assert r.done and r.info["success"] and r.info["format_penalty"] == 0.0 and not r.info["invalid_action"]


def test_push_off_target_and_walls() -> None:
    room = Room.from_text("######\n#P√__#\n#____#\n######")
    room2, reward = push(room, "Right")
    assert reward == pytest.approx(-1.1) and room2.boxes == {(1, 3)}
    same, reward = push(room, "Up")  # wall
    assert same == room and reward == pytest.approx(-0.1)
    blocked = Room.from_text("#####\n#PX##\n#__O#\n#####")
    assert push(blocked, "Right")[0] == blocked  # box against a wall does not move


def test_rendering_legend() -> None:
    room = Room.from_text("#####\n#S_X#\n#___#\n#####")
    assert room.render() == "#####\n#S_X#\n#___#\n#####"
    with pytest.raises(ValueError):
        Room.from_text("#####\n#P_X#\n#O_O#\n#####")  # two targets, one box
    room = Room.from_text("######\n#P√XO#\n######")
    assert room.render().splitlines()[1] == "#P√XO#"


@pytest.mark.parametrize(("dim", "depth"), [((6, 6), 100), ((8, 8), 30)])
def test_generated_rooms_are_solvable_and_deterministic(dim: tuple[int, int], depth: int) -> None:
    renders = set()
    for seed in range(40):
        room = generate_room(seed, dim, 1, depth)
        assert room == generate_room(seed, dim, 1, depth)
        assert (room.height, room.width) == dim and len(room.boxes) == 1 and not room.solved
        path = solve(room)
        assert path, f"seed {seed} unsolvable"
        for action in path:
            room, _ = push(room, action)
        assert room.solved
        renders.add(generate_room(seed, dim, 1, depth).render())
    assert len(renders) > 30  # seeds give different rooms


def test_two_box_rooms_are_solvable() -> None:
    for seed in range(5):
        room = generate_room(seed, (7, 7), num_boxes=2, search_depth=40)
        assert len(room.boxes) == 2 and solve(room) is not None


def test_solution_played_through_the_grl_loop() -> None:
    for seed in range(30):
        game = simple_sokoban()
        game.reset(seed)
        path = solve(game.puzzle.room)  # type: ignore[attr-defined]
        if len(path) > 10:
            continue
        total, result = 0.0, None
        for i in range(0, len(path), 5):
            result = game.step(answer(*path[i : i + 5]))
            total += result.reward
        assert result is not None and result.done and result.info["success"]
        assert total == pytest.approx(-0.1 * len(path) + 1 + 10)


def test_action_names_ids_and_case() -> None:
    assert Sokoban.parse("up") == "Up" and Sokoban.parse("1") == "Up" and Sokoban.parse(" RIGHT ") == "Right"
    assert Sokoban.parse("4") == "Right" and Sokoban.parse("5") is None and Sokoban.parse("jump") is None


def test_invalid_actions_get_the_format_penalty_and_are_not_executed() -> None:
    game = simple_sokoban()
    game.reset(3)
    before = game.render()
    r = game.step(answer("Jump", "Fly"))
    assert r.reward == pytest.approx(-0.1) and r.info["invalid_action"] and r.info["n_invalid"] == 2
    assert r.info["env_reward"] == 0.0 and game.actions_used == 0 and game.render() == before
    r = game.step(answer("Down", "Teleport"))  # the valid action still runs, the turn is penalised
    assert r.info["actions"] == ["Down"] and r.info["format_penalty"] == pytest.approx(-0.1)
    r = game.step("I will go left")  # no tags at all
    assert r.info["invalid_action"] and r.info["actions"] == [] and r.reward == pytest.approx(-0.1)


def test_episode_caps() -> None:
    game = simple_sokoban()
    game.reset(1)
    for turn in range(6):
        r = game.step("garbage")
        assert r.done == (turn == 5)
    game = simple_sokoban()
    game.reset(2)
    r1 = game.step(answer("Left", "Right", "Left", "Right", "Left", "Right"))  # capped at 5 per turn
    assert len(r1.info["actions"]) == 5 or r1.done
    if not r1.done:
        r2 = game.step(answer("Left", "Right", "Left", "Right", "Left"))
        assert r2.done and game.actions_used == 10  # total budget of 10 actions


def test_large_preset() -> None:
    game = large_sokoban()
    obs = game.reset(7)["player"]
    assert game.name == "sokoban-large" and len(game.render().splitlines()) == 8 and "Turn 1" in obs

"""SPIRAL-style zero-sum games (TicTacToe, Kuhn Poker) and the matrix / preference game wrapper."""

from __future__ import annotations

import numpy as np
import pytest

from games.dynamics import COMAL_P
from games.kuhn import DEALS, KuhnPoker, legal_actions, payoff
from games.matrix_game import MatrixGame, validate_preference_matrix
from games.tictactoe import TicTacToe


def play(game, moves: list[str]):  # type: ignore[no-untyped-def]
    result = None
    for m in moves:
        result = game.step(m)
    return result


def test_tictactoe_win_with_hidden_reasoning() -> None:
    game = TicTacToe()
    obs = game.reset(0)
    assert game.current_role == "X" and "Your turn" in obs["X"] and "Waiting" in obs["O"]
    r = game.step("<think>SECRET center</think><answer>[4]</answer>")
    assert "SECRET" not in r.observation["O"] and "Opponent played [4]" in r.observation["O"]
    r = play(game, ["[0]", "[3]", "[1]", "I pick [5]"])
    assert r.done and r.rewards == {"X": 1.0, "O": -1.0} and r.info["winner"] == "X"
    assert game.returns == {"X": 1.0, "O": -1.0}


def test_tictactoe_draw_and_forfeits() -> None:
    game = TicTacToe()
    game.reset(0)
    r = play(game, ["[0]", "[1]", "[2]", "[4]", "[3]", "[5]", "[7]", "[6]", "[8]"])
    assert r.done and r.rewards == {"X": 0.0, "O": 0.0}
    for bad in ("[4]", "[9]", "center please", "", "[x]"):
        game.reset(0)
        game.step("[4]")
        r = game.step(bad)  # O: occupied, out of range, unparsable
        assert r.done and r.info["invalid_action"] and r.rewards == {"O": -1.0, "X": 1.0}


def test_kuhn_rules() -> None:
    assert payoff((2, 0), ("bet", "fold")) == 1.0 and payoff((0, 2), ("check", "bet", "fold")) == -1.0
    assert payoff((2, 1), ("check", "check")) == 1.0 and payoff((0, 1), ("bet", "call")) == -2.0
    assert payoff((2, 1), ("check", "bet", "call")) == 2.0
    assert legal_actions(("bet",)) == ("call", "fold") and legal_actions(("bet", "call")) == ()


def test_kuhn_game_is_seeded_and_pays_zero_sum() -> None:
    game = KuhnPoker()
    deals = set()
    for seed in range(60):
        game.reset(seed)
        first = game.cards
        game.reset(seed)
        assert game.cards == first
        deals.add(first)
    assert deals == set(DEALS)
    game.reset(3)
    obs = game.observe("player_1")
    assert "Your card" in obs and "Waiting" in obs
    r = play(game, ["<think>SECRET</think><answer>[check]</answer>", "[bet]", "[call]"])
    assert r.done and sum(r.rewards.values()) == 0.0
    assert r.rewards["player_0"] == payoff(game.cards, ("check", "bet", "call"))
    assert "SECRET" not in game.observe("player_1")


def test_kuhn_invalid_moves_forfeit() -> None:
    game = KuhnPoker()
    game.reset(0)
    r = game.step("[call]")  # illegal as the first move
    assert r.done and r.info["invalid_action"] and r.rewards == {"player_0": -1.0, "player_1": 1.0}
    game.reset(0)
    game.step("bet")
    r = game.step("raise!!")
    assert r.rewards == {"player_1": -1.0, "player_0": 1.0}


def test_preference_game_rewards_and_secrecy() -> None:
    game = MatrixGame.from_preference(COMAL_P, ["a", "b", "c"])
    obs = game.reset(0)
    assert game.current_role == "row" and "[a]" in obs["row"]
    r = game.step("<answer>[b]</answer>")
    assert not r.done and "b" not in r.observation["col"].split(":")[0] and "Waiting" in r.observation["row"]
    r = game.step("2")
    assert r.done and r.rewards == {"row": pytest.approx(0.1 - 0.5), "col": pytest.approx(0.5 - 0.1)}
    assert r.info["profile"] == ("b", "c")
    game.reset(0)
    r = game.step("[z]")
    assert r.done and r.info["invalid_action"] and r.rewards == {"row": -1.0, "col": 0.0}


def test_general_matrix_game() -> None:
    A = np.array([[3.0, 0.0], [5.0, 1.0]])
    game = MatrixGame(A, A.T, ["cooperate", "defect"], ["cooperate", "defect"])
    game.reset(0)
    game.step("[defect]")
    assert game.step("cooperate").rewards == {"row": 5.0, "col": 0.0}
    with pytest.raises(ValueError):
        MatrixGame(A, np.zeros((3, 2)))


@pytest.mark.parametrize(
    ("P", "message"),
    [
        ([[0.5, 0.2], [0.8]], "list of lists|square"),
        ([[0.5, 0.2, 0.3], [0.8, 0.5, 0.1]], "square"),
        ([[0.5, 1.2], [-0.2, 0.5]], r"\[0, 1\]"),
        ([[0.5, 0.3], [0.6, 0.5]], r"P\[0\]\[1\] \+ P\[1\]\[0\] must be 1"),
        ("abc", "list of lists|square"),
    ],
)
def test_preference_matrix_validation(P: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_preference_matrix(P)
    assert validate_preference_matrix(COMAL_P).shape == (3, 3)

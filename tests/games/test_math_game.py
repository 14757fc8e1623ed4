"""Boxed-answer math: the answer checker and the (multi-)turn game."""

from __future__ import annotations

from pathlib import Path

import pytest

from games.math_answer import answers_match, evaluate, last_boxed, last_number, normalize
from games.math_game import MathGame, MathProblem, gsm8k_style


@pytest.mark.parametrize(
    ("pred", "truth"),
    [
        ("0.5", "\\frac{1}{2}"),
        ("\\dfrac12", "1/2"),
        ("\\tfrac{3}{4}", "0.75"),
        ("50\\%", "50"),
        ("3\\sqrt{3}/\\pi", "\\frac{3\\sqrt{3}}{\\pi}"),
        ("2\\frac{1}{3}", "7/3"),
        ("-2\\frac{1}{2}", "-2.5"),
        ("x = 4", "4"),
        ("4^\\circ", "4"),
        ("90^{\\circ}", "90"),
        ("12\\text{ cm}", "12"),
        ("$1,000$", "1000"),
        ("(1, \\frac{1}{2})", "(1,0.5)"),
        ("\\left(2, 3\\right)", "(2,3)"),
        ("\\text{(C)}", "C"),
        ("2\\pi", "2 \\pi"),
        ("\\sqrt[3]{27}", "3"),
        ("2^{10}", "1024"),
        ("2 \\cdot 3", "6"),
        ("6 \\div 4", "1.5"),
        ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"),
        ("10.", "10"),
        ("\\text{Monday}", "Monday"),
    ],
)
def test_equivalent_answers(pred: str, truth: str) -> None:
    assert answers_match(pred, truth)


@pytest.mark.parametrize(
    ("pred", "truth"),
    [
        ("3", "4"),
        ("(1,2)", "[1,2]"),
        ("(1,2)", "(1,2,3)"),
        ("", "0"),
        (None, "1"),
        ("1/0", "1"),
        ("10^{100000}", "1"),
        ("\\sqrt{-1}", "1"),
        ("2", "2\\pi"),
        ("\\frac{1}{2", "0.5"),
        ("Tuesday", "Monday"),
    ],
)
def test_different_answers(pred: str | None, truth: str) -> None:
    assert not answers_match(pred, truth)


def test_extraction() -> None:
    assert last_boxed("first \\boxed{1} then \\boxed{\\frac{a}{b}}") == "\\frac{a}{b}"
    assert last_boxed("\\boxed 5$ done") == "5" and last_boxed("\\fbox{7}") == "7"
    assert last_boxed("no box") is None and last_boxed("\\boxed{unclosed") is None
    assert last_number("it costs 1,234.5 dollars, then 7 more") == "7" and last_number("none") is None
    assert evaluate("1+2*3") == 7 and evaluate("(1+2)3") == 9 and evaluate("2^-1") == 0.5
    assert evaluate("import os") is None and evaluate("") is None


def problems() -> list[MathProblem]:
    return [MathProblem("What is 1/2 + 1/4?", "\\frac{3}{4}"), MathProblem("What is 6*7?", "42")]


def test_single_turn_rewards() -> None:
    game = MathGame(problems())
    assert "1/2 + 1/4" in game.reset(0)["solver"] and "\\boxed" in game.observe()
    r = game.step("<think>add</think>The sum is \\boxed{0.75}.")
    assert r.reward == 1.0 and r.done and r.info["success"] and r.info["answer"] == "0.75"
    game.reset(1)
    r = game.step("\\boxed{41}")
    assert r.reward == 0.0 and r.done and not r.info["success"] and not r.info["invalid_action"]


def test_missing_answer_is_penalised_and_think_is_ignored() -> None:
    game = MathGame(problems())
    game.reset(1)
    r = game.step("<think>maybe \\boxed{42}</think> I am not sure.")
    assert r.info["invalid_action"] and r.reward == pytest.approx(-0.1) and r.info["answer"] is None
    game.reset(1)
    assert game.step("").info["invalid_action"]


def test_multi_turn_feedback_and_gsm8k_style() -> None:
    game = gsm8k_style(problems(), turns=3)
    game.reset(1)
    r = game.step("I think it is 41")
    assert r.reward == pytest.approx(-0.1) and not r.done and "Incorrect" in r.observation["solver"]
    r = game.step("so 6*7 = 42")
    assert r.reward == 10.0 and r.done and r.info["success"]
    with pytest.raises(ValueError):
        MathGame([])


def test_gtalign_math_hard_ground_truths(data_dir: Path) -> None:
    game = MathGame.from_gtalign("math-hard")
    assert len(game.problems) == 353
    answers = [p.answer for p in game.problems if p.answer.strip()]
    assert len(answers) == 352  # one row of the set has an empty ground truth
    assert all(answers_match(a, a) for a in answers)
    assert all(answers_match(last_boxed(f"so \\boxed{{{a}}}."), a) for a in answers)
    numeric = sum(evaluate(normalize(a)) is not None for a in answers)
    assert numeric > 300  # most MATH answers are numbers or closed-form expressions
    game.reset(0)
    r = game.step(f"The radius is \\boxed{{{game.problem.answer}}}")
    assert r.info["success"] and r.reward == 1.0

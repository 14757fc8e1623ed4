"""GTAlign utility arithmetic, payoff matrix and welfare functions: spec §1.3, §1.4 and §7.3 numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from games.gtalign_reward import logistic_band, reasoning_penalty, score_output, utilities
from games.payoff import PayoffMatrix, pareto_frontier
from games.welfare import WELFARE, cobb_douglas, get_welfare, linear, nash_product
from tests.games.worked_example import CELLS

TOL = 1e-6  # the spec prints six decimals


def worked_example() -> str:
    """The §1.4 worked example: 498 characters before <response>, a one-word response, 46 words in all."""
    payoff = json.dumps({k: {"LLM": v[0], "user": v[1]} for k, v in CELLS.items()}, indent=4)
    payoff = "{" + " " * 46 + payoff[1:]  # whitespace only: lengthens the reasoning, adds no words
    return (
        f"<thinking>1+1=2</thinking><payoff>{payoff}</payoff><analyze>1+1=2 is correct</analyze>"
        "<response>1+1=\\boxed{2}</response>"
    )


@pytest.mark.parametrize(
    ("n", "lo", "hi", "expected"),
    [
        (1, 20, 500, 0.440),
        (20, 20, 500, 0.458),
        (100, 20, 500, 0.527),
        (260, 20, 500, 0.591),
        (500, 20, 500, 0.458),
        (1000, 20, 500, 0.075),
        (50, 500, 1000, 0.095),
        (100, 500, 1000, 0.118),
        (500, 500, 1000, 0.462),
        (750, 500, 1000, 0.604),
        (1000, 500, 1000, 0.462),
        (2000, 500, 1000, 0.007),
    ],
)
def test_logistic_band_table(n: int, lo: int, hi: int, expected: float) -> None:
    assert logistic_band(n, lo, hi) == pytest.approx(expected, abs=5e-4)


@pytest.mark.parametrize(
    ("chars", "expected"), [(0, 1.0), (250, 0.607), (500, 0.368), (1000, 0.135), (2000, 0.018)]
)
def test_reasoning_penalty_table(chars: int, expected: float) -> None:
    assert reasoning_penalty(chars) == pytest.approx(expected, abs=5e-4)


def test_payoff_matrix_facts() -> None:
    m = PayoffMatrix(CELLS)
    assert m.asymmetry_reward() == pytest.approx(0.75)
    assert sorted(m.pareto_frontier()) == ["DQ_AQ", "DQ_DA"]
    assert m.recommend() == "DQ_AQ"
    assert m.nash_product_choices() == ["DQ_AQ"]
    llm, user = m.bimatrix()
    assert llm.shape == user.shape == (2, 3)
    assert llm[0, 2] == 4.1 and user[0, 0] == 4.1  # DQ_AQ LLM, DQ_DA user
    with pytest.raises(ValueError):
        PayoffMatrix({"DQ_AQ": (1.0, 1.0)})


def test_payoff_transform_steering() -> None:
    m = PayoffMatrix(CELLS).transformed(scale_llm=-2)
    assert (
        m.cells["DQ_AQ"] == (2.1, 4.5) and m.cells["DQ_CQ"] == (1.6, 2.5) and m.cells["DQ_DA"] == (0.8, 4.1)
    )
    u = PayoffMatrix(CELLS).transformed(scale_user=-0.5)
    assert u.cells["VQ_DA"] == (2.0, 0.5) and u.cells["VQ_AQ"] == (3.5, 2.3)


def test_pareto_frontier_generic() -> None:
    pts = {"a": (1, 1), "b": (2, 0), "c": (0.5, 0.5), "d": (1, 1)}
    assert pareto_frontier(pts) == ["a", "b", "d"]  # equal points do not dominate each other


def test_worked_example_judge_1() -> None:
    text = worked_example()
    util, parsed = score_output(text, a_user=1.0)
    assert parsed.fmt == 1 and len(parsed.reasoning) == 498 and len(text.split()) == 46
    assert util is not None
    assert util.user == pytest.approx(0.698901, abs=TOL)
    assert util.llm == pytest.approx(0.768670, abs=TOL)
    assert util.welfare == pytest.approx(0.732956, abs=TOL)
    lin, _ = score_output(text, a_user=1.0, welfare="linear")
    assert lin is not None and lin.welfare == pytest.approx(0.733785, abs=TOL)


@pytest.mark.parametrize(
    ("pareto", "llm", "welfare"),
    [(1.0, 0.904743, 0.795189), (0.5, 0.804743, 0.749957), (0.0, 0.704743, 0.701815)],
)
def test_worked_example_ablation(pareto: float, llm: float, welfare: float) -> None:
    util, _ = score_output(worked_example(), a_user=1.0, variant="ablation", pareto_score=pareto)
    assert util is not None
    assert util.llm == pytest.approx(llm, abs=TOL) and util.welfare == pytest.approx(welfare, abs=TOL)


def test_worked_example_judge_0() -> None:
    util, _ = score_output(worked_example(), a_user=0.0)
    assert util is not None
    assert (util.user, util.llm, util.welfare) == pytest.approx((0.198901, 0.368670, 0.270793), abs=TOL)


def test_unscorable_output_scores_none() -> None:
    util, parsed = score_output("no tags at all", a_user=1.0)
    assert util is None and not parsed.ok


def test_welfare_functions() -> None:
    assert set(WELFARE) == {"cobb_douglas", "linear", "nash_product", "user_only", "llm_only"}
    assert cobb_douglas(0.25, 1.0) == pytest.approx(0.5)
    assert linear(0.2, 0.6) == pytest.approx(0.4)
    assert nash_product(0.5, 0.4) == pytest.approx(0.2)
    assert get_welfare("user_only")(0.3, 0.9) == 0.3 and get_welfare("llm_only")(0.3, 0.9) == 0.9
    np.testing.assert_allclose(cobb_douglas(np.array([1.0, 4.0]), np.array([1.0, 1.0])), [1.0, 2.0])
    with pytest.raises(ValueError):
        get_welfare("max")
    with pytest.raises(ValueError):
        utilities(
            a_user=1,
            a_llm=1,
            fmt=1,
            payoff_reward=0,
            reasoning_chars=0,
            response_words=1,
            output_words=1,
            variant="other",
        )  # type: ignore[arg-type]

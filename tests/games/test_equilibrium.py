"""Equilibrium solvers: zero-sum LP, support enumeration (cross-checked with nashpy), gaps, Kuhn −1/18."""

from __future__ import annotations

from fractions import Fraction

import nashpy
import numpy as np
import pytest

from games.dynamics import COMAL_NASH, COMAL_P
from games.equilibrium import (
    duality_gap,
    exploitability,
    nash_conv,
    solve_zero_sum,
    support_enumeration,
    symmetric_nash,
)
from games.kuhn import normal_form


def test_matching_pennies_and_rps() -> None:
    sol = solve_zero_sum(np.array([[1.0, -1.0], [-1.0, 1.0]]))
    np.testing.assert_allclose(sol.x, [0.5, 0.5], atol=1e-9)
    assert sol.value == pytest.approx(0.0, abs=1e-12)
    rps = np.array([[0, -1, 1], [1, 0, -1], [-1, 1, 0]], dtype=float)
    sol = solve_zero_sum(rps)
    np.testing.assert_allclose(sol.x, [1 / 3] * 3, atol=1e-9)
    assert duality_gap(rps, sol.x, sol.y) == pytest.approx(0.0, abs=1e-9)
    assert duality_gap(rps, np.array([1.0, 0, 0]), np.array([1.0, 0, 0])) == pytest.approx(2.0)


def test_comal_game_nash_by_lp() -> None:
    np.testing.assert_allclose(symmetric_nash(COMAL_P), COMAL_NASH, atol=1e-9)
    assert exploitability(COMAL_P, COMAL_NASH) == pytest.approx(0.0, abs=1e-15)
    pi = np.array([0.2, 0.5, 0.3])
    A = COMAL_P - 0.5
    assert duality_gap(A, pi, pi) == pytest.approx(2 * exploitability(COMAL_P, pi))


def test_zero_sum_value_matches_nashpy_on_random_games() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        m, n = rng.integers(2, 6, size=2)
        A = rng.normal(size=(m, n))
        sol = solve_zero_sum(A)
        x, y = nashpy.Game(A, -A).linear_program()  # nashpy's own LP
        assert sol.value == pytest.approx(float(x @ A @ y), abs=1e-8)
        assert duality_gap(A, sol.x, sol.y) == pytest.approx(0.0, abs=1e-8)


def _same_set(ours: list, theirs: list) -> bool:
    def key(eq: tuple) -> tuple:
        return tuple(np.round(np.concatenate(eq), 7))

    return sorted(map(key, ours)) == sorted(map(key, theirs))


def test_support_enumeration_matches_nashpy_on_random_bimatrix_games() -> None:
    # nashpy's vertex enumeration is the reference: its support enumeration misses some equilibria of
    # random non-square games (it warns "degenerate" and returns none).
    rng = np.random.default_rng(1)
    for _ in range(30):
        m, n = rng.integers(2, 5, size=2)
        A, B = rng.normal(size=(m, n)), rng.normal(size=(m, n))
        ours = support_enumeration(A, B)
        theirs = list(nashpy.Game(A, B).vertex_enumeration())
        assert ours and _same_set(ours, theirs)
        for x, y in ours:
            assert nash_conv(A, B, x, y) == pytest.approx(0.0, abs=1e-9)


def test_support_enumeration_classic_games() -> None:
    # Battle of the sexes: two pure equilibria and one mixed (2/3, 1/3) / (1/3, 2/3).
    A = np.array([[3.0, 0.0], [0.0, 2.0]])
    B = np.array([[2.0, 0.0], [0.0, 3.0]])
    eqs = support_enumeration(A, B)
    assert len(eqs) == 3 and _same_set(eqs, list(nashpy.Game(A, B).vertex_enumeration()))
    # Prisoner's dilemma: unique pure equilibrium (defect, defect).
    pd_a = np.array([[3.0, 0.0], [5.0, 1.0]])
    ((x, y),) = support_enumeration(pd_a, pd_a.T)
    np.testing.assert_allclose(x, [0, 1])
    np.testing.assert_allclose(y, [0, 1])


def test_gtalign_payoff_bimatrix_has_equilibria() -> None:
    from games.payoff import PayoffMatrix

    cells = {
        "DQ_AQ": (4.1, 3.5),
        "DQ_CQ": (3.6, 2.0),
        "DQ_DA": (2.8, 4.1),
        "VQ_AQ": (3.0, 2.8),
        "VQ_CQ": (1.0, 1.3),
        "VQ_DA": (1.0, 1.1),
    }
    llm, user = PayoffMatrix(cells).bimatrix()
    # rows = user type (played by the user), columns = the assistant's action
    eqs = support_enumeration(user, llm)
    assert eqs and _same_set(eqs, list(nashpy.Game(user, llm).vertex_enumeration()))


def test_kuhn_poker_value_is_minus_one_eighteenth() -> None:
    A, rows, cols = normal_form()
    assert A.shape == (27, 64) and len(rows) == 27 and len(cols) == 64
    sol = solve_zero_sum(A)
    assert sol.value == pytest.approx(-1 / 18, abs=1e-9)
    assert Fraction(sol.value).limit_denominator(1000) == Fraction(-1, 18)
    assert duality_gap(A, sol.x, sol.y) == pytest.approx(0.0, abs=1e-9)
    # Player 0 never bets with the Queen in equilibrium (a known property of Kuhn Poker).
    q_bets = sum(p for p, plan in zip(sol.x, rows) if plan[1] == "bet")
    assert q_bets == pytest.approx(0.0, abs=1e-9)

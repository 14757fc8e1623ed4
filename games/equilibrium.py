"""Equilibrium solvers and gap measures for two-player normal-form games.

- solve_zero_sum: maximin strategies and the value by linear programming (scipy HiGHS).
- support_enumeration: all Nash equilibria of a nondegenerate bimatrix game (our own implementation).
- exploitability / duality_gap / nash_conv: how far a strategy profile is from equilibrium.
- symmetric_nash / regularized_nash: the preference-game solutions of spec §3-§4.

Conventions: A[i, j] is the row player's payoff, B[i, j] the column player's. A preference matrix
P[i, j] = P(y_i ≻ y_j) defines the symmetric zero-sum game A = P − 1/2.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy.optimize import linprog, root


@dataclass(frozen=True)
class ZeroSumSolution:
    x: np.ndarray  # row player's maximin strategy
    y: np.ndarray  # column player's minimax strategy
    value: float  # row player's expected payoff at equilibrium


def _maximin(A: np.ndarray) -> tuple[np.ndarray, float]:
    """max_x min_j (xᵀA)_j: variables (x, v), minimise −v s.t. v − (Aᵀx)_j ≤ 0, Σx = 1, x ≥ 0."""
    m, n = A.shape
    c = np.zeros(m + 1)
    c[-1] = -1.0
    a_ub = np.hstack([-A.T, np.ones((n, 1))])
    a_eq = np.hstack([np.ones((1, m)), np.zeros((1, 1))])
    bounds = [(0.0, None)] * m + [(None, None)]
    res = linprog(c, A_ub=a_ub, b_ub=np.zeros(n), A_eq=a_eq, b_eq=[1.0], bounds=bounds, method="highs")
    if not res.success:  # an LP over a simplex is always feasible and bounded
        raise RuntimeError(f"maximin LP failed: {res.message}")
    x = np.clip(res.x[:m], 0.0, None)
    return x / x.sum(), float(res.x[-1])


def solve_zero_sum(A: np.ndarray) -> ZeroSumSolution:
    """Nash equilibrium of the zero-sum game where the row player receives A and the column player −A."""
    A = np.asarray(A, dtype=float)
    x, v = _maximin(A)
    y, _ = _maximin(-A.T)
    return ZeroSumSolution(x=x, y=y, value=v)


def duality_gap(A: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """max_i (Ay)_i − min_j (xᵀA)_j ≥ 0, zero exactly at a Nash equilibrium of the zero-sum game A."""
    A = np.asarray(A, dtype=float)
    return float(np.max(A @ y) - np.min(x @ A))


def nash_conv(A: np.ndarray, B: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """Sum of both players' best-response gains; zero exactly at a Nash equilibrium."""
    A, B = np.asarray(A, dtype=float), np.asarray(B, dtype=float)
    gain_row = np.max(A @ y) - x @ A @ y
    gain_col = np.max(x @ B) - x @ B @ y
    return float(gain_row + gain_col)


def exploitability(P: np.ndarray, pi: np.ndarray) -> float:
    """Preference-game gap e(π) = max_y P(y ≻ π) − 1/2 (spec §0); the duality gap of (π, π) is 2·e(π)."""
    return float(np.max(np.asarray(P, dtype=float) @ np.asarray(pi, dtype=float)) - 0.5)


def kl(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p‖q) = Σ p log(p/q), with 0·log 0 = 0."""
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    mask = p > 0
    return float(np.sum(p[mask] * (np.log(p[mask]) - np.log(q[mask]))))


def symmetric_nash(P: np.ndarray) -> np.ndarray:
    """A Nash policy of the preference game: P(π* ≻ π) ≥ 1/2 for every π."""
    return solve_zero_sum(np.asarray(P, dtype=float) - 0.5).x


def regularized_nash(P: np.ndarray, ref: np.ndarray, beta: float) -> np.ndarray:
    """Unique NE of the β-KL-regularised preference game: π ∝ ref · exp(Pπ / β) (spec §4.1).

    Solved as a root of π − softmax(log ref + Pπ/β) with scipy (hybrid Powell), independently of the
    dynamics that are meant to converge to it.
    """
    P, ref = np.asarray(P, dtype=float), np.asarray(ref, dtype=float)
    log_ref = np.log(ref)

    def target(pi: np.ndarray) -> np.ndarray:
        z = log_ref + P @ pi / beta
        z = np.exp(z - z.max())
        return z / z.sum()

    sol = root(lambda pi: pi - target(pi), ref, method="hybr", tol=1e-14)
    pi = target(sol.x)  # one more application lands exactly on the simplex
    # Judge by the residual: hybr may report "no further improvement" once at machine precision.
    if np.max(np.abs(pi - target(pi))) > 1e-10:
        raise RuntimeError(f"regularized_nash did not converge: {sol.message}")
    return pi


# ---- general two-player games ---------------------------------------------------------------


def _indifferent_strategy(M: np.ndarray, tol: float) -> np.ndarray | None:
    """Mixed strategy s (over M's columns) making every row of M earn the same payoff, or None.

    Solves [M, -1; 1, 0] [s; v] = [0; 1] for a square M (equal-size supports).
    """
    k = M.shape[0]
    system = np.zeros((k + 1, k + 1))
    system[:k, :k] = M
    system[:k, k] = -1.0
    system[k, :k] = 1.0
    rhs = np.zeros(k + 1)
    rhs[k] = 1.0
    try:
        sol = np.linalg.solve(system, rhs)
    except np.linalg.LinAlgError:
        return None
    s = sol[:k]
    if np.any(s < -tol):
        return None
    return np.clip(s, 0.0, None)


def support_enumeration(
    A: np.ndarray, B: np.ndarray, tol: float = 1e-12
) -> list[tuple[np.ndarray, np.ndarray]]:
    """All Nash equilibria of a nondegenerate bimatrix game, by enumerating equal-size supports.

    For supports I (rows) and J (columns) of size k, y on J makes the rows in I indifferent under A and x
    on I makes the columns in J indifferent under B; the pair is an equilibrium if nothing outside the
    supports does better. Degenerate games may have equilibria with unequal supports that this misses.
    """
    A, B = np.asarray(A, dtype=float), np.asarray(B, dtype=float)
    m, n = A.shape
    found: list[tuple[np.ndarray, np.ndarray]] = []
    for k in range(1, min(m, n) + 1):
        for rows in combinations(range(m), k):
            for cols in combinations(range(n), k):
                ys = _indifferent_strategy(A[np.ix_(rows, cols)], tol)
                xs = _indifferent_strategy(B[np.ix_(rows, cols)].T, tol)
                if ys is None or xs is None:
                    continue
                x, y = np.zeros(m), np.zeros(n)
                x[list(rows)], y[list(cols)] = xs, ys
                row_payoffs, col_payoffs = A @ y, x @ B
                scale = 1e-9 * max(1.0, np.abs(A).max(), np.abs(B).max())
                if row_payoffs.max() <= row_payoffs[list(rows)].min() + scale and (
                    col_payoffs.max() <= col_payoffs[list(cols)].min() + scale
                ):
                    found.append((x, y))
    return found

"""Tabular preference-game dynamics reproduce spec §7.1 and §7.2 (numpy float64, deterministic)."""

from __future__ import annotations

import numpy as np
import pytest

from games.dynamics import (
    COMAL,
    COMAL_NASH,
    COMAL_P,
    COMAL_PI0,
    INPO,
    MMD,
    MWU,
    NashMD,
    NashMP,
    OptimisticMWU,
    make_rule,
    run,
)
from games.equilibrium import exploitability, kl, regularized_nash

TOL = 1e-6
PI_TAU = np.array([0.274917, 0.279723, 0.445360])  # regularised NE, β = τ = 0.1, ref = π0


@pytest.fixture(scope="module")
def long_runs() -> dict[str, object]:
    return {
        name: run(make_rule(name), COMAL_P, COMAL_PI0, 10_000)
        for name in ("mwu", "inpo", "mmd", "nash-md", "nash-mp", "comal", "comal-nash-mp")
    }


def e_kl(traj: object, t: int) -> tuple[float, float]:
    return float(traj.exploitability[t]), kl(COMAL_NASH, traj.policies[t])  # type: ignore[attr-defined]


def test_game_facts() -> None:
    np.testing.assert_allclose(COMAL_P @ COMAL_NASH, [0.5, 0.5, 0.5], atol=1e-15)
    assert exploitability(COMAL_P, COMAL_PI0) == pytest.approx(0.14, abs=1e-12)
    assert kl(COMAL_NASH, COMAL_PI0) == pytest.approx(0.12204, abs=1e-5)


def test_mwu_eta_0_1_spirals_out(long_runs: dict) -> None:
    tr = long_runs["mwu"]
    expected = {10: (0.1356, 0.1225), 100: (0.1260, 0.1266), 1000: (0.1613, 0.1708), 10000: (0.2323, 0.9599)}
    for t, (e, d) in expected.items():
        assert e_kl(tr, t) == pytest.approx((e, d), abs=1e-4)  # the spec prints four digits


def test_mwu_eta_1_hugs_the_boundary() -> None:
    tr = run(MWU(eta=1.0), COMAL_P, COMAL_PI0, 10_000)
    assert tr.exploitability[10] == pytest.approx(0.1440, abs=1e-4)
    assert e_kl(tr, 100) == pytest.approx((0.1275, 0.9555), abs=1e-4)
    assert e_kl(tr, 1000) == pytest.approx((0.3649, 5.398), abs=1e-3)
    assert e_kl(tr, 10000) == pytest.approx((0.3993, 19.68), abs=1e-2)
    np.testing.assert_allclose(tr.final, [0.998, 0.002, 0.0], atol=1e-3)


def test_inpo_and_mmd_converge_to_regularized_nash(long_runs: dict) -> None:
    inpo, mmd = long_runs["inpo"], long_runs["mmd"]
    assert inpo.exploitability[10] == pytest.approx(0.1358, abs=1e-4)
    assert e_kl(inpo, 100) == pytest.approx((0.05759, 0.06843), abs=1e-5)
    assert e_kl(inpo, 1000) == pytest.approx((0.02942, 0.02108), abs=1e-5)
    assert mmd.exploitability[10] == pytest.approx(0.1359, abs=1e-4)
    assert mmd.exploitability[100] == pytest.approx(0.05727, abs=1e-5)
    assert mmd.exploitability[1000] == pytest.approx(0.02942, abs=1e-5)
    for tr in (inpo, mmd):
        assert tr.exploitability[10000] == pytest.approx(0.0294139, abs=TOL)
        np.testing.assert_allclose(tr.final, PI_TAU, atol=TOL)


def test_nash_md_limit(long_runs: dict) -> None:
    tr = long_runs["nash-md"]
    assert tr.exploitability[10] == pytest.approx(0.1359, abs=1e-4)
    assert tr.exploitability[100] == pytest.approx(0.05818, abs=1e-5)
    assert tr.exploitability[1000] == pytest.approx(0.02890, abs=1e-5)
    assert tr.exploitability[10000] == pytest.approx(0.0288929, abs=TOL)
    np.testing.assert_allclose(tr.final, [0.274672, 0.278236, 0.447091], atol=TOL)


def test_nash_mp_limit(long_runs: dict) -> None:
    tr = long_runs["nash-mp"]
    assert e_kl(tr, 10) == pytest.approx((0.02822, 0.01806), abs=1e-5)
    assert tr.exploitability[100] == pytest.approx(0.0294139, abs=TOL)
    np.testing.assert_allclose(tr.final, PI_TAU, atol=TOL)


def test_comal_inpo_last_iterate_converges_to_nash(long_runs: dict) -> None:
    tr = long_runs["comal"]
    assert tr.exploitability[10] == pytest.approx(0.1358, abs=1e-4)
    assert tr.exploitability[100] == pytest.approx(0.05759, abs=1e-5)
    assert e_kl(tr, 1000) == pytest.approx((6.32e-3, 4.02e-4), abs=1e-5)
    assert tr.exploitability[5000] == pytest.approx(5.5e-8, abs=1e-9)
    assert tr.exploitability[10000] < 1e-13 and kl(COMAL_NASH, tr.final) < 1e-15  # spec: 1.9e-14, 1.0e-16
    np.testing.assert_allclose(tr.final, [4 / 11, 3 / 11, 4 / 11], atol=1e-12)


def test_comal_nash_mp(long_runs: dict) -> None:
    tr = long_runs["comal-nash-mp"]
    assert tr.exploitability[10] == pytest.approx(0.02822, abs=1e-5)
    assert e_kl(tr, 100) == pytest.approx((1.451e-3, 3.03e-5), abs=1e-6)
    assert tr.exploitability[1000] < 1e-15
    np.testing.assert_allclose(tr.final, COMAL_NASH, atol=1e-14)


def test_comal_resets_reference_every_k_steps() -> None:
    rule = COMAL(inner=INPO(), K=100)
    # Before the first reset at t = 100, COMAL is INPO with the initial reference.
    a, b = run(rule, COMAL_P, COMAL_PI0, 100), run(INPO(), COMAL_P, COMAL_PI0, 100)
    np.testing.assert_array_equal(a.policies, b.policies)
    c = run(rule, COMAL_P, COMAL_PI0, 101).final
    assert not np.allclose(c, run(INPO(), COMAL_P, COMAL_PI0, 101).final)


@pytest.mark.parametrize(
    ("beta", "pi", "e", "d"),
    [
        (0.1, PI_TAU, 0.0294139, None),
        (0.5, [0.181649, 0.431750, 0.386601], 0.11821, 0.10484),
        (0.05, [0.320325, 0.265929, 0.413745], 0.017752, 6.055e-3),
    ],
)
def test_regularized_nash(beta: float, pi: list[float], e: float, d: float | None) -> None:
    star = regularized_nash(COMAL_P, COMAL_PI0, beta)
    np.testing.assert_allclose(star, pi, atol=TOL)
    assert exploitability(COMAL_P, star) == pytest.approx(e, abs=1e-5)
    if d is not None:
        assert kl(COMAL_NASH, star) == pytest.approx(d, abs=1e-5)
    np.testing.assert_allclose(
        run(NashMP(eta=2.0, beta=beta), COMAL_P, COMAL_PI0, 2000).final, star, atol=1e-12
    )


# Spec §7.2: KL(π*_β || π_k) for Nash-MP, and the bound KL(π*_β || π_0)(1 + ηβ)^(−k).
RATE = {
    (0.1, 2.0): {
        1: (6.067e-2, 8.414e-2),
        10: (6.375e-4, 1.631e-2),
        20: (3.569e-6, 2.634e-3),
        40: (1.134e-10, 6.869e-5),
    },
    (0.1, 1.0): {
        1: (8.006e-2, 9.178e-2),
        10: (1.061e-2, 3.893e-2),
        20: (1.083e-3, 1.501e-2),
        40: (1.057e-5, 2.231e-3),
    },
    (0.5, 2.0): {1: (3.937e-3, 8.600e-3), 10: (5.605e-9, 1.680e-5)},
    (0.05, 2.0): {
        1: (8.300e-2, 1.054e-1),
        10: (4.159e-3, 4.472e-2),
        20: (1.272e-4, 1.724e-2),
        40: (1.224e-7, 2.563e-3),
    },
}


@pytest.mark.parametrize(("beta", "eta"), list(RATE))
def test_nash_mp_rate(beta: float, eta: float) -> None:
    star = regularized_nash(COMAL_P, COMAL_PI0, beta)
    tr = run(NashMP(eta=eta, beta=beta), COMAL_P, COMAL_PI0, 40)
    kl0 = kl(star, COMAL_PI0)
    for k in range(1, 41):
        assert kl(star, tr.policies[k]) <= kl0 * (1 + eta * beta) ** -k + 1e-15
    for k, (measured, bound) in RATE[(beta, eta)].items():
        assert kl(star, tr.policies[k]) == pytest.approx(measured, rel=1e-3, abs=1e-15)
        assert kl0 * (1 + eta * beta) ** -k == pytest.approx(bound, rel=1e-3)
    if beta == 0.5:
        assert kl(star, tr.policies[20]) < 1e-14 and kl(star, tr.policies[40]) < 1e-15  # spec: ~1e-15, 0


def test_optimistic_mwu_and_rules_are_valid_distributions() -> None:
    for rule in (MWU(), OptimisticMWU(), INPO(), MMD(), NashMD(), NashMP(), COMAL()):
        tr = run(rule, COMAL_P, COMAL_PI0, 300)
        np.testing.assert_allclose(tr.policies.sum(axis=1), 1.0, atol=1e-12)
        assert np.all(tr.policies >= 0)
    # optimistic MWU damps the MWU cycle on this game
    assert (
        run(OptimisticMWU(), COMAL_P, COMAL_PI0, 5000).exploitability[-1]
        < run(MWU(), COMAL_P, COMAL_PI0, 5000).exploitability[-1]
    )


def test_make_rule_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="unknown algorithm"):
        make_rule("sgd")

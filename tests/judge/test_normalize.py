"""Batch normalisation per data_source on one fixed batch, every mode against hand-computed values.

Batch: source a = [1, 2, 3, 4] (μ 2.5, population σ √1.25), source b = [10, 10] (constant); interleaved.
Whole batch: μ 5, σ² 80/6. Derivations are in the comments; numbers are rounded to 6 decimals.
"""

from __future__ import annotations

import numpy as np
import pytest

from judge.normalize import MODES, normalize

SCORES = [1.0, 2.0, 10.0, 3.0, 4.0, 10.0]
SOURCES = ["a", "a", "b", "a", "a", "b"]


def by_source(values: list[float], b: float) -> list[float]:
    """Place a's four values and b's (equal) value back into the batch order."""
    a = iter(values)
    return [b if s == "b" else next(a) for s in SOURCES]


EXPECTED = {
    # (x − 2.5) / (√1.25 + 1e-6); b: σ 0 -> 1, x − μ = 0
    "zscore": by_source([-1.341640, -0.447213, 0.447213, 1.341640], 0.0),
    # (x − 1) / 3; b constant -> 0
    "minmax": by_source([0.0, 1 / 3, 2 / 3, 1.0], 0.0),
    # winsorised a = [1.03, 2, 3, 3.97], median 2.5, MAD 1.4826·0.985 = 1.460361, tanh((w − 2.5)/MAD/2)
    "robustz": by_source([-0.464709, -0.169538, 0.169538, 0.464709], 0.0),
    # p = (rank − 0.5)/4 = 1/8, 3/8, 5/8, 7/8 -> 2p − 1; b tied at average rank 1.5 -> p ½ -> 0
    "cdf": by_source([-0.75, -0.25, 0.25, 0.75], 0.0),
    # upstream's batch value by position: a's p = 1/8, 3/8, 5/8, 7/8 -> index ⌊5p⌋ = 0, 1, 3, 4 of the
    # sorted batch [1, 2, 3, 4, 10, 10]; b's ties take the last position's p = 3/4 -> index 3 -> 4
    "quantile": by_source([1.0, 2.0, 4.0, 10.0], 4.0),
    # stds + 1e-6 first; a: λ 4/54, μ̃ 4.814815, σ̃ 3.526794; b: λ 2/52, μ̃ 5.192308, σ̃ 3.580575
    # -> (10 − μ̃)/(σ̃ + 1e-6) = 1.342715
    "james": by_source([-1.081666, -0.798123, -0.514579, -0.231035], 1.342715),
    # (x − μ_s) / (σ_batch + 1e-6), σ_batch = √(80/6)
    "decentralize": by_source([-0.410792, -0.136931, 0.136931, 0.410792], 0.0),
    # tanh((x − μ_s)/2)
    "selfadapt": by_source([-0.635149, -0.244919, 0.244919, 0.635149], 0.0),
}


def test_every_mode_has_an_expectation() -> None:
    assert set(EXPECTED) == set(MODES)


@pytest.mark.parametrize("mode", MODES)
def test_mode_on_fixed_batch(mode: str) -> None:
    np.testing.assert_allclose(normalize(SCORES, SOURCES, mode), EXPECTED[mode], atol=2e-6)


def test_groups_do_not_leak() -> None:
    """Changing source b's scores leaves a's normalised scores unchanged (modes that use only the group)."""
    other = [1.0, 2.0, -7.0, 3.0, 4.0, 99.0]
    for mode in ("zscore", "minmax", "robustz", "cdf", "selfadapt"):
        a = [i for i, s in enumerate(SOURCES) if s == "a"]
        np.testing.assert_allclose(normalize(other, SOURCES, mode)[a], normalize(SCORES, SOURCES, mode)[a])


def test_edge_cases() -> None:
    assert normalize([], [], "zscore").size == 0
    assert normalize([0.3], ["x"], "cdf").tolist() == [0.0]
    with pytest.raises(ValueError):
        normalize([1.0], ["x"], "softmax")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        normalize([1.0, 2.0], ["x"], "zscore")

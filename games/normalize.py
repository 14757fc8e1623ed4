"""Batch normalisation of rewards per data_source (spec §1.4 step 6, GTAlign's `gamellm_normalize`).

The pure arithmetic, shared by the judge (`payoff judge score --normalize`, `ScoreRequest.normalize`:
re-exported by judge/normalize.py) and the learner (`learner.reward_normalization`: per optimizer step).

The batch is grouped by data_source; each mode maps a group's scores x to normalised ones, with the
formulas of GTAlign's reward manager (judge/README.md, "Fidelity to GTAlign's reward code"):

zscore        (x − μ_s) / (σ_s + 1e-6), population σ_s, σ_s := 1 when ≤ 1e-6
minmax        (x − min_s) / (max_s − min_s); 0 for a group whose span is below 1e-6
robustz       winsorise at the 1% / 99% quantiles, m = median, MAD = 1.4826·median|x − m| (:= 1 when
              < 1e-6), then tanh((x − m) / MAD / 2)
cdf           mid-rank percentile p = (rank − 0.5) / n (ties share their average rank), then 2p − 1
quantile      a batch value by position: sort the group; x's p = (k + 0.5) / n_s, k the 0-based position of
              the last of x's ties; then the sorted batch's value at index ⌊clip(p, 1e-6, 1 − 1e-6)·(N − 1)⌋
james         James-Stein-style shrinkage, 1e-6 added to each std first: s_s = σ_s + 1e-6, s = σ + 1e-6,
              λ = n_s/(n_s + 50), μ̃ = λμ_s + (1−λ)μ, σ̃ = √(λ s_s² + (1−λ) s²), then (x − μ̃) / (σ̃ + 1e-6)
decentralize  (x − μ_s) / (σ + 1e-6), σ of the whole batch
selfadapt     tanh((x − μ_s) / 2)

μ, σ without a subscript are the whole batch's (population σ). Invariants: output order is input order;
a group's zscore / minmax / robustz / cdf / selfadapt values depend on that group alone; every output is
finite for finite input. Arithmetic is float64 (upstream's float32 differs by ~1e-7); robustz's quantiles
use numpy's default linear interpolation, as upstream's do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np
from scipy.stats import rankdata

Mode = Literal["zscore", "minmax", "robustz", "cdf", "quantile", "james", "decentralize", "selfadapt"]
MODES: tuple[str, ...] = get_args(Mode)
STD_EPS = 1e-6
JAMES_PRIOR = 50.0


def _std(x: np.ndarray) -> float:
    s = float(np.std(x))
    return 1.0 if s <= STD_EPS else s


def _percentiles(x: np.ndarray) -> np.ndarray:
    return (rankdata(x, method="average") - 0.5) / len(x)


def _quantile(g: np.ndarray, batch_sorted: np.ndarray) -> np.ndarray:
    """Each x's position p in its sorted group (the last of its ties, as upstream's np.interp over the
    sorted group picks), mapped to the sorted batch's value at index ⌊p·(N − 1)⌋."""
    last_of_ties = np.searchsorted(np.sort(g), g, side="right") - 1
    p = np.clip((last_of_ties + 0.5) / len(g), 1e-6, 1 - 1e-6)
    return batch_sorted[(p * (len(batch_sorted) - 1)).astype(np.int64)]


def _james(g: np.ndarray, mu_all: float, sd_all: float) -> np.ndarray:
    lam = len(g) / (len(g) + JAMES_PRIOR)
    mu_t = lam * float(np.mean(g)) + (1 - lam) * mu_all
    sd_g = float(np.std(g)) + STD_EPS
    sd_t = float(np.sqrt(lam * sd_g**2 + (1 - lam) * sd_all**2))
    return (g - mu_t) / (sd_t + STD_EPS)


def _robustz(x: np.ndarray) -> np.ndarray:
    lo, hi = np.quantile(x, [0.01, 0.99])
    w = np.clip(x, lo, hi)
    m = float(np.median(w))
    mad = 1.4826 * float(np.median(np.abs(w - m)))
    if mad < STD_EPS:
        mad = 1.0
    return np.tanh((w - m) / mad / 2.0)


def normalize(scores: Sequence[float], sources: Sequence[str], mode: Mode) -> np.ndarray:
    """Normalised scores, in input order."""
    if mode not in MODES:
        raise ValueError(f"unknown normalisation {mode!r}; choose from {', '.join(MODES)}")
    x = np.asarray(scores, dtype=np.float64)
    src = np.asarray(list(sources), dtype=object)
    if x.shape != src.shape:
        raise ValueError(f"{len(x)} scores but {len(src)} sources")
    out = np.zeros_like(x)
    if x.size == 0:
        return out
    mu_all, sd_all = float(np.mean(x)), float(np.std(x)) + STD_EPS
    batch_sorted = np.sort(x)
    for s in dict.fromkeys(src.tolist()):
        idx = np.flatnonzero(src == s)
        g = x[idx]
        mu = float(np.mean(g))
        if mode == "zscore":
            y = (g - mu) / (_std(g) + STD_EPS)
        elif mode == "minmax":
            span = float(g.max() - g.min())
            y = (g - g.min()) / span if span >= STD_EPS else np.zeros_like(g)
        elif mode == "robustz":
            y = _robustz(g)
        elif mode == "cdf":
            y = 2.0 * _percentiles(g) - 1.0
        elif mode == "quantile":
            y = _quantile(g, batch_sorted)
        elif mode == "james":
            y = _james(g, mu_all, sd_all)
        elif mode == "decentralize":
            y = (g - mu) / sd_all
        else:  # selfadapt
            y = np.tanh((g - mu) / 2.0)
        out[idx] = y
    return out

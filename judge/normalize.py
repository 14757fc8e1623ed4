"""Batch normalisation of rewards per data_source (spec §1.4 step 6, GTAlign's `gamellm_normalize`).

The batch is grouped by data_source; each mode maps a group's scores x to normalised ones:

zscore        (x − μ_s) / (σ_s + 1e-6), population σ_s, σ_s := 1 when ≤ 1e-6
minmax        (x − min_s) / (max_s − min_s); 0 for a constant group
robustz       winsorise at the 1% / 99% quantiles, m = median, MAD = 1.4826·median|x − m| (:= 1 when
              < 1e-6), then tanh((x − m) / MAD / 2)
cdf           mid-rank percentile p = (rank − 0.5) / n (ties share their average rank), then 2p − 1
quantile      the group's p (as in cdf) mapped to the p-quantile of the whole batch (linear interpolation)
james         James-Stein-style shrinkage: μ̃ = λμ_s + (1−λ)μ, σ̃² = λσ_s² + (1−λ)σ², λ = n_s/(n_s + 50),
              then (x − μ̃) / (σ̃ + 1e-6) with the σ floor of zscore (μ, σ² of the whole batch)
decentralize  (x − μ_s) / (σ + 1e-6), σ of the whole batch (floored like zscore)
selfadapt     tanh((x − μ_s) / 2)

Quantiles use numpy's default linear interpolation.
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
    mu_all, var_all = float(np.mean(x)), float(np.var(x))
    for s in dict.fromkeys(src.tolist()):
        idx = np.flatnonzero(src == s)
        g = x[idx]
        mu = float(np.mean(g))
        if mode == "zscore":
            y = (g - mu) / (_std(g) + STD_EPS)
        elif mode == "minmax":
            span = float(g.max() - g.min())
            y = (g - g.min()) / span if span > 0 else np.zeros_like(g)
        elif mode == "robustz":
            y = _robustz(g)
        elif mode == "cdf":
            y = 2.0 * _percentiles(g) - 1.0
        elif mode == "quantile":
            y = np.quantile(x, _percentiles(g))
        elif mode == "james":
            lam = len(g) / (len(g) + JAMES_PRIOR)
            mu_t = lam * mu + (1 - lam) * mu_all
            sd_t = float(np.sqrt(lam * np.var(g) + (1 - lam) * var_all))
            y = (g - mu_t) / ((1.0 if sd_t <= STD_EPS else sd_t) + STD_EPS)
        elif mode == "decentralize":
            y = (g - mu) / (_std(x) + STD_EPS)
        else:  # selfadapt
            y = np.tanh((g - mu) / 2.0)
        out[idx] = y
    return out

"""Tabular preference-game dynamics (spec §3, §4.2), with exact expectations w_t = P·π_t.

Every rule updates log-probabilities; `_normalize` is the spec's norm(l) = exp(l − max l)/Σ in log
space, so runs reproduce spec §7 to ~1e-12. One call of `step` = one "t" of the spec's tables.

    rule = make_rule("comal")                 # or MWU(eta=0.1), INPO(...), COMAL(inner=NashMP(), K=20)
    traj = run(rule, P, pi0, iters=1000)      # Trajectory: policies (iters+1, n), exploitability
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from games.equilibrium import exploitability

# COMAL's synthetic 3-action game (spec §3.4): P[i, j] = P(row ≻ col), actions (a, b, c).
COMAL_P = np.array([[0.5, 0.1, 0.8], [0.9, 0.5, 0.1], [0.2, 0.9, 0.5]])
COMAL_PI0 = np.array([0.2, 0.5, 0.3])
COMAL_NASH = np.array([4 / 11, 3 / 11, 4 / 11])


def _normalize(logits: np.ndarray) -> np.ndarray:
    """Log of norm(l) = exp(l − max l) / Σ exp(l − max l)."""
    z = logits - logits.max()
    return z - np.log(np.exp(z).sum())


@dataclass
class State:
    """Current policy and reference (magnet) policy, both as normalised log-probabilities."""

    logp: np.ndarray
    ref: np.ndarray
    t: int = 0
    prev_w: np.ndarray | None = None  # last win-rate vector (optimistic MWU)

    @property
    def pi(self) -> np.ndarray:
        return np.exp(self.logp)


class Rule(ABC):
    """One update rule; `step` maps π_t to π_{t+1} (and may touch State's other fields)."""

    name: str = "rule"

    @abstractmethod
    def step(self, P: np.ndarray, s: State) -> np.ndarray: ...


@dataclass
class MWU(Rule):
    """Multiplicative weights / ideal SPPO / online Iter-IPO: log π += η w."""

    eta: float = 0.1
    name: str = "MWU"

    def step(self, P: np.ndarray, s: State) -> np.ndarray:
        return _normalize(s.logp + self.eta * (P @ s.pi))


@dataclass
class OptimisticMWU(Rule):
    """log π += η (2 w_t − w_{t−1}); the first step uses w_{−1} = w_0 (a plain MWU step)."""

    eta: float = 0.1
    name: str = "OMWU"

    def step(self, P: np.ndarray, s: State) -> np.ndarray:
        w = P @ s.pi
        prev = w if s.prev_w is None else s.prev_w
        s.prev_w = w
        return _normalize(s.logp + self.eta * (2 * w - prev))


@dataclass
class INPO(Rule):
    """Online mirror descent on the τ-regularised game: (1−ητ) log π + ητ log π_ref + η w."""

    eta: float = 0.1
    tau: float = 0.1
    name: str = "INPO"

    def step(self, P: np.ndarray, s: State) -> np.ndarray:
        et = self.eta * self.tau
        return _normalize((1 - et) * s.logp + et * s.ref + self.eta * (P @ s.pi))


@dataclass
class MMD(Rule):
    """Magnetic mirror descent: [log π + ητ log π_ref + η w] / (1 + ητ)."""

    eta: float = 0.1
    tau: float = 0.1
    name: str = "MMD"

    def step(self, P: np.ndarray, s: State) -> np.ndarray:
        et = self.eta * self.tau
        return _normalize((s.logp + et * s.ref + self.eta * (P @ s.pi)) / (1 + et))


@dataclass
class NashMD(Rule):
    """Nash-MD: geometric mixture π^μ ∝ π^{1−ηβ} π_ref^{ηβ}, then log π^μ + η P(·≻π^μ)."""

    eta: float = 0.1
    beta: float = 0.1
    name: str = "Nash-MD"

    def step(self, P: np.ndarray, s: State) -> np.ndarray:
        eb = self.eta * self.beta
        mix = _normalize((1 - eb) * s.logp + eb * s.ref)
        return _normalize(mix + self.eta * (P @ np.exp(mix)))


@dataclass
class NashMP(Rule):
    """Nash mirror prox: an extrapolation half-step, then the update using the half-step's win rates."""

    eta: float = 2.0
    beta: float = 0.1
    name: str = "Nash-MP"

    def step(self, P: np.ndarray, s: State) -> np.ndarray:
        eb = self.eta * self.beta
        half = _normalize((s.logp + eb * s.ref + self.eta * (P @ s.pi)) / (1 + eb))
        return _normalize((s.logp + eb * s.ref + self.eta * (P @ np.exp(half))) / (1 + eb))


@dataclass
class COMAL(Rule):
    """Conceptual prox: run `inner` on the regularised game and move the magnet, π_ref ← π_t, whenever
    t mod K == 0 (so the first block uses the initial reference)."""

    inner: Rule = field(default_factory=INPO)
    K: int = 100
    name: str = "COMAL"

    def step(self, P: np.ndarray, s: State) -> np.ndarray:
        if s.t % self.K == 0:
            s.ref = s.logp.copy()
        return self.inner.step(P, s)


@dataclass(frozen=True)
class Trajectory:
    name: str
    policies: np.ndarray  # (iters + 1, n): π_0 … π_T
    exploitability: np.ndarray  # (iters + 1,)

    @property
    def final(self) -> np.ndarray:
        return self.policies[-1]


def run(
    rule: Rule,
    P: np.ndarray,
    pi0: np.ndarray,
    iters: int,
    ref: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Trajectory:
    """Iterate `rule` from π_0 for `iters` steps; ref defaults to π_0. `progress(t, iters)` is called
    every 1% of the run."""
    P = np.asarray(P, dtype=float)
    pi0 = np.asarray(pi0, dtype=float)
    state = State(logp=np.log(pi0), ref=np.log(pi0 if ref is None else np.asarray(ref, dtype=float)))
    policies = np.empty((iters + 1, len(pi0)))
    policies[0] = pi0
    every = max(1, iters // 100)
    for t in range(iters):
        state.t = t
        state.logp = rule.step(P, state)
        policies[t + 1] = state.pi
        if progress is not None and ((t + 1) % every == 0 or t + 1 == iters):
            progress(t + 1, iters)
    gaps = np.max(policies @ P.T, axis=1) - 0.5
    return Trajectory(rule.name, policies, gaps)


# Spec §7.1 settings; names are what the CLI's --algo accepts.
RULES: dict[str, Callable[[], Rule]] = {
    "mwu": lambda: MWU(eta=0.1),
    "omwu": lambda: OptimisticMWU(eta=0.1),
    "inpo": lambda: INPO(eta=0.1, tau=0.1),
    "mmd": lambda: MMD(eta=0.1, tau=0.1),
    "nash-md": lambda: NashMD(eta=0.1, beta=0.1),
    "nash-mp": lambda: NashMP(eta=2.0, beta=0.1),
    "comal": lambda: COMAL(inner=INPO(eta=0.1, tau=0.1), K=100, name="COMAL(INPO)"),
    "comal-nash-mp": lambda: COMAL(inner=NashMP(eta=2.0, beta=0.1), K=20, name="COMAL(Nash-MP)"),
}


def make_rule(name: str) -> Rule:
    try:
        return RULES[name.lower()]()
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; choose from {', '.join(RULES)}") from None


__all__ = [
    "COMAL",
    "COMAL_NASH",
    "COMAL_P",
    "COMAL_PI0",
    "INPO",
    "MMD",
    "MWU",
    "RULES",
    "NashMD",
    "NashMP",
    "OptimisticMWU",
    "Rule",
    "State",
    "Trajectory",
    "exploitability",
    "make_rule",
    "run",
]

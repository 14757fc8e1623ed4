"""Advantage estimators: GAE / T-PPO's extended GAE, GRPO and RLOO group baselines, GRL group filtering,
role-conditioned normalisation for two-role games. Pure torch/numpy on small tensors; no model here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch


def egae(
    rewards: torch.Tensor, values: torch.Tensor, finished: bool, gamma: float = 1.0, lam: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over one response's tokens (spec §2.3); returns (advantages, returns).

    Finished: V(s_T) := 0. Unfinished (T-PPO window ended): the successor state does not exist yet and
    EGAE assumes V(s_l) ≈ V(s_{l-1}), so the last delta is r + γV(s_{l-1}) − V(s_{l-1}).
    """
    t = rewards.shape[0]
    # a short sequential scan: done on the host in float64 (on a GPU it would sync once per token)
    v = values.detach().to("cpu", torch.float64)
    r = rewards.detach().to("cpu", torch.float64)
    nxt = torch.zeros(t, dtype=torch.float64)
    if t > 1:
        nxt[:-1] = v[1:]
    if not finished:
        nxt[-1] = v[-1]
    delta = r + gamma * nxt - v
    adv = torch.zeros(t, dtype=torch.float64)
    run = 0.0
    for i in range(t - 1, -1, -1):
        run = float(delta[i]) + gamma * lam * run
        adv[i] = run
    return adv.to(values.device, values.dtype), (adv + v).to(values.device, values.dtype)


def group_advantages(
    rewards: Sequence[float], groups: Sequence[str], mode: str = "grpo", eps: float = 1e-6
) -> list[float]:
    """GRPO: (r − mean_g) / (std_g + eps); RLOO: r − mean of the *other* members; 'mean': r − mean_g."""
    by: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        by[g].append(i)
    out = [0.0] * len(rewards)
    for idx in by.values():
        rs = torch.tensor([rewards[i] for i in idx], dtype=torch.float64)
        n = len(idx)
        for k, i in enumerate(idx):
            if mode == "rloo":
                out[i] = float(rs[k] - (rs.sum() - rs[k]) / (n - 1)) if n > 1 else 0.0
            elif mode == "grpo":
                std = float(rs.std(unbiased=False)) if n > 1 else 0.0
                out[i] = float(rs[k] - rs.mean()) / (std + eps)
            elif mode == "mean":
                out[i] = float(rs[k] - rs.mean())
            else:
                raise ValueError(f"unknown group baseline {mode!r}")
    return out


def filter_groups_by_std(
    rewards: Sequence[float], groups: Sequence[str], keep_ratio: float, reverse: bool = False
) -> list[int]:
    """GRL: keep the top `keep_ratio` of groups by within-group reward std ('std_rev' keeps the lowest);
    returns the indices of the samples kept."""
    by: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        by[g].append(i)
    stds = {
        g: float(torch.tensor([rewards[i] for i in idx], dtype=torch.float64).std(unbiased=False))
        for g, idx in by.items()
    }
    order = sorted(by, key=lambda g: stds[g], reverse=not reverse)
    n_keep = max(1, round(len(order) * keep_ratio))
    return sorted(i for g in order[:n_keep] for i in by[g])


def role_conditioned(advantages: Sequence[float], roles: Sequence[str], eps: float = 1e-6) -> list[float]:
    """SPIRAL-style: normalise advantages within each role, so one role's reward scale (e.g. the
    attacker's) does not swamp the other's when one policy plays both."""
    by: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(roles):
        by[r].append(i)
    out = list(advantages)
    for idx in by.values():
        a = torch.tensor([advantages[i] for i in idx], dtype=torch.float64)
        std = float(a.std(unbiased=False)) if len(idx) > 1 else 0.0
        for k, i in enumerate(idx):
            out[i] = float(a[k] - a.mean()) / (std + eps) if len(idx) > 1 else float(a[k])
    return out

"""Loss functions. Token-level ones take [B, T] tensors with a 0/1 mask; sequence-level preference losses
take summed response log-probs [P] for chosen (w) and rejected (l) responses. Spec: ALGORITHMS §2–4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token-level mean over the masked tokens of the whole batch (DAPO/T-PPO style)."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def ppo_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    behav_logp: torch.Tensor | None = None,
    tis_cap: float | None = 2.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped PPO surrogate with clip-higher, plus truncated importance sampling for stale tokens.

    `old_logp` is the proximal policy (the learner's weights before this update); `behav_logp` the
    logprobs the rollout engine recorded when it sampled (possibly several versions older). The TIS
    weight min(π_old/π_behav, cap) corrects the off-policy gap without letting it explode.
    """
    ratio = torch.exp(logp - old_logp)
    surr = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip_low, 1 + clip_high) * adv)
    if behav_logp is not None:
        w = torch.exp(old_logp - behav_logp).detach()
        surr = surr * (torch.clamp(w, max=tis_cap) if tis_cap else w)
    loss = -masked_mean(surr, mask)
    with torch.no_grad():
        clipped = ((ratio < 1 - clip_low) | (ratio > 1 + clip_high)).float()
        stats = {
            "clip_frac": float(masked_mean(clipped, mask)),
            "approx_kl": float(masked_mean(old_logp - logp, mask)),
        }
    return loss, stats


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip: float | None = 0.5,
) -> torch.Tensor:
    """Clipped value loss (0.5 · max of the two squared errors)."""
    err = (values - returns) ** 2
    if clip is not None:
        clipped = old_values + torch.clamp(values - old_values, -clip, clip)
        err = torch.maximum(err, (clipped - returns) ** 2)
    return 0.5 * masked_mean(err, mask)


def entropy(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    logp = F.log_softmax(logits.float(), -1)
    return masked_mean(-(logp.exp() * logp).sum(-1), mask)


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Low-variance unbiased KL(π‖π_ref) estimator (k3)."""
    d = ref_logp - logp
    return masked_mean(torch.exp(d) - d - 1, mask)


# ------------------------------------------------------------------ preference-game losses (§3.3, §4.2)
def dpo_loss(pw, pl, ref_w, ref_l, beta: float = 0.1) -> torch.Tensor:
    return -F.logsigmoid(beta * ((pw - ref_w) - (pl - ref_l))).mean()


def ipo_loss(pw, pl, ref_w, ref_l, tau: float = 0.1) -> torch.Tensor:
    return (((pw - ref_w) - (pl - ref_l)) - 1 / (2 * tau)).pow(2).mean()


def inpo_loss(pw, pl, ref_w, ref_l, last_w, last_l, eta: float, tau: float) -> torch.Tensor:
    """(log π(yw)/π(yl) − ητ log πref(yw)/πref(yl) − (1−ητ) log πt(yw)/πt(yl) − η/2)²."""
    r = eta * tau
    h = (pw - pl) - r * (ref_w - ref_l) - (1 - r) * (last_w - last_l)
    return (h - eta / 2).pow(2).mean()


def comal_code_loss(
    pw, pl, ref_w, ref_l, last_w, last_l, eta_c: float = 0.002, tau_eta_ratio: float = 1 / 3
) -> torch.Tensor:
    """COMAL's coded form: h(y) = log πθ − r log πref − (1−r) log πt; (h(yw) − h(yl) − 1/(2η_c))².
    COMAL = this loss + resetting π_ref to the current policy every few iterations (the trainer does)."""
    r = tau_eta_ratio
    hw = pw - r * ref_w - (1 - r) * last_w
    hl = pl - r * ref_l - (1 - r) * last_l
    return (hw - hl - 1 / (2 * eta_c)).pow(2).mean()


def sppo_loss(logp, last_logp, win_rate, eta: float) -> torch.Tensor:
    """Σ over responses of (log πθ(y)/πt(y) − η(P̂(y ≻ πt) − 1/2))²."""
    return (logp - last_logp - eta * (win_rate - 0.5)).pow(2).mean()


def nash_mp_loss(
    logp, last_logp, ref_logp, win_rate, group: torch.Tensor, eta: float, beta: float
) -> torch.Tensor:
    """Sample form of one Nash-MP prox step: regress log πθ(y) onto its closed-form target
    [log πt + ηβ log πref + η P̂(y ≻ opponent)]/(1+ηβ). The target holds up to a per-prompt constant
    (the softmax normaliser), so the residual is centred within each prompt's group (`group`: int ids)."""
    target = (last_logp + eta * beta * ref_logp + eta * win_rate) / (1 + eta * beta)
    diff = logp - target
    n = int(group.max()) + 1
    counts = torch.zeros(n, dtype=diff.dtype).index_add(0, group, torch.ones_like(diff))
    means = torch.zeros(n, dtype=diff.dtype).index_add(0, group, diff) / counts.clamp(min=1)
    return (diff - means[group]).pow(2).mean()

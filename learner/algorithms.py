"""One loss per algorithm for a TrainBatch. The trainer owns models and optimizers; this file only says
how a batch becomes a scalar loss (and a few statistics).
"""

from __future__ import annotations

from collections import defaultdict

import torch

from learner import losses
from learner.advantages import egae, filter_groups_by_std, group_advantages, role_conditioned
from learner.batch import TrainBatch
from learner.forward import token_logprobs
from learner.forward import values as critic_values
from services.jobspec import PREFERENCE_ALGORITHMS, TWO_ROLE_ALGORITHMS, Hyper

CRITIC_ALGORITHMS = frozenset({"ppo", "tppo"})


def needs_critic(algorithm: str) -> bool:
    return algorithm in CRITIC_ALGORITHMS


def needs_reference(algorithm: str, hyper: Hyper) -> bool:
    return algorithm in PREFERENCE_ALGORITHMS or hyper.kl_coef > 0


def policy_gradient_loss(
    algorithm: str, policy, batch: TrainBatch, hyper: Hyper, critic=None, ref=None
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO / T-PPO (critic + EGAE), GRPO / RLOO (group baselines), GPO / self-red-team (role-conditioned
    group baselines). The proximal policy is the behaviour policy recorded by the engine, corrected for
    staleness by truncated importance sampling inside the clip."""
    logp, logits, kept = token_logprobs(policy, batch, with_logits=True)
    mask = batch.mask
    stats: dict[str, float] = {}
    if algorithm in CRITIC_ALGORITHMS:
        adv, vloss = _critic_advantages(critic, batch, hyper, stats)
    else:
        mode = "rloo" if algorithm == "rloo" else "grpo"
        seq = group_advantages(batch.seq_reward.tolist(), batch.groups, mode)
        if algorithm in TWO_ROLE_ALGORITHMS:
            seq = role_conditioned(seq, batch.roles)
        adv = torch.tensor(seq, dtype=torch.float32, device=mask.device)[:, None].expand_as(mask)
        vloss = None
        if hyper.group_filter_ratio < 1:  # GRL: train only on the groups whose rewards vary most
            keep = filter_groups_by_std(batch.seq_reward.tolist(), batch.groups, hyper.group_filter_ratio)
            rows = torch.zeros(len(batch), device=mask.device)
            rows[keep] = 1.0
            mask = mask * rows[:, None]
            stats["groups_kept"] = float(len(set(batch.groups[i] for i in keep)))
    # Decoupled PPO: the proximal policy is the learner's own weights before this update (one epoch per
    # batch, so ratio = 1 at the start) and the gap to the stale behaviour policy that sampled the tokens
    # is corrected by truncated importance sampling.
    loss, pstats = losses.ppo_policy_loss(
        logp,
        logp.detach(),
        adv.detach(),
        mask,
        hyper.clip_ratio_low,
        hyper.clip_ratio_high,
        behav_logp=batch.behav_logp,
        tis_cap=hyper.tis_cap,
    )
    stats.update(pstats)
    if hyper.entropy_coef:
        ent = losses.entropy(logits, mask[kept])
        loss = loss - hyper.entropy_coef * ent
        stats["entropy"] = float(ent)
    if hyper.kl_coef and ref is not None:
        with torch.no_grad():
            ref_logp = token_logprobs(ref, batch)
        kl = losses.kl_k3(logp, ref_logp, mask)
        loss = loss + hyper.kl_coef * kl
        stats["kl"] = float(kl)
    if vloss is not None:
        loss = loss + vloss
        stats["value_loss"] = float(vloss.detach())
    stats["policy_loss"] = float(loss.detach())
    return loss, stats


def _critic_advantages(critic, batch: TrainBatch, hyper: Hyper, stats: dict):
    """EGAE per trajectory on the generated tokens; critic trained on finished trajectories only (T-PPO)."""
    values = critic_values(critic, batch)  # V(prefix ≤ t) for predicting token t+1, at trained t
    adv = torch.zeros_like(batch.mask)
    returns = torch.zeros_like(batch.mask)
    for i in range(len(batch)):
        pos = batch.mask[i].nonzero().squeeze(-1)
        if pos.numel() == 0:
            continue
        a, r = egae(
            batch.rewards[i, pos].detach(),
            values[i, pos].detach(),
            bool(batch.finished[i]),
            hyper.gamma,
            hyper.lam,
        )
        adv[i, pos], returns[i, pos] = a, r
    vmask = batch.mask * batch.finished[:, None].float()
    vloss = losses.value_loss(values, values.detach(), returns.detach(), vmask) if vmask.sum() else None
    stats["adv_mean"] = float(losses.masked_mean(adv, batch.mask))
    return adv, vloss


def preference_pairs(batch: TrainBatch) -> list[tuple[int, int]]:
    """Per group: chosen = best reward, rejected = second best (COMAL as coded); ties give no pair."""
    by: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(batch.groups):
        by[g].append(i)
    pairs = []
    for idx in by.values():
        ranked = sorted(idx, key=lambda i: float(batch.seq_reward[i]), reverse=True)
        if len(ranked) >= 2 and float(batch.seq_reward[ranked[0]]) > float(batch.seq_reward[ranked[1]]):
            pairs.append((ranked[0], ranked[1]))
    return pairs


def preference_loss(algorithm: str, policy, ref, batch: TrainBatch, hyper: Hyper):
    """INPO / COMAL / IPO / DPO on (chosen, rejected) pairs; SPPO / Nash-MP on every response with its
    in-group win rate. Sequence log-probs sum over trained tokens; π_t is the behaviour policy."""
    logp = (token_logprobs(policy, batch) * batch.mask).sum(-1)
    with torch.no_grad():
        ref_lp = (token_logprobs(ref, batch) * batch.mask).sum(-1)
    last = (batch.behav_logp * batch.mask).sum(-1)
    if algorithm in ("sppo", "nash_mp"):
        win, group = _win_rates(batch)
        if algorithm == "sppo":
            loss = losses.sppo_loss(logp, last, win, hyper.eta)
        else:
            loss = losses.nash_mp_loss(logp, last, ref_lp, win, group, hyper.eta, hyper.beta)
        return loss, {"policy_loss": float(loss.detach())}
    pairs = preference_pairs(batch)
    if not pairs:
        return None, {"pairs": 0.0}
    w = torch.tensor([p[0] for p in pairs])
    lo = torch.tensor([p[1] for p in pairs])
    if algorithm == "dpo":
        loss = losses.dpo_loss(logp[w], logp[lo], ref_lp[w], ref_lp[lo], hyper.beta)
    elif algorithm == "ipo":
        loss = losses.ipo_loss(
            logp[w], logp[lo], last[w], last[lo], hyper.beta
        )  # reference = previous iterate
    else:  # inpo, comal (COMAL differs by resetting the reference model, which the trainer does)
        loss = losses.inpo_loss(
            logp[w], logp[lo], ref_lp[w], ref_lp[lo], last[w], last[lo], hyper.eta, hyper.beta
        )
    return loss, {"policy_loss": float(loss.detach()), "pairs": float(len(pairs))}


def _win_rates(batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """P̂(y ≻ group) from rewards: 1 per member it beats, 1/2 per tie, averaged over the others."""
    names = {g: k for k, g in enumerate(dict.fromkeys(batch.groups))}
    group = torch.tensor([names[g] for g in batch.groups])
    r = batch.seq_reward
    win = torch.zeros(len(batch))
    for i in range(len(batch)):
        others = [j for j in range(len(batch)) if group[j] == group[i] and j != i]
        if others:
            win[i] = sum(1.0 if r[i] > r[j] else 0.5 if r[i] == r[j] else 0.0 for j in others) / len(others)
        else:
            win[i] = 0.5
    return win, group


def is_preference(algorithm: str) -> bool:
    return algorithm in PREFERENCE_ALGORITHMS

"""Per-data-source normalisation of sequence rewards over one optimizer step (`learner.reward_normalization`).

GTAlign trains on a mix of data sources and z-scores each sample's welfare against the samples of its
data_source in the training batch (its full_zscore recipe, verl's `gamellm_normalize` reward manager). In
payoff the judge scores one episode at a time inside a rollout replica, so that batch exists only here: the
trainer calls `apply` on each step's collated batch, after a sequence's T-PPO windows are merged into one
row and before any advantage, return, group baseline or preference pair is computed. The arithmetic is
games/normalize.py's, the same as the judge's `--normalize`.

Invariants
- Raw reward first: `apply` returns the batch's raw `reward_mean` (finished rows, computed as before), and
  the trainer's per-source metrics read the trajectories, which are never changed.
- Finished rows only: only they carry a reward. An unfinished T-PPO window's token rewards (all zero) and
  seq_reward stay bit-identical and enter no statistic; the mask is never touched, so the policy loss still
  covers window tokens only, the critic still trains on finished rows only, EGAE still bootstraps a window
  from the critic.
- Each sequence once: the trainer merges windows first (learner/batch.py `merge_segments`), and finished
  rows are keyed by (episode_id, role), so a sequence that reached one batch twice counts once and both its
  rows get its one normalised value.
- Groups: data_source, else the env name ("unknown" without either); a role other than the default
  "policy" joins the key, so a two-role game never pools an attacker's rewards with a defender's. A GRPO
  prompt group lies within one data_source.
- What changes: seq_reward := y, the normalised value, and (y − raw) is added to the token reward at the
  row's last trained position (where rollout/ writes the terminal reward), so the token rewards still sum
  to seq_reward when they did before.
- "none" changes nothing: the batch stays bit-identical to the path without this module.

With the algorithms
- PPO / T-PPO: advantages and the critic's returns are on the normalised scale, every source on one scale.
  With zscore a source with a single finished sequence in the step (or constant rewards) gets 0, upstream's
  σ := 1 rule: a T-PPO step should hold several finished sequences per source (`batch_size`, `batch_tokens`);
  `reward_norm_lone` counts the sequences alone in their group.
- GRPO: (r − mean_g) / (std_g + ε) per prompt group is invariant to an affine map of the whole group, and
  zscore, minmax, james and decentralize are affine per data_source, so with GRPO they change advantages
  only through ε (relative to the source's spread) — GRPO already normalises per prompt; the non-affine
  modes (robustz, cdf, quantile, selfadapt) reshape the rewards before the baseline. RLOO
  (r − mean of the others) is rescaled by 1 / σ_s per source, so the sources weigh equally. GRL's group
  filter compares groups' reward stds on the normalised scale.
- Preference losses use the order of rewards within a group; every mode is monotone within a source
  (quantile and cdf may merge near-ties).
"""

from __future__ import annotations

import numpy as np
import torch

from games.normalize import normalize
from learner.batch import TrainBatch
from services.jobspec import RewardNormalization
from services.schemas import Trajectory


def group_key(t: Trajectory) -> str:
    """The normalisation group of a trajectory: its data_source (else env), plus a non-default role."""
    source = t.data_source or t.env or "unknown"
    return source if t.role == "policy" else f"{source}/{t.role}"


def _sequences(batch: TrainBatch, trajs: list[Trajectory]) -> dict[tuple[str, str], list[int]]:
    """Finished rows by sequence (episode_id, role), in row order."""
    seqs: dict[tuple[str, str], list[int]] = {}
    for i in batch.finished.nonzero().squeeze(-1).tolist():
        seqs.setdefault((trajs[i].episode_id, trajs[i].role), []).append(i)
    return seqs


def _write(batch: TrainBatch, rows: list[int], values: list[float]) -> None:
    """seq_reward[rows] := values; the difference goes to each row's last trained token reward."""
    dev = batch.seq_reward.device
    idx = torch.tensor(rows, dtype=torch.long, device=dev)
    new = torch.tensor(values, dtype=batch.seq_reward.dtype, device=dev)
    delta = new - batch.seq_reward[idx]
    batch.seq_reward[idx] = new
    trained = batch.mask[idx] > 0
    pos = torch.arange(trained.shape[1], device=dev).expand_as(trained)
    last = torch.where(trained, pos, torch.full_like(pos, -1)).max(1).values
    ok = last >= 0
    batch.rewards[idx[ok], last[ok]] += delta[ok].to(batch.rewards.dtype)


def apply(batch: TrainBatch, trajs: list[Trajectory], mode: RewardNormalization) -> dict[str, float]:
    """Normalise the finished rows' rewards of `batch` in place (`trajs`: its rows' trajectories, in
    order); returns the step's reward stats: raw `reward_mean`, and with a mode `reward_norm_mean`,
    `reward_norm_std` (population, over sequences), `reward_norm_groups`, `reward_norm_lone`."""
    if len(trajs) != len(batch):
        raise ValueError(f"{len(trajs)} trajectories for a batch of {len(batch)} rows")
    fin = batch.finished
    if not fin.any():  # T-PPO: unfinished windows carry no reward yet
        return {}
    stats = {"reward_mean": float(batch.seq_reward[fin].mean())}
    if mode == "none":
        return stats
    seqs = _sequences(batch, trajs)
    firsts = [rows[0] for rows in seqs.values()]
    keys = [group_key(trajs[i]) for i in firsts]
    y = normalize([float(batch.seq_reward[i]) for i in firsts], keys, mode)
    rows = [i for members in seqs.values() for i in members]
    values = [float(v) for members, v in zip(seqs.values(), y) for _ in members]
    _write(batch, rows, values)
    sizes = {k: keys.count(k) for k in dict.fromkeys(keys)}
    stats.update(
        reward_norm_mean=float(np.mean(y)),
        reward_norm_std=float(np.std(y)),
        reward_norm_groups=float(len(sizes)),
        reward_norm_lone=float(sum(1 for n in sizes.values() if n == 1)),
    )
    return stats

"""Trajectories → padded tensors, and T-PPO segments of one sequence merged into one row (the forwards: learner/forward.py).

Position t of every per-token tensor here describes token t+1 of the sequence (the token predicted from
the prefix up to t), so loss masks, behaviour logprobs and rewards line up with `logits[:, :-1]`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch

from services.schemas import Trajectory


@dataclass
class TrainBatch:
    input_ids: torch.Tensor  # [B, T] right-padded
    attention: torch.Tensor  # [B, T]
    mask: torch.Tensor  # [B, T-1] 1 where the predicted token is trained on
    behav_logp: torch.Tensor  # [B, T-1] engine logprobs of the predicted tokens
    versions: torch.Tensor  # [B, T-1]
    rewards: torch.Tensor  # [B, T-1] token rewards (sparse)
    seq_reward: torch.Tensor  # [B]
    finished: torch.Tensor  # [B] bool
    groups: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device) -> TrainBatch:
        for name in (
            "input_ids",
            "attention",
            "mask",
            "behav_logp",
            "versions",
            "rewards",
            "seq_reward",
            "finished",
        ):
            setattr(self, name, getattr(self, name).to(device))
        return self


def collate(trajs: list[Trajectory], pad_id: int) -> TrainBatch:
    b, width = len(trajs), max(len(t.token_ids) for t in trajs)

    def pad(field_name: str, value, dtype) -> np.ndarray:
        out = np.full((b, width), value, dtype=dtype)
        for i, t in enumerate(trajs):
            arr = getattr(t, field_name)
            out[i, : len(arr)] = arr
        return out

    ids = pad("token_ids", pad_id, np.int64)
    att = np.zeros((b, width), dtype=np.int64)
    for i, t in enumerate(trajs):
        att[i, : len(t.token_ids)] = 1
    return TrainBatch(
        input_ids=torch.from_numpy(ids),
        attention=torch.from_numpy(att),
        mask=torch.from_numpy(pad("loss_mask", 0, np.float32)[:, 1:]),
        behav_logp=torch.from_numpy(pad("logprobs", 0.0, np.float32)[:, 1:]),
        versions=torch.from_numpy(pad("versions", -1, np.int64)[:, 1:]),
        rewards=torch.from_numpy(pad("rewards", 0.0, np.float32)[:, 1:]),
        seq_reward=torch.tensor([t.reward for t in trajs], dtype=torch.float32),
        finished=torch.tensor([t.finished for t in trajs]),
        groups=[t.group_id for t in trajs],
        roles=[t.role for t in trajs],
        ids=[t.id for t in trajs],
    )


def merge_segments(trajs: list[Trajectory]) -> list[Trajectory]:
    """T-PPO segments of one sequence in one batch → one row: the latest segment (its tokens, behaviour
    logprobs and versions extend every earlier one's) with the union of their loss masks.

    Exact for the policy loss (the same tokens, logprobs and behaviour logprobs, each trained once, under
    one set of weights) and it saves a forward/backward over the shared prefix per merged segment. What
    changes: EGAE runs over the union, so an earlier window's advantages bootstrap through the later
    window's real values and rewards instead of EGAE's V(s_l) ≈ V(s_l-1) at the window's end — the
    estimate full-episode GAE would give. Segments that are not prefixes of each other stay apart.
    """
    by: dict[tuple[str, str], list[Trajectory]] = defaultdict(list)
    for t in trajs:
        by[(t.episode_id, t.role)].append(t)
    out: list[Trajectory] = []
    for segs in by.values():
        if len(segs) == 1:
            out.append(segs[0])
            continue
        segs.sort(key=lambda t: (t.segment, len(t.token_ids)))
        last, mask = segs[-1], segs[-1].loss_mask.copy()
        for t in segs[:-1]:
            n = len(t.token_ids)
            if n > len(last.token_ids) or not np.array_equal(t.token_ids, last.token_ids[:n]):
                out.append(t)  # not a prefix of the latest segment: trained as it is
                continue
            mask[:n] |= t.loss_mask
        out.append(last.model_copy(update={"loss_mask": mask}))
    return out


def row_tokens(trajs: list[Trajectory]) -> int:
    """Tokens a step computes over: the rows after merging T-PPO segments."""
    return sum(len(t.token_ids) for t in merge_segments(trajs))


def top_up(queue, consumer: str, take: list, budget: int, version: int, holding: set[str]) -> list:
    """`take` plus trajectories already waiting in the queue, until the merged rows reach `budget`
    tokens or 8 × len(take) trajectories; each read blocks at most 1 ms (never waits for rollouts).
    Everything read is trained in this step, so nothing is held over past the staleness bound it was
    admitted under."""
    cap, out = 8 * len(take), list(take)
    while len(out) < cap and row_tokens([i.trajectory for i in out]) < budget:
        got = queue.get(
            consumer, min(len(take), cap - len(out)), block_ms=1, learner_version=version, holding=holding
        )
        if not got.items:
            break
        out += got.items
        holding |= {i.entry_id for i in got.items}
    return out


def complete_groups(trajs: list[Trajectory], group_size: int) -> tuple[list[Trajectory], list[Trajectory]]:
    """Split into (trajectories of groups with all `group_size` members, the rest) — GRPO and preference
    losses compare the members of one group, so a group must not be split across optimizer steps."""
    by: dict[str, list[Trajectory]] = defaultdict(list)
    for t in trajs:
        by[t.group_id].append(t)
    done = [t for g in by.values() if len(g) >= group_size for t in g]
    rest = [t for g in by.values() if len(g) < group_size for t in g]
    return done, rest

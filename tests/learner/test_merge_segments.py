"""A sequence's T-PPO windows in one batch become one row (learner/batch.merge_segments).

Against the old behaviour (each segment its own row): the policy loss's tokens, behaviour logprobs and
learner logprobs are the same; only EGAE's bootstrap at an earlier window's end changes (stated in the
function's docstring) — checked here on a real tiny model.
"""

from __future__ import annotations

import numpy as np
import torch

from learner.batch import collate, merge_segments, row_tokens
from learner.forward import token_logprobs
from services.schemas import NOT_GENERATED, Trajectory


def _segments(n_prompt=5, windows=(4, 3, 2), episode="ep", finish_last="stop"):
    rng = np.random.default_rng(0)
    total = sum(windows)
    tokens = rng.integers(10, 200, n_prompt + total).tolist()
    lps = (-rng.random(total)).tolist()
    out, start = [], 0
    for k, w in enumerate(windows):
        n = n_prompt + start + w
        mask = np.zeros(n, np.uint8)
        mask[n_prompt + start : n] = 1
        last = k == len(windows) - 1
        rewards = np.zeros(n, np.float32)
        if last:
            rewards[-1] = 1.0
        out.append(
            Trajectory(
                job_id="j",
                episode_id=episode,
                group_id="g",
                segment=k,
                token_ids=tokens[:n],
                logprobs=[0.0] * n_prompt + lps[: start + w],
                versions=[NOT_GENERATED] * n_prompt + [k] * (start + w),
                loss_mask=mask,
                rewards=rewards,
                prompt_len=n_prompt,
                finish_reason=finish_last if last else "window",
                reward=1.0 if last else 0.0,
            )
        )
        start += w
    return out


def test_windows_of_one_sequence_merge_into_the_latest_with_the_union_mask():
    segs = _segments()
    (row,) = merge_segments(list(reversed(segs)))
    assert row.segment == 2 and row.finished and row.reward == 1.0
    assert row.loss_mask.tolist() == [0] * 5 + [1] * 9
    assert sum(int(s.loss_mask.sum()) for s in segs) == int(row.loss_mask.sum())  # each token once
    assert row_tokens(segs) == len(row.token_ids) < sum(len(s.token_ids) for s in segs)


def test_other_sequences_and_non_prefixes_stay_apart():
    a, b = _segments(episode="a"), _segments(episode="b")
    assert len(merge_segments(a[:1] + b)) == 2
    odd = _segments(episode="a")
    bad = odd[0].model_copy(update={"token_ids": np.array(odd[0].token_ids[::-1])})
    assert len(merge_segments([bad, odd[1]])) == 2  # not a prefix: trained as it is


def test_policy_logprobs_on_the_trained_tokens_equal_the_separate_rows(tiny_model_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path).eval()
    segs = _segments()
    sep = collate(segs, 0)
    merged = collate(merge_segments(segs), 0)
    with torch.no_grad():
        lp_sep, lp_m = token_logprobs(model, sep), token_logprobs(model, merged)
    trained_sep = torch.cat([lp_sep[i][sep.mask[i] > 0] for i in range(len(sep))])
    trained_m = lp_m[0][merged.mask[0] > 0]
    assert torch.allclose(trained_sep, trained_m, atol=1e-5)
    behav_sep = torch.cat([sep.behav_logp[i][sep.mask[i] > 0] for i in range(len(sep))])
    assert torch.equal(behav_sep, merged.behav_logp[0][merged.mask[0] > 0])

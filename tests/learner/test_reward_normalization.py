"""Per-data-source reward normalisation in the learner (learner/reward_norm.py, `learner.reward_normalization`).

Pure logic on collated batches: per-source z-scores, one source = plain zscore, "none" bit-identical to the
path without it, unfinished T-PPO windows untouched, each sequence normalised once, the JobSpec field.
"""

from __future__ import annotations

import math
import typing

import numpy as np
import pytest
import torch

from games.normalize import MODES, normalize
from learner import reward_norm
from learner.advantages import egae, group_advantages
from learner.batch import collate, merge_segments
from learner.trainer import LearnerConfig
from services.jobspec import JobSpec, JobSpecError, RewardNormalization
from services.schemas import NOT_GENERATED, Trajectory

N_PROMPT = 3


def _traj(reward=0.0, source="math-hard", episode=None, finished=True, n_gen=4, role="policy", **kw):
    n = N_PROMPT + n_gen
    mask = np.zeros(n, np.uint8)
    mask[N_PROMPT:] = 1
    rewards = np.zeros(n, np.float32)
    if finished:
        rewards[-1] = reward
    return Trajectory(
        job_id="j",
        episode_id=episode or f"ep-{source}-{reward}-{n_gen}-{role}",
        group_id=kw.pop("group_id", "g"),
        role=role,
        env=kw.pop("env", "gtalign"),
        data_source=source,
        token_ids=list(range(10, 10 + n)),
        logprobs=[0.0] * N_PROMPT + [-0.5] * n_gen,
        versions=[NOT_GENERATED] * N_PROMPT + [0] * n_gen,
        loss_mask=mask,
        rewards=rewards,
        prompt_len=N_PROMPT,
        finish_reason="stop" if finished else "window",
        reward=reward if finished else 0.0,
        **kw,
    )


def _mixed() -> list[Trajectory]:
    rng = np.random.default_rng(7)
    out = []
    for source, n in (("math-hard", 3), ("ambig_qa", 4), ("wildguard", 5)):
        scale = {"math-hard": 1.0, "ambig_qa": 0.2, "wildguard": 5.0}[source]
        out += [_traj(float(scale * rng.random()), source, episode=f"{source}-{k}") for k in range(n)]
    return out


def _by_source(batch, trajs) -> dict[str, np.ndarray]:
    out: dict[str, list[float]] = {}
    for i, t in enumerate(trajs):
        if t.finished:
            out.setdefault(t.data_source or t.env, []).append(float(batch.seq_reward[i]))
    return {k: np.asarray(v) for k, v in out.items()}


def test_each_source_has_mean_zero_and_std_one():
    trajs = _mixed()
    batch = collate(trajs, 0)
    stats = reward_norm.apply(batch, trajs, "zscore")
    for source, y in _by_source(batch, trajs).items():
        assert len(y) >= 2
        assert abs(y.mean()) < 1e-6, source
        assert abs(y.std() - 1.0) < 1e-4, source
    assert stats["reward_norm_groups"] == 3 and stats["reward_norm_lone"] == 0
    assert abs(stats["reward_norm_mean"]) < 1e-6 and abs(stats["reward_norm_std"] - 1.0) < 1e-4
    raw = np.mean([t.reward for t in trajs])
    assert stats["reward_mean"] == pytest.approx(raw, rel=1e-6)  # the raw reward stays what is logged


def test_one_source_equals_plain_zscore():
    trajs = [t for t in _mixed() if t.data_source == "wildguard"]
    batch = collate(trajs, 0)
    reward_norm.apply(batch, trajs, "zscore")
    x = np.array([t.reward for t in trajs], np.float32).astype(np.float64)
    expected = (x - x.mean()) / (x.std() + 1e-6)
    np.testing.assert_allclose(batch.seq_reward.numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(batch.seq_reward.numpy(), normalize(x, ["s"] * len(x), "zscore"), atol=1e-6)


def _old_path(trajs):
    """The trainer before reward normalisation: collate, and reward_mean over finished rows."""
    batch = collate(trajs, 0)
    fin = batch.finished
    return batch, ({"reward_mean": float(batch.seq_reward[fin].mean())} if fin.any() else {})


def test_none_leaves_the_batch_bit_identical():
    trajs = merge_segments(_mixed() + [_traj(source="ambig_qa", episode="w", finished=False)])
    old, old_stats = _old_path(trajs)
    new = collate(trajs, 0)
    assert reward_norm.apply(new, trajs, "none") == old_stats
    for name in ("rewards", "seq_reward", "mask", "finished", "input_ids", "behav_logp"):
        assert torch.equal(getattr(old, name), getattr(new, name)), name
    unfinished = [_traj(finished=False)]
    assert reward_norm.apply(collate(unfinished, 0), unfinished, "zscore") == {}  # no reward yet


def test_unfinished_windows_are_untouched_and_not_counted():
    fin = _mixed()
    windows = [
        _traj(source=s, episode=f"open-{s}", finished=False, n_gen=6) for s in ("math-hard", "wildguard")
    ]
    trajs = fin[:2] + windows[:1] + fin[2:] + windows[1:]
    old, _ = _old_path(trajs)
    batch = collate(trajs, 0)
    stats = reward_norm.apply(batch, trajs, "zscore")
    open_rows = [i for i, t in enumerate(trajs) if not t.finished]
    assert torch.equal(batch.rewards[open_rows], old.rewards[open_rows])
    assert torch.equal(batch.seq_reward[open_rows], old.seq_reward[open_rows])
    assert torch.equal(batch.mask, old.mask)  # policy loss on window tokens, critic on finished rows
    # the statistics are those of the finished rows alone
    alone = collate(fin, 0)
    reward_norm.apply(alone, fin, "zscore")
    done_rows = [i for i, t in enumerate(trajs) if t.finished]
    assert torch.allclose(batch.seq_reward[done_rows], alone.seq_reward)
    assert stats["reward_norm_groups"] == 3


def test_token_rewards_sum_to_the_normalised_sequence_reward():
    trajs = _mixed()
    batch = collate(trajs, 0)
    reward_norm.apply(batch, trajs, "zscore")
    assert torch.allclose(batch.rewards.sum(1), batch.seq_reward, atol=1e-6)
    for i in range(len(batch)):  # the terminal reward stays at the last trained position
        last = int(batch.mask[i].nonzero().max())
        assert torch.count_nonzero(batch.rewards[i, :last]) == 0
    # EGAE with V = 0 and γ = λ = 1 returns the normalised reward at every token of a finished row
    pos = batch.mask[0].nonzero().squeeze(-1)
    _, ret = egae(batch.rewards[0, pos], torch.zeros(len(pos)), True)
    assert torch.allclose(ret, batch.seq_reward[0].expand_as(ret), atol=1e-6)


def test_merged_windows_are_normalised_once():
    """A sequence's windows merge into one row; that row counts once, like a single-row sequence."""
    seq = [_traj(source="math-hard", episode="long", finished=False, n_gen=2)]
    seq.append(_traj(0.9, source="math-hard", episode="long", n_gen=5).model_copy(update={"segment": 1}))
    seq[1].loss_mask[: N_PROMPT + 2] = 0  # the second window trains tokens 2..4 only
    others = [_traj(r, "math-hard", episode=f"o{r}") for r in (0.1, 0.5)]
    trajs = merge_segments(seq + others)
    assert len(trajs) == 3
    batch = collate(trajs, 0)
    stats = reward_norm.apply(batch, trajs, "zscore")
    x = np.array([0.9, 0.1, 0.5], np.float32).astype(np.float64)
    np.testing.assert_allclose(batch.seq_reward.numpy(), (x - x.mean()) / (x.std() + 1e-6), atol=1e-6)
    assert stats["reward_norm_groups"] == 1


def test_a_sequence_twice_in_a_batch_counts_once():
    a = _traj(0.2, "ambig_qa", episode="a")
    trajs = [a, a.model_copy(), _traj(1.0, "ambig_qa", episode="b")]
    batch = collate(trajs, 0)
    reward_norm.apply(batch, trajs, "zscore")
    assert batch.seq_reward.tolist() == pytest.approx([-1.0, -1.0, 1.0], abs=1e-5)  # two sequences, not three


def test_groups_fall_back_to_env_and_split_roles():
    assert reward_norm.group_key(_traj(source=None, env="sokoban")) == "sokoban"
    assert reward_norm.group_key(_traj(source="wildguard", role="attacker")) == "wildguard/attacker"
    lone = [_traj(0.7, "math-hard", episode="x")]  # one finished sequence: zscore gives 0 (σ := 1)
    batch = collate(lone, 0)
    assert reward_norm.apply(batch, lone, "zscore")["reward_norm_lone"] == 1
    assert batch.seq_reward.tolist() == [0.0]


def test_grpo_baseline_after_zscore_matches_the_raw_one():
    """zscore is affine per source and a prompt group lies in one source: GRPO's advantages stay (≈) the same."""
    trajs = []
    for source, scale in (("math-hard", 1.0), ("wildguard", 4.0)):
        for g in range(2):
            trajs += [
                _traj(scale * r, source, episode=f"{source}{g}{k}", group_id=f"{source}-{g}")
                for k, r in enumerate((0.1 + g, 0.4, 0.8 - g / 2, 0.3))
            ]
    batch = collate(trajs, 0)
    raw = group_advantages(batch.seq_reward.tolist(), batch.groups)
    reward_norm.apply(batch, trajs, "zscore")
    assert group_advantages(batch.seq_reward.tolist(), batch.groups) == pytest.approx(raw, abs=1e-4)


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_runs_through_the_learner(mode):
    trajs = _mixed() + [_traj(source="wildguard", episode="open", finished=False)]
    batch = collate(trajs, 0)
    stats = reward_norm.apply(batch, trajs, mode)
    expected = normalize([t.reward for t in trajs[:-1]], [t.data_source for t in trajs[:-1]], mode)
    np.testing.assert_allclose(batch.seq_reward[:-1].numpy(), expected, atol=1e-5)
    assert np.isfinite(list(stats.values())).all()


def test_jobspec_field_modes_and_errors():
    assert set(typing.get_args(RewardNormalization)) == {"none", *MODES}
    from services.judge_api import NormalizeMode

    assert set(typing.get_args(NormalizeMode)) == set(MODES)
    assert JobSpec().learner.reward_normalization == "none"
    spec = JobSpec.model_validate({"learner": {"reward_normalization": "zscore"}})
    cfg = LearnerConfig.from_job(spec, "j", "redis://x", "/tmp/ckpt")
    assert cfg.reward_normalization == "zscore"
    with pytest.raises(JobSpecError) as err:
        JobSpec.from_text("learner: {reward_normalization: full_zscore}")
    assert [e["loc"] for e in err.value.errors] == ["learner.reward_normalization"]


def test_judge_keeps_its_public_names():
    import games.normalize
    import judge.normalize

    assert judge.normalize.normalize is games.normalize.normalize
    assert judge.normalize.MODES == games.normalize.MODES


@pytest.mark.parametrize("algorithm", ["tppo", "grpo"])
def test_learner_steps_log_raw_and_normalised_rewards(
    algorithm, redis_url, redis_client, job_id, tiny_model_path, tmp_path
):
    from learner.trainer import Learner
    from rollout.engine import make_engine
    from services import metrics
    from services.queue import QueueConfig, TrajectoryQueue
    from tests.learner.welfare_game import produce_group

    engine = make_engine("transformers", tiny_model_path, threads=1)
    queue = TrajectoryQueue(redis_client, job_id, QueueConfig(max_len=100))
    for g in range(2):
        produce_group(engine, queue, job_id, group_size=4, seed=g)
    cfg = LearnerConfig(
        job_id=job_id,
        redis_url=redis_url,
        model=tiny_model_path,
        algorithm=algorithm,
        batch_size=8,
        group_size=4,
        steps=1,
        checkpoint_every=1,
        checkpoint_dir=str(tmp_path),
        push_weights=False,
        get_timeout_s=30,
        reward_normalization="zscore",
    )
    (stats,) = Learner(cfg).run()
    assert 0.0 < stats["reward_mean"] <= 1.0  # the welfare game's raw scale (every action pays > 0)
    assert abs(stats["reward_norm_mean"]) < 1e-6 and stats["reward_norm_groups"] == 1  # env as the source
    assert math.isfinite(stats["policy_loss"]) and queue.stats()["acked"] == 8
    assert 'term="reward_norm_' not in metrics.render().decode()  # not a loss term

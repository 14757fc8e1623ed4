"""Every algorithm runs real optimizer steps on real queued trajectories (tiny model), with finite losses
that change the weights; critic-based ones also train the critic."""

from __future__ import annotations

import math

import pytest
import torch

from learner.trainer import Learner, LearnerConfig
from rollout.engine import make_engine
from services.queue import QueueConfig, TrajectoryQueue
from tests.learner.welfare_game import produce_group


@pytest.fixture(scope="module")
def engine(tiny_model_path):
    return make_engine("transformers", tiny_model_path, threads=1)


@pytest.mark.parametrize(
    "algorithm", ["tppo", "ppo", "grpo", "rloo", "gpo", "inpo", "comal", "dpo", "ipo", "sppo", "nash_mp"]
)
def test_algorithm_steps(algorithm, engine, redis_url, redis_client, job_id, tiny_model_path, tmp_path):
    queue = TrajectoryQueue(redis_client, job_id, QueueConfig(max_len=100))
    for g in range(4):
        produce_group(engine, queue, job_id, group_size=4, seed=g)
    cfg = LearnerConfig(
        job_id=job_id,
        redis_url=redis_url,
        model=tiny_model_path,
        algorithm=algorithm,
        batch_size=8,
        group_size=4,
        learning_rate=1e-3,
        steps=2,
        checkpoint_every=2,
        checkpoint_dir=str(tmp_path),
        push_weights=False,
        get_timeout_s=30,
        ref_reset_every=1 if algorithm == "comal" else 0,
    )
    learner = Learner(cfg)
    before = {n: p.detach().clone() for n, p in learner.base.named_parameters()}
    critic_before = (
        None if learner.critic is None else [p.detach().clone() for p in learner.critic.parameters()]
    )
    history = learner.run()
    assert [h["step"] for h in history] == [1, 2]
    assert all(math.isfinite(h["policy_loss"]) for h in history if "policy_loss" in h)
    assert any(not torch.equal(before[n], p) for n, p in learner.base.named_parameters())
    if critic_before is not None:  # welfare-game responses are finished: the critic learns too
        assert any(not torch.equal(a, b) for a, b in zip(critic_before, learner.critic.parameters()))
        assert "value_loss" in history[0]
    if algorithm == "comal":  # the reference moved to the current policy
        assert all(torch.equal(p, r) for p, r in zip(learner.base.parameters(), learner.ref.parameters()))
    assert queue.stats()["acked"] == 16
    from services import metrics

    text = metrics.render().decode()
    assert f'payoff_learner_reward_by_source{{data_source="welfare-game",job="{job_id}",stat="mean"}}' in text
    assert f'payoff_learner_idle_ratio{{job="{job_id}"}}' in text
    for h in history:  # the step's time account: its laps are inside the step's wall time
        assert "time_collate_s" in h and "time_forward_s" in h  # backward/optimizer: only with a loss
        laps = [h.get(f"time_{p}_s", 0.0) for p in ("collate", "forward", "backward", "optimizer")]
        assert all(t >= 0 for t in laps) and sum(laps) <= h["step_s"] + 1e-6, h
    for phase in ("collate", "forward", "wait", "checkpoint"):
        assert f'payoff_learner_phase_seconds_total{{job="{job_id}",phase="{phase}"}}' in text
    assert 'term="time_' not in text and 'term="catchup_' not in text  # not loss terms


def test_grl_group_filter_trains_only_the_most_varied_groups(
    engine, redis_url, redis_client, job_id, tiny_model_path, tmp_path
):
    from services.jobspec import Hyper

    queue = TrajectoryQueue(redis_client, job_id, QueueConfig(max_len=100))
    for g in range(4):
        produce_group(engine, queue, job_id, group_size=4, seed=g)
    cfg = LearnerConfig(
        job_id=job_id,
        redis_url=redis_url,
        model=tiny_model_path,
        algorithm="grpo",
        hyper=Hyper(group_filter_ratio=0.5),
        batch_size=8,
        group_size=4,
        learning_rate=1e-3,
        steps=2,
        checkpoint_every=2,
        checkpoint_dir=str(tmp_path),
        push_weights=False,
        get_timeout_s=30,
    )
    history = Learner(cfg).run()
    assert [h["groups_kept"] for h in history] == [1.0, 1.0]  # 2 groups per batch, the top half kept

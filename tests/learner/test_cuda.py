"""A learner step on a CUDA GPU (run where a GPU is lent; skipped elsewhere)."""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_learner_steps_on_cuda(redis_url, redis_client, job_id, tiny_model_path, tmp_path):
    from learner.trainer import Learner, LearnerConfig
    from rollout.engine import make_engine
    from services.queue import QueueConfig, TrajectoryQueue
    from tests.learner.welfare_game import produce_group

    eng = make_engine("transformers", tiny_model_path, device="cuda")
    q = TrajectoryQueue(redis_client, job_id, QueueConfig(max_len=100))
    for g in range(6):
        produce_group(eng, q, job_id, group_size=4, seed=g)
    for algorithm in ("grpo", "tppo"):
        cfg = LearnerConfig(
            job_id=job_id,
            redis_url=redis_url,
            model=tiny_model_path,
            algorithm=algorithm,
            batch_size=8,
            group_size=4,
            learning_rate=1e-3,
            steps=1,
            checkpoint_every=1,
            checkpoint_dir=str(tmp_path / algorithm),
            push_weights=False,
            get_timeout_s=30,
        )
        learner = Learner(cfg, device="cuda")
        assert next(learner.base.parameters()).is_cuda
        hist = learner.run()
        assert hist[-1]["step"] == 1 and torch.isfinite(torch.tensor(hist[-1]["policy_loss"]))

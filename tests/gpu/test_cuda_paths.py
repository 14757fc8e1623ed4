"""Our own CUDA code paths (run where a GPU is lent; skipped elsewhere): the transformers engine on the
GPU, a learner step on the GPU, and a weight push of CUDA tensors with the on-device checksum."""
from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_engine_on_cuda_logprobs_and_keep_update(tiny_model_path):
    from rollout.engine import GenRequest, SamplingParams, make_engine

    eng = make_engine("transformers", tiny_model_path, device="cuda")
    p = eng.chat_prompt_ids([{"role": "user", "content": "What is 2 + 3?"}])
    outs = eng.generate([GenRequest(prompt_ids=p, params=SamplingParams(max_tokens=24, seed=i)) for i in range(16)])
    o = outs[0]
    with torch.no_grad():
        lp = torch.log_softmax(eng.model(torch.tensor([p + o.token_ids], device="cuda")).logits[0].float(), -1)
    ref = [float(lp[len(p) - 1 + k, t]) for k, t in enumerate(o.token_ids)]
    assert max(abs(a - b) for a, b in zip(ref, o.logprobs)) < 1e-3
    named = [(n, t + 0.1) for n, t in eng.model.state_dict().items()]
    eng.load_weights(named, version=1)
    assert eng.generate([GenRequest(prompt_ids=p, params=SamplingParams(max_tokens=4))])[0].versions == [1] * 4


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
        cfg = LearnerConfig(job_id=job_id, redis_url=redis_url, model=tiny_model_path, algorithm=algorithm,
                            batch_size=8, group_size=4, learning_rate=1e-3, steps=1, checkpoint_every=1,
                            checkpoint_dir=str(tmp_path / algorithm), push_weights=False, get_timeout_s=30)
        learner = Learner(cfg, device="cuda")
        assert next(learner.base.parameters()).is_cuda
        hist = learner.run()
        assert hist[-1]["step"] == 1 and torch.isfinite(torch.tensor(hist[-1]["policy_loss"]))


def test_weight_push_of_cuda_tensors(redis_client, job_id):
    from services.weight_sync import WeightReceiver, WeightSender, WeightSyncConfig

    cfg = WeightSyncConfig(backend="gloo", timeout_s=30, heartbeat_s=0.2, bucket_mb=0.01)
    got = {}
    rcv = WeightReceiver(redis_client, job_id, "gpu-r", lambda named, v: got.update(v=v, named=named),
                         device="cuda", config=cfg).start()
    try:
        named = [("a", torch.randn(64, 64, device="cuda")), ("b", torch.randn(100, device="cuda").half())]
        res = WeightSender(redis_client, job_id, cfg).push(named, version=3)
        assert res.ok == ["gpu-r"], res.failed
        assert got["v"] == 3 and all(torch.equal(a, b) for (_, a), (_, b) in zip(named, got["named"]))
    finally:
        rcv.stop()

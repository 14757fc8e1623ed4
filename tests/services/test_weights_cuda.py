"""A weight push of CUDA tensors with the on-device checksum (run where a GPU is lent; skipped elsewhere)."""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_weight_push_of_cuda_tensors(redis_client, job_id):
    from services.weights import WeightReceiver, WeightSender, WeightSyncConfig

    cfg = WeightSyncConfig(backend="gloo", timeout_s=30, heartbeat_s=0.2, bucket_mb=0.01)
    got = {}
    rcv = WeightReceiver(
        redis_client,
        job_id,
        "gpu-r",
        lambda named, v: got.update(v=v, named=named),
        device="cuda",
        config=cfg,
    ).start()
    try:
        named = [("a", torch.randn(64, 64, device="cuda")), ("b", torch.randn(100, device="cuda").half())]
        res = WeightSender(redis_client, job_id, cfg).push(named, version=3)
        assert res.ok == ["gpu-r"], res.failed
        assert got["v"] == 3 and all(torch.equal(a, b) for (_, a), (_, b) in zip(named, got["named"]))
    finally:
        rcv.stop()

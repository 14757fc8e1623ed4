"""Weight push over real standalone gloo groups, sender and receivers in separate threads/processes."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
import torch

from services.weight_sync import (WeightReceiver, WeightSender, WeightSyncConfig, pack, plan_buckets,
                                  unpack)


def _weights(seed: int = 0) -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [("embed.weight", torch.randn(64, 32, generator=g)),
            ("layer.0.bias", torch.randn(32, generator=g).to(torch.bfloat16)),
            ("layer.0.weight", torch.randn(32, 32, generator=g)),
            ("step", torch.tensor(7, dtype=torch.int64))]


def test_pack_unpack_round_trip_mixed_dtypes():
    named = _weights()
    metas = plan_buckets(named, bucket_bytes=4096)
    assert max(m.bucket for m in metas) >= 1  # small buckets: the plan splits
    back = unpack(pack([t for _, t in named]), metas)
    for (n1, a), (n2, b) in zip(named, back):
        assert n1 == n2 and a.dtype == b.dtype and torch.equal(a, b)


class Sink:
    def __init__(self):
        self.got: dict[int, list] = {}

    def __call__(self, named, version):
        self.got[version] = named


def test_push_to_two_receivers_and_version_bump(redis_client, job_id):
    cfg = WeightSyncConfig(bucket_mb=0.004, timeout_s=20, heartbeat_s=0.2)
    sinks = [Sink(), Sink()]
    receivers = [WeightReceiver(redis_client, job_id, f"r{i}", s, config=cfg).start()
                 for i, s in enumerate(sinks)]
    try:
        sender = WeightSender(redis_client, job_id, cfg)
        assert sorted(sender.live_replicas()) == ["r0", "r1"]
        named = _weights(1)
        res = sender.push(named, version=3, step=30)
        assert sorted(res.ok) == ["r0", "r1"] and not res.failed
        assert res.bytes == 2 * sum(t.numel() * t.element_size() for _, t in named)
        for s, rcv in zip(sinks, receivers):
            assert rcv.version == 3 and rcv.healthy
            assert [n for n, _ in s.got[3]] == [n for n, _ in named]
            assert all(torch.equal(a, b) for (_, a), (_, b) in zip(s.got[3], named))
    finally:
        for r in receivers:
            r.stop()


def test_dead_replica_is_skipped_and_reported_without_hanging(redis_client, job_id):
    cfg = WeightSyncConfig(timeout_s=3, heartbeat_s=0.2, live_after_s=30)
    alive = WeightReceiver(redis_client, job_id, "alive", Sink(), config=cfg).start()
    # a replica registered (recent heartbeat) whose process is gone: it will never join the group
    ghost = WeightReceiver(redis_client, job_id, "ghost", Sink(), config=cfg)
    ghost._beat()
    try:
        t0 = time.monotonic()
        res = WeightSender(redis_client, job_id, cfg).push(_weights(), version=1)
        assert res.ok == ["alive"] and "ghost" in res.failed
        assert time.monotonic() - t0 < 3 * cfg.timeout_s
        assert alive.version == 1
    finally:
        alive.stop()
        ghost.r.hdel(ghost.replicas_key, "ghost")


def test_failed_apply_marks_replica_unhealthy_until_next_good_sync(redis_client, job_id):
    cfg = WeightSyncConfig(timeout_s=10, heartbeat_s=0.2)
    calls = []

    def flaky(named, version):
        calls.append(version)
        if version == 1:
            raise ValueError("shape mismatch in layer.0.weight")

    rcv = WeightReceiver(redis_client, job_id, "r", flaky, config=cfg).start()
    try:
        sender = WeightSender(redis_client, job_id, cfg)
        res = sender.push(_weights(), version=1)
        assert "shape mismatch" in res.failed["r"] and not rcv.healthy
        res = sender.push(_weights(), version=2)
        assert res.ok == ["r"] and rcv.healthy and rcv.version == 2 and calls == [1, 2]
    finally:
        rcv.stop()


def test_push_to_a_receiver_in_another_process(redis_url, redis_client, job_id):
    cfg = WeightSyncConfig(timeout_s=20, heartbeat_s=0.2)
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time, torch
        from services.config import redis_client
        from services.weight_sync import WeightReceiver, WeightSyncConfig
        got = {{}}
        r = WeightReceiver(redis_client({redis_url!r}), {job_id!r}, "proc",
                           lambda named, v: got.update(v=v, s=float(sum(t.float().sum() for _, t in named))),
                           config=WeightSyncConfig(timeout_s=20, heartbeat_s=0.2)).start()
        print("ready", flush=True)
        while "v" not in got:
            time.sleep(0.05)
        print(got["v"], round(got["s"], 3), flush=True)
        r.stop()
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        named = _weights(2)
        res = WeightSender(redis_client, job_id, cfg).push(named, version=5)
        assert res.ok == ["proc"], res.failed
        v, s = child.stdout.readline().split()
        assert int(v) == 5
        assert float(s) == pytest.approx(float(sum(t.float().sum() for _, t in named)), abs=1e-2)
    finally:
        child.kill()
        child.wait()

"""Weight-push packing and integrity: the checksum (what it catches, CPU and device arithmetic agree),
tied weights sent once, buckets sent straight from the caller's tensors without ever writing to them,
corruption in transit detected end to end, and the push's time account."""

from __future__ import annotations

import pytest
import torch

from services.weights import WeightReceiver, WeightSender, WeightSyncConfig, digest, packing
from services.weights.packing import BufferPool, dedupe, direct, expand, pack, plan_buckets
from services.weights.transports import per_push, persistent


def _bytes(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n,), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n", [0, 1, 7, 8, 4095, 4096, 4104, 3 * 4096 + 13, 1 << 20])
def test_digest_numpy_and_device_arithmetic_agree(n):
    buf = _bytes(n)
    whole = n - n % 8
    rows = whole // 8 // packing.ROW_WORDS
    a, b, last = packing._sums_numpy(buf[:whole], rows)
    ta, tb, tlast = packing._sums_torch(buf[:whole], rows)  # the GPU code, run on CPU here
    mask = (1 << 64) - 1
    assert (a & mask, b & mask, last & mask) == (ta & mask, tb & mask, tlast & mask)
    assert digest(buf) == digest(buf.clone())  # a function of the bytes alone
    assert all(-(1 << 63) <= x < 1 << 63 for x in digest(buf))  # fits the int64 trailer


def test_digest_catches_flips_moved_rows_and_stale_data():
    buf = _bytes(64 * 4096 + 5, seed=1)
    good = digest(buf)
    for pos, bit in [(0, 0), (8 * 512 + 7, 7), (len(buf) - 1, 3), (4096 * 3 + 1000, 5)]:
        bad = buf.clone()
        bad[pos] ^= 1 << bit
        assert digest(bad) != good, (pos, bit)
    top = buf.clone()  # the top bit of a word in row 1: weight 3, odd, so it cannot cancel mod 2**64
    top[4096 + 7] ^= 0x80
    assert digest(top) != good
    swapped = buf.clone()  # two 4 KiB rows swapped (misplaced data, same bytes)
    swapped[:4096], swapped[4096:8192] = buf[4096:8192].clone(), buf[:4096].clone()
    assert digest(swapped) != good
    stale = buf.clone()  # the start of another version of the weights
    stale[: 10 * 4096] = _bytes(10 * 4096, seed=2)
    assert digest(stale) != good
    short = buf.clone()  # a transfer that stopped early (the rest still zero)
    short[-4096:] = 0
    assert digest(short) != good


def test_tied_weights_are_sent_once_and_restored_in_order():
    emb = torch.randn(10, 4)
    named = [("embed", emb), ("norm", torch.ones(4)), ("lm_head", emb), ("empty", torch.empty(0))]
    unique, aliases = dedupe(named)
    assert [n for n, _ in unique] == ["embed", "norm", "empty"] and aliases == [(2, "lm_head", "embed")]
    back = expand(unique, aliases)
    assert [n for n, _ in back] == ["embed", "norm", "lm_head", "empty"] and back[2][1] is emb
    assert dedupe([("a", emb), ("b", emb.t())])[1] == []  # another view of the same memory: both sent
    with pytest.raises(ValueError, match="does not match"):
        expand(unique, [(1, "x", "missing")])


def test_direct_buckets_are_views_and_pack_reuses_its_buffer():
    big, small = torch.randn(256), [torch.randn(3), torch.ones(5, dtype=torch.bfloat16)]
    view = direct([big])
    assert view is not None and view.data_ptr() == big.data_ptr() and view.numel() == 1024
    assert direct(small) is None and direct([big[1:]]) is None  # several tensors; unaligned
    assert direct([big.view(16, 16).t()]) is None  # not contiguous
    out = pack(small)
    again = pack([torch.zeros(3), torch.zeros(5, dtype=torch.bfloat16)], out)
    assert again.data_ptr() == out.data_ptr() and not again.any()


def test_buffer_pool_keeps_one_buffer_per_bucket_of_equal_size():
    pool = BufferPool(torch.device("cpu"))
    first = {pool.take(4096).data_ptr() for _ in range(3)}
    pool.recycle()
    assert {pool.take(4096).data_ptr() for _ in range(3)} == first


class Sink:
    def __init__(self):
        self.got: dict[int, list] = {}

    def __call__(self, named, version):
        self.got[version] = [(n, t.clone()) for n, t in named]  # an engine copies them out too


def _model(seed: int) -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(300, 16, generator=g)  # 18.75 KiB: over the bucket size, sent directly
    return [
        ("embed", emb),
        ("layer.w", torch.randn(16, 16, generator=g)),
        ("layer.b", torch.randn(16, generator=g).to(torch.bfloat16)),
        ("layer.odd", torch.randn(3, generator=g).to(torch.float16)),  # 6 bytes: not a word multiple
        ("lm_head", emb),
    ]


def _cfg(transport: str = "persistent") -> WeightSyncConfig:
    return WeightSyncConfig(transport=transport, bucket_mb=0.004, timeout_s=20, heartbeat_s=0.2)


@pytest.mark.parametrize("transport", ["per_push", "persistent"])
def test_push_sends_aliases_once_leaves_the_learner_tensors_alone_and_keeps_an_account(
    redis_client, job_id, transport
):
    sink = Sink()
    rcv = WeightReceiver(redis_client, job_id, "r", sink, config=_cfg(transport)).start()
    sender = WeightSender(redis_client, job_id, _cfg(transport))
    try:
        for v in (1, 2, 3):
            named = _model(v)
            before = [t.clone() for _, t in named]
            metas = plan_buckets(dedupe(named)[0], int(0.004 * 2**20))
            assert metas[0].bucket != metas[1].bucket  # the embedding is a bucket of its own
            res = sender.push(named, version=v)
            assert res.ok == ["r"], res.failed
            assert [n for n, _ in sink.got[v]] == [n for n, _ in named]
            assert all(torch.equal(a, b) for (_, a), (_, b) in zip(sink.got[v], named))
            assert all(torch.equal(a, b) for a, (_, b) in zip(before, named))  # never written to
            assert res.bytes == sum(t.numel() * t.element_size() for _, t in named[:-1])
        assert set(res.phases) == {"rendezvous", "transfer"}  # the learner's partition of a push
        assert {"plan", "announce", "pack", "checksum", "send", "ack"} <= set(res.account)
        replica = res.replicas["r"]
        assert {"decode", "first_bucket", "checksum", "unpack", "receive", "verify", "apply"} <= set(replica)
        assert all(x >= 0 for x in [*res.account.values(), *replica.values()])
    finally:
        rcv.stop()
        sender.close()


@pytest.mark.parametrize("transport", ["per_push", "persistent"])
def test_corruption_in_transit_fails_the_push_and_the_next_one_heals(
    redis_client, job_id, transport, monkeypatch
):
    module = {"per_push": per_push, "persistent": persistent}[transport]
    real = module.receive_buckets
    corrupt = {"on": True}

    def flipping(pg, bufs, timeout_s, on_arrival):
        def landed(b):
            if corrupt["on"] and b == 1:
                bufs[b][5] ^= 0x10  # one bit of bucket 1, after it arrived and before it is checked
            on_arrival(b)

        real(pg, bufs, timeout_s, landed)

    monkeypatch.setattr(module, "receive_buckets", flipping)
    sink = Sink()
    rcv = WeightReceiver(redis_client, job_id, "r", sink, config=_cfg(transport)).start()
    sender = WeightSender(redis_client, job_id, _cfg(transport))
    try:
        res = sender.push(_model(1), version=1)
        assert "failed their checksum" in res.failed["r"] and 1 not in sink.got
        assert not rcv.healthy and rcv.version == 0
        corrupt["on"] = False
        named = _model(2)
        res = sender.push(named, version=2)
        assert res.ok == ["r"], res.failed
        assert rcv.healthy and all(torch.equal(a, b) for (_, a), (_, b) in zip(sink.got[2], named))
    finally:
        rcv.stop()
        sender.close()


def test_large_tensors_go_alone_and_small_ones_share_a_bucket_across_them(redis_client, job_id):
    g = torch.Generator().manual_seed(3)
    named = [
        ("a", torch.randn(1024, generator=g)),
        ("a.norm", torch.randn(4, generator=g)),
        ("b", torch.randn(32, 32, generator=g).to(torch.bfloat16)),
        ("b.norm", torch.randn(3, generator=g).to(torch.float16)),
        ("c", torch.randn(1024, generator=g)),
    ]
    plan = plan_buckets(named, bucket_bytes=64 * 1024, direct_bytes=1024)
    assert [m.bucket for m in plan] == [0, 1, 2, 1, 3]  # the small ones travel together, after "a"
    cfg = WeightSyncConfig(bucket_mb=0.0625, direct_mb=0.001, timeout_s=20, heartbeat_s=0.2)
    sink = Sink()
    rcv = WeightReceiver(redis_client, job_id, "r", sink, config=cfg).start()
    sender = WeightSender(redis_client, job_id, cfg)
    try:
        res = sender.push(named, version=1)
        assert res.ok == ["r"], res.failed
        assert [n for n, _ in sink.got[1]] == [n for n, _ in named]  # the sender's order, restored
        assert all(a.dtype == b.dtype and torch.equal(a, b) for (_, a), (_, b) in zip(sink.got[1], named))
    finally:
        rcv.stop()
        sender.close()

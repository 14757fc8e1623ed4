"""The CPU SFT loop (services.sft): the invariants of its module docstring, on a tiny random Qwen3."""

from __future__ import annotations

import math
import random

import pytest
import torch
import transformers

from services.sft import (
    SFTConfig,
    _check,
    _loss_full,
    _loss_prefixed,
    _micro_batch,
    _pad,
    common_prefix,
    train,
)

PAD = 0
VOCAB = 64


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: fast for a model this small, and the determinism invariant is per thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model(seed: int = 0) -> transformers.PreTrainedModel:
    config = transformers.Qwen3Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=256,
        pad_token_id=PAD,
    )
    torch.manual_seed(seed)
    return transformers.Qwen3ForCausalLM(config).eval()


def pattern_rows(
    n: int = 64, seed: int = 0, prefix: tuple[int, ...] = (1, 2)
) -> list[tuple[list[int], list[int]]]:
    """A learnable task: after a fixed instruction and four of eight tokens, repeat the four reversed, then 3."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        xs = [rng.randrange(4, 12) for _ in range(4)]
        rows.append((list(prefix) + xs, xs[::-1] + [3]))
    return rows


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_loss_decreases_and_model_is_left_in_eval_mode() -> None:
    model = tiny_model()
    result = train(model, pattern_rows(), PAD, SFTConfig(steps=30, batch_size=8, lr=1e-2), say=lambda _: None)
    assert result.steps == len(result.losses) == 30 and not result.stopped_by_time
    assert result.rows == 64 and result.dropped == 0 and result.seconds > 0
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < 0.6 * first, result.losses
    assert not model.training and all(p.requires_grad for p in model.parameters())


def test_pad_labels_are_target_only() -> None:
    rows = [([1, 2, 3], [4, 5]), ([6], [7])]
    ids, mask, labels = _pad(rows, pad_id=9)
    assert ids.tolist() == [[1, 2, 3, 4, 5], [6, 7, 9, 9, 9]]
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert labels.tolist() == [[-100, -100, -100, 4, 5], [-100, 7, -100, -100, -100]]
    ids, mask, labels = _pad(rows[:1], pad_id=9, skip=2)
    assert ids.tolist() == [[3, 4, 5]] and mask.tolist() == [[1, 1, 1]] and labels.tolist() == [[-100, 4, 5]]


def test_loss_full_is_mean_cross_entropy_over_targets() -> None:
    model, rows = tiny_model(), [([1, 5, 6], [7, 8]), ([1, 9], [10, 11, 12])]
    with torch.no_grad():
        got = _loss_full(model, rows, PAD)
        terms = []
        for p, t in rows:
            logits = model(input_ids=torch.tensor([p + t])).logits[0]
            for j, tok in enumerate(t):
                terms.append(-torch.log_softmax(logits[len(p) + j - 1], -1)[tok])
        assert float(got) == pytest.approx(float(torch.stack(terms).mean()), abs=1e-5)
        assert float(_loss_full(model, rows, pad_id=63)) == pytest.approx(float(got), abs=1e-6)


@pytest.mark.parametrize(
    "rows",
    [
        [
            ([1, 2, 3, 4, 5, 6, 7], [8, 9]),
            ([1, 2, 3, 4, 5, 10], [11]),
            ([1, 2, 3, 4, 5, 6, 12, 13], [14, 15, 16]),
        ],
        [([1, 2, 3], [4, 5]), ([1, 2, 3, 6, 7], [8])],  # one prompt is the common prefix itself
        [([1, 2], [3]), ([4, 5, 6], [7, 8])],  # no common prefix
    ],
)
def test_prefixed_loss_equals_full_loss(rows) -> None:
    model = tiny_model()
    with torch.no_grad():
        full, prefixed = _loss_full(model, rows, PAD), _loss_prefixed(model, rows, PAD)
    assert float(prefixed) == pytest.approx(float(full), abs=1e-5)


def test_shared_prefix_training_runs() -> None:
    model = tiny_model()
    cfg = SFTConfig(steps=5, batch_size=4, shared_prefix=True)
    result = train(model, pattern_rows(16, prefix=(1, 2, 3, 5)), PAD, cfg, say=lambda _: None)
    assert result.steps == 5 and all(math.isfinite(x) for x in result.losses)


def test_train_layers_freezes_lower_layers_and_embeddings() -> None:
    model = tiny_model()
    before = snapshot(model)
    train(model, pattern_rows(), PAD, SFTConfig(steps=3, batch_size=8, train_layers=1), say=lambda _: None)
    after = model.state_dict()
    frozen = [k for k in before if not (k.startswith("model.layers.2.") or k == "model.norm.weight")]
    assert any("embed_tokens" in k for k in frozen) and any(k.startswith("lm_head") for k in frozen)
    assert any(k.startswith("model.layers.0.") for k in frozen) and any(
        k.startswith("model.layers.1.") for k in frozen
    )
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    top = [k for k in before if k.startswith("model.layers.2.") and k.endswith("proj.weight")]
    assert top and all(not torch.equal(before[k], after[k]) for k in top)
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("n", [0, 4, -1])
def test_train_layers_out_of_range_raises(n: int) -> None:
    with pytest.raises(ValueError, match="train_layers"):
        train(tiny_model(), pattern_rows(8), PAD, SFTConfig(steps=1, batch_size=2, train_layers=n))


def grouped_rows() -> tuple[list[tuple[list[int], list[int]]], list[str]]:
    rows = pattern_rows(30, prefix=(10,)) + pattern_rows(10, seed=1, prefix=(20,))
    return rows, ["a"] * 30 + ["b"] * 10


def test_micro_batches_come_from_one_group() -> None:
    rows, groups = grouped_rows()
    pools = _check(rows, groups, SFTConfig(batch_size=4))
    assert {g: len(v) for g, v in pools.items()} == {"a": 30, "b": 10}
    rng, firsts = random.Random(0), []
    for _ in range(400):
        batch = _micro_batch(pools, rng, 4)
        heads = {p[0] for p, _ in batch}
        assert len(heads) == 1 and len({id(row) for row in batch}) == 4  # one group, distinct rows
        firsts.append(heads.pop())
    assert 0.65 < firsts.count(10) / len(firsts) < 0.85  # chosen in proportion to size (30 of 40)


def test_group_labels_must_match_rows() -> None:
    rows, groups = grouped_rows()
    with pytest.raises(ValueError, match="group labels"):
        train(tiny_model(), rows, PAD, SFTConfig(steps=1, batch_size=2), groups=groups[:-1])
    with pytest.raises(ValueError, match="too few"):  # group b has 10 rows
        _check(rows, groups, SFTConfig(batch_size=11))
    result = train(
        tiny_model(), rows, PAD, SFTConfig(steps=2, batch_size=4), groups=groups, say=lambda _: None
    )
    assert result.steps == 2


def test_check_errors_and_dropped_rows() -> None:
    rows = pattern_rows(8)
    for cfg in (SFTConfig(steps=0), SFTConfig(batch_size=0), SFTConfig(grad_accum=0)):
        with pytest.raises(ValueError, match="at least 1"):
            _check(rows, None, cfg)
    with pytest.raises(ValueError, match="too few usable rows"):
        train(tiny_model(), rows, PAD, SFTConfig(steps=1, batch_size=9))
    with pytest.raises(ValueError, match="too few usable rows"):
        _check(rows, None, SFTConfig(batch_size=1, max_len=5))  # every row has 11 tokens
    long_rows = [([1] * 20, [2, 3])] * 3 + [([1, 2], [])]  # too long, and an empty target
    result = train(
        tiny_model(), rows + long_rows, PAD, SFTConfig(steps=1, batch_size=4, max_len=12), say=lambda _: None
    )
    assert result.rows == 8 and result.dropped == 4


def test_same_seed_gives_identical_weights() -> None:
    cfg = SFTConfig(steps=4, batch_size=4, grad_accum=2, warmup_steps=2)
    a, b, c = tiny_model(), tiny_model(), tiny_model()
    train(a, pattern_rows(), PAD, cfg, say=lambda _: None)
    train(b, pattern_rows(), PAD, cfg, say=lambda _: None)
    train(c, pattern_rows(), PAD, SFTConfig(steps=4, batch_size=4, grad_accum=2, warmup_steps=2, seed=1))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_max_seconds_stops_after_the_first_late_step() -> None:
    result = train(tiny_model(), pattern_rows(8), PAD, SFTConfig(steps=1000, batch_size=2, max_seconds=0.0))
    assert result.steps == 1 and result.stopped_by_time and len(result.losses) == 1
    result = train(tiny_model(), pattern_rows(8), PAD, SFTConfig(steps=2, batch_size=2, max_seconds=600.0))
    assert result.steps == 2 and not result.stopped_by_time


@pytest.mark.parametrize(
    ("prompts", "expected"),
    [
        ([], []),
        ([[1, 2, 3]], [1, 2, 3]),
        ([[1, 2, 3], [1, 2, 4]], [1, 2]),
        ([[1, 2, 3, 4], [1, 2]], [1, 2]),
        ([[1, 2, 3], [1, 2, 3], [1, 9, 3]], [1]),
        ([[1, 2, 3], [1, 9, 3], [1, 2, 3]], [1]),
        ([[1], [2]], []),
        ([[], [1]], []),
    ],
)
def test_common_prefix(prompts, expected) -> None:
    assert common_prefix(prompts) == expected


def test_bf16_autocast_keeps_float32_weights() -> None:
    model = tiny_model()
    result = train(model, pattern_rows(), PAD, SFTConfig(steps=3, batch_size=8, bf16_autocast=True))
    assert result.steps == 3 and all(math.isfinite(x) for x in result.losses)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_progress_lines() -> None:
    lines: list[str] = []
    train(tiny_model(), pattern_rows(8), PAD, SFTConfig(steps=4, batch_size=2, log_every=2), say=lines.append)
    assert [line.split()[1] for line in lines] == ["1/4", "2/4", "4/4"]

"""rollout/hf_engine.sample: the batched sampler draws each row from its own temperature / top-p
distribution with its own seeded generator."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from rollout.hf_engine import sample


def _row(seed: int, temperature: float = 1.0, top_p: float = 1.0):
    params = SimpleNamespace(temperature=temperature, top_p=top_p)
    return SimpleNamespace(req=SimpleNamespace(params=params), gen=torch.Generator().manual_seed(seed))


def test_frequencies_follow_the_softmax_of_each_row():
    probs = torch.tensor([[0.5, 0.3, 0.2, 0.0], [0.1, 0.1, 0.1, 0.7]])
    logits = probs.clamp(min=1e-30).log()
    counts = torch.zeros(2, 4)
    rows = [_row(1), _row(2)]
    for _ in range(4000):
        for j, t in enumerate(sample(logits, rows)):
            counts[j, t] += 1
    freq = counts / counts.sum(1, keepdim=True)
    assert counts[0, 3] == 0  # probability 0 is never drawn
    assert torch.allclose(freq, probs, atol=0.03)


def test_temperature_zero_is_the_argmax_and_top_p_cuts_the_tail():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.9], [2.0, 1.0, 0.0, -1.0]])
    assert sample(logits, [_row(0, temperature=0), _row(0, temperature=0)]) == [1, 0]
    # top_p 0.5 on row 1 keeps only token 0 (mass 0.64); row 0 at temperature 1 keeps its own distribution
    picks = {tuple(sample(logits, [_row(s), _row(s, top_p=0.5)])) for s in range(200)}
    assert {p[1] for p in picks} == {0} and len({p[0] for p in picks}) > 1


def test_a_rows_draw_depends_on_its_own_generator_only():
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    alone = sample(logits[1:2], [_row(7)])
    together = sample(logits, [_row(1), _row(7), _row(3, temperature=0.5)])
    assert together[1] == alone[0]

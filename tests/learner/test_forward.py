"""learner/forward.py: the shared-prefix, exact-position forwards equal the plain full forward — log-probs,
logits, values and every parameter's gradient — on groups that share a prompt, T-PPO windows, rows that
share their first generated tokens, single-row groups and rows nothing trains on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learner import forward
from learner.batch import collate
from learner.critic import Critic
from services.models import load_model
from services.schemas import Trajectory


def _traj(i, group, prompt, response, window=None) -> Trajectory:
    ids = np.array(prompt + response, np.int64)
    n, p = len(ids), len(prompt)
    mask = np.zeros(n, np.uint8)
    lo, hi = window if window else (p, n)
    mask[lo:hi] = 1
    versions = np.full(n, -1, np.int32)
    versions[p:] = 0
    return Trajectory(
        job_id="j",
        episode_id=f"e{i}",
        group_id=group,
        token_ids=ids,
        logprobs=np.full(n, -1.0, np.float32),
        versions=versions,
        loss_mask=mask,
        rewards=np.zeros(n, np.float32),
        prompt_len=p,
        finish_reason="stop" if window is None else "window",
    )


def _batch() -> tuple:
    rng = np.random.default_rng(0)
    toks = lambda n: rng.integers(5, 4000, n).tolist()  # noqa: E731
    pa, pb, pc = toks(40), toks(33), toks(25)
    same_start = toks(6)
    trajs = [
        _traj(0, "a", pa, toks(12)),
        _traj(1, "a", pa, toks(30)),  # long tail: the others are padding next to it
        _traj(2, "a", pa, same_start + toks(4)),  # rows 2 and 3 share generated tokens they train on
        _traj(3, "a", pa, same_start + toks(9)),
        _traj(4, "b", pb, toks(50), window=(33 + 40, 33 + 50)),  # a later T-PPO window: long context
        _traj(5, "b", pb, toks(20), window=(33 + 5, 33 + 20)),
        _traj(6, "c", pc, toks(8)),  # a group of one
        _traj(7, "b", pb, toks(7), window=(0, 0)),  # nothing trained on
    ]
    return collate(trajs, pad_id=0), trajs


def _plain_logp(model, batch) -> torch.Tensor:
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention).logits[:, :-1].float()
    lp = torch.gather(torch.log_softmax(logits, -1), 2, batch.input_ids[:, 1:, None]).squeeze(-1)
    return lp * (batch.mask > 0)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to fp32 summation order: the gradient sums the rows in another order."""
    return torch.allclose(a, b, rtol=1e-4, atol=1e-6 * float(b.abs().max()) + 1e-7)


def _grads(module) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    module.zero_grad(set_to_none=True)
    return out


def test_the_plan_shares_each_groups_prompt_and_stops_before_its_first_trained_position():
    batch, _ = _batch()
    parts = {p.rows: p for p in forward.plan(batch.input_ids, batch.attention, batch.mask, batch.groups)}
    # position t predicts token t + 1: the prompt's last position predicts the first generated token, so
    # the prefix is the prompt but that position (not the 6 generated tokens rows 2 and 3 share)
    assert parts[(0, 1, 2, 3)].start == 40 - 1
    assert parts[(4, 5, 7)].start == 33  # group b's windows start later: its prefix is the whole prompt
    assert parts[(6,)].start == 0  # a group of one: a plain pass
    assert sum(len(p.rows) for p in parts.values()) == len(batch)


def test_logprobs_logits_and_gradients_equal_the_plain_forward(tiny_model_path):
    model, _ = load_model(tiny_model_path)
    batch, _ = _batch()
    weights = torch.randn(batch.mask.shape, generator=torch.Generator().manual_seed(1))
    want = _plain_logp(model, batch)
    (want * weights).sum().backward()
    want_grads = _grads(model)
    logp, logits, (rows, pos) = forward.token_logprobs(model, batch, with_logits=True)
    assert logits.shape[0] == int((batch.mask > 0).sum())  # the head ran on the trained pairs only
    assert torch.allclose(logp, want, atol=1e-5)
    (logp * weights).sum().backward()
    got = _grads(model)
    assert got.keys() == want_grads.keys()
    for name, g in want_grads.items():
        assert _close(got[name], g), name
    full = model(input_ids=batch.input_ids, attention_mask=batch.attention).logits[:, :-1].float()
    assert torch.allclose(logits, full[rows, pos], atol=1e-5)


def test_critic_values_and_gradients_equal_the_plain_forward(tiny_model_path):
    critic = Critic(tiny_model_path)
    torch.nn.init.normal_(critic.head.weight, std=0.5)  # a trained head: values that are not all 0
    batch, _ = _batch()
    weights = torch.randn(batch.mask.shape, generator=torch.Generator().manual_seed(2))
    want = critic(batch.input_ids, batch.attention)[:, :-1] * (batch.mask > 0)
    (want * weights).sum().backward()
    want_grads = _grads(critic)
    got = forward.values(critic, batch)
    assert torch.allclose(got, want, atol=1e-5)
    (got * weights).sum().backward()
    got_grads = _grads(critic)
    for name, g in want_grads.items():
        assert _close(got_grads[name], g), name


class _Wrapped(torch.nn.Module):
    """Stands in for DDP: a `.module` and a forward of its own, which the split must not bypass."""

    def __init__(self, inner):
        super().__init__()
        self.module = inner
        self.calls = 0

    def forward(self, **kw):
        self.calls += 1
        return self.module(**kw)


def test_a_wrapped_model_takes_the_plain_forward_with_the_same_result(tiny_model_path):
    model, _ = load_model(tiny_model_path)
    wrapped = _Wrapped(model)
    batch, _ = _batch()
    assert not forward.splittable(wrapped) and forward.splittable(model)
    with torch.no_grad():
        got, want = forward.token_logprobs(wrapped, batch), forward.token_logprobs(model, batch)
    assert wrapped.calls == 1 and torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("trained", [False, True])
def test_a_batch_with_nothing_trained_still_gives_a_graph(tiny_model_path, trained):
    model, _ = load_model(tiny_model_path)
    batch, _ = _batch()
    if not trained:
        batch.mask.zero_()
    logp = forward.token_logprobs(model, batch)
    assert logp.requires_grad  # a loss over an empty mask is 0 and still backpropagates
    if trained:
        assert bool((logp[batch.mask == 0] == 0).all())

"""Every loss and estimator against hand-computed values (spec §2.3 EGAE numbers, §3–4 losses)."""

from __future__ import annotations

import math

import pytest
import torch

from learner import losses
from learner.advantages import egae, filter_groups_by_std, group_advantages, role_conditioned

V = torch.tensor([0.2, 0.4, 0.5, 0.7])


@pytest.mark.parametrize(
    "finished, lam, expect",
    [
        (False, 1.0, [0.5, 0.3, 0.2, 0.0]),
        (False, 0.95, [0.4755, 0.29, 0.2, 0.0]),
        (True, 1.0, [0.8, 0.6, 0.5, 0.3]),
        (True, 0.95, [0.732712, 0.56075, 0.485, 0.3]),
    ],
)
def test_egae_spec_values(finished, lam, expect):
    r = torch.tensor([0.0, 0.0, 0.0, 1.0 if finished else 0.0])
    adv, ret = egae(r, V, finished, gamma=1.0, lam=lam)
    assert adv.tolist() == pytest.approx(expect, abs=1e-6)
    if not finished and lam == 1.0:
        assert ret.tolist() == pytest.approx([0.7] * 4, abs=1e-6)


def test_ppo_clipped_surrogate_by_hand():
    logp = torch.log(torch.tensor([[0.5, 0.9, 0.1]]))
    old = torch.log(torch.tensor([[0.25, 0.9, 0.2]]))  # ratios 2.0, 1.0, 0.5
    adv = torch.tensor([[1.0, -1.0, -2.0]])
    mask = torch.ones(1, 3)
    loss, stats = losses.ppo_policy_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.28)
    # token 1: min(2*1, 1.28*1) = 1.28; token 2: -1; token 3: min(0.5*-2, 0.8*-2) = -1.6
    assert float(loss) == pytest.approx(-(1.28 - 1.0 - 1.6) / 3, abs=1e-6)
    assert stats["clip_frac"] == pytest.approx(2 / 3)


def test_tis_weight_is_truncated():
    logp = torch.zeros(1, 2, requires_grad=True)
    behav = torch.log(torch.tensor([[0.1, 2.0]]))  # π_old/π_behav = 10 (capped at 2) and 0.5
    adv = torch.ones(1, 2)
    loss, _ = losses.ppo_policy_loss(
        logp, logp.detach(), adv, torch.ones(1, 2), behav_logp=behav, tis_cap=2.0
    )
    assert float(loss.detach()) == pytest.approx(-(2.0 + 0.5) / 2)
    loss.backward()
    assert logp.grad[0].tolist() == pytest.approx([-1.0, -0.25])


def test_value_loss_clip_and_masked_mean():
    v, old, ret = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    # token 1: max((1-0)^2, (0.5-0)^2) = 1; token 2: (0-1)^2 = 1 -> 0.5 * mean = 0.5; masked out token 2 -> 0.5
    assert float(losses.value_loss(v, old, ret, torch.ones(1, 2), clip=0.5)) == pytest.approx(0.5)
    assert float(losses.value_loss(v, old, ret, torch.tensor([[1.0, 0.0]]), clip=0.5)) == pytest.approx(0.5)


def test_group_baselines_by_hand():
    r, g = [1.0, 0.0, 0.0, 1.0, 1.0], ["a", "a", "a", "b", "b"]
    grpo = group_advantages(r, g, "grpo")
    std = math.sqrt(2 / 9)
    assert grpo[:3] == pytest.approx([(1 - 1 / 3) / std, -(1 / 3) / std, -(1 / 3) / std], rel=1e-5)
    assert grpo[3:] == pytest.approx([0.0, 0.0])
    assert group_advantages(r, g, "rloo")[:3] == pytest.approx([1.0, -0.5, -0.5])
    assert filter_groups_by_std(r, g, keep_ratio=0.5) == [0, 1, 2]
    assert filter_groups_by_std(r, g, keep_ratio=0.5, reverse=True) == [3, 4]
    assert role_conditioned([1.0, 3.0, 10.0, 30.0], ["A", "A", "D", "D"]) == pytest.approx(
        [-1, 1, -1, 1], abs=1e-5
    )


def test_preference_losses_by_hand():
    t = lambda *x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    pw, pl, rw, rl, lw, ll = t(-1.0), t(-3.0), t(-2.0), t(-2.5), t(-1.5), t(-2.0)
    assert float(losses.dpo_loss(pw, pl, rw, rl, beta=0.5)) == pytest.approx(
        -math.log(1 / (1 + math.exp(-0.75)))
    )
    assert float(losses.ipo_loss(pw, pl, rw, rl, tau=0.5)) == pytest.approx((1.5 - 1.0) ** 2)
    # INPO: h = 2 - ητ·0.5 - (1-ητ)·0.5 = 1.5 with η=2, τ=0.25 (ητ = 0.5); target η/2 = 1
    assert float(losses.inpo_loss(pw, pl, rw, rl, lw, ll, eta=2.0, tau=0.25)) == pytest.approx(0.25)
    # COMAL coded form with η_c = 0.25 (target 2), r = 1/3: hw - hl = 2 - (1/3)(0.5) - (2/3)(0.5) = 1.5
    assert float(
        losses.comal_code_loss(pw, pl, rw, rl, lw, ll, eta_c=0.25, tau_eta_ratio=1 / 3)
    ) == pytest.approx(0.25)
    # SPPO: (logπ/πt − η(P − 1/2))² averaged
    assert float(losses.sppo_loss(t(-1.0, -2.0), t(-1.5, -1.5), t(1.0, 0.0), eta=1.0)) == pytest.approx(0.0)


def test_nash_mp_loss_is_invariant_to_a_per_group_constant():
    logp = torch.tensor([-1.0, -2.0, -0.5, -3.0])
    last, ref, win = (
        torch.tensor([-1.2, -1.8, -1.0, -1.0]),
        torch.tensor([-1.1, -1.9, -1.0, -1.0]),
        torch.tensor([1.0, 0.0, 0.5, 0.5]),
    )
    g = torch.tensor([0, 0, 1, 1])
    a = losses.nash_mp_loss(logp, last, ref, win, g, eta=2.0, beta=0.1)
    b = losses.nash_mp_loss(logp + torch.tensor([5.0, 5.0, -3.0, -3.0]), last, ref, win, g, eta=2.0, beta=0.1)
    assert float(a) == pytest.approx(float(b))
    target = (last + 0.2 * ref + 2.0 * win) / 1.2
    d = logp - target
    d[:2] -= d[:2].mean()
    d[2:] -= d[2:].mean()
    assert float(a) == pytest.approx(float((d**2).mean()))

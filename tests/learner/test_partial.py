"""Logprobs only where trained, partial fine-tuning (train_layers), a smaller critic (critic_layers)."""

from __future__ import annotations

import numpy as np
import torch

from learner.batch import collate
from learner.critic import Critic, freeze_below
from learner.forward import token_logprobs
from services.models import load_model
from services.schemas import Trajectory


def _trajs(n: int = 3) -> list[Trajectory]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        length, prompt = 20 + 3 * i, 12 + i
        mask = np.zeros(length, np.uint8)
        mask[length - 5 :] = 1  # a T-PPO window at the end: prompts and earlier windows are context
        versions = np.full(length, -1, np.int32)
        versions[prompt:] = 0
        out.append(
            Trajectory(
                job_id="j",
                episode_id=f"e{i}",
                group_id="g",
                token_ids=rng.integers(5, 4000, length),
                logprobs=np.full(length, -1.0, np.float32),
                versions=versions,
                loss_mask=mask,
                rewards=np.zeros(length, np.float32),
                prompt_len=prompt,
                finish_reason="window",
            )
        )
    return out


def test_logprobs_at_trained_positions_equal_the_full_computation(tiny_model_path):
    model, _ = load_model(tiny_model_path)
    batch = collate(_trajs(), pad_id=0)
    logp, logits, kept = token_logprobs(model, batch, with_logits=True)
    with torch.no_grad():
        full = model(input_ids=batch.input_ids, attention_mask=batch.attention).logits[:, :-1].float()
        want = torch.gather(torch.log_softmax(full, -1), 2, batch.input_ids[:, 1:, None]).squeeze(-1)
    trained = batch.mask > 0
    assert torch.allclose(logp[trained], want[trained], atol=1e-5)
    assert logits.shape[0] == int(trained.sum())  # the head ran on the trained (row, position) pairs only
    assert set(zip(*(k.tolist() for k in kept))) == set(
        zip(*(k.tolist() for k in trained.nonzero(as_tuple=True)))
    )


def test_train_layers_freezes_all_but_the_top_blocks_and_the_final_norm(tiny_model_path):
    model, _ = load_model(tiny_model_path)
    n = freeze_below(model, 1)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".layers.1." in name or name.endswith("model.norm.weight") for name in trainable)
    assert n == sum(p.numel() for p in model.parameters() if p.requires_grad)
    batch = collate(_trajs(), pad_id=0)
    (token_logprobs(model, batch) * batch.mask).sum().backward()
    assert all((p.grad is not None) == p.requires_grad for p in model.parameters())


def test_critic_from_the_first_blocks(tiny_model_path):
    critic = Critic(tiny_model_path, layers=1)
    assert len(critic.backbone.layers) == 1 and critic.backbone.config.num_hidden_layers == 1
    batch = collate(_trajs(), pad_id=0)
    values = critic(batch.input_ids, batch.attention)
    assert values.shape == batch.input_ids.shape and torch.all(values == 0)  # zero-initialised head
    freeze_below(critic, 1)
    assert critic.head.weight.requires_grad

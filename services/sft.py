"""A small supervised fine-tuning loop for transformers causal LMs on CPU: (prompt_ids, target_ids) rows.

Invariants:
- The loss is the mean next-token cross-entropy over target tokens only (prompt positions carry label
  -100, padding is masked out of attention), averaged over `grad_accum` micro-batches per optimizer step.
- Each step draws `batch_size` distinct rows per micro-batch with `rng.sample` from a `random.Random`
  (seeded with `seed` unless one is passed) and torch is seeded with `seed`: the same rows, config and
  thread count give the same weights.
- Training stops after `steps` optimizer steps or, when `max_seconds` is set, after the first step that
  ends past it; the result says which.
- `train_layers=N` trains only the top N decoder layers and the final norm (embeddings, the output head
  and the lower layers stay frozen, so backward stops at layer N from the top).
- `groups` (one label per row, optional): each micro-batch is drawn from a single group, the group chosen
  with probability proportional to its size; without it a micro-batch is drawn from all rows.
- `shared_prefix=True` runs the micro-batch's longest common prompt prefix (a shared instruction) once
  without gradient, reuses its KV cache for the batch, and computes logits only at target positions. The
  forward pass is exact; the gradient omits the path through the prefix's keys and values. It needs a
  decoder exposing `get_decoder()` / `get_output_embeddings()` (Llama, Qwen and the like).
- `bf16_autocast=True` runs forward and backward under CPU bfloat16 autocast (about twice as fast on CPUs
  with AVX-512 BF16, many times slower on CPUs without it, where bfloat16 is emulated: off by default and
  in the built-in recipes); the weights and the optimizer state stay float32.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

Row = tuple[list[int], list[int]]  # (prompt_ids, target_ids)


@dataclass(frozen=True)
class SFTConfig:
    steps: int = 100
    batch_size: int = 16
    lr: float = 3e-3
    grad_accum: int = 1
    weight_decay: float = 0.01
    warmup_steps: int = 0  # linear warm-up of the learning rate
    max_seconds: float | None = None
    max_len: int | None = None  # rows longer than this (prompt + target) are left out
    train_layers: int | None = None
    shared_prefix: bool = False
    bf16_autocast: bool = False
    log_every: int = 0  # 0: no progress lines
    seed: int = 0


@dataclass
class SFTResult:
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)  # one per optimizer step
    rows: int = 0  # rows trained on (after max_len)
    dropped: int = 0  # rows left out by max_len
    stopped_by_time: bool = False


def _say(msg: str) -> None:
    print(f"[sft] {msg}", file=sys.stderr, flush=True)


def common_prefix(prompts: Sequence[Sequence[int]]) -> list[int]:
    """The longest token prefix every prompt starts with."""
    if not prompts:
        return []
    first, n = prompts[0], min(len(p) for p in prompts)
    for p in prompts[1:]:
        i = 0
        while i < n and p[i] == first[i]:
            i += 1
        n = i
    return list(first[:n])


def _freeze_below(model, train_layers: int) -> None:
    layers = model.get_decoder().layers
    if not 1 <= train_layers <= len(layers):
        raise ValueError(f"train_layers must be in [1, {len(layers)}], got {train_layers}")
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = list(layers[len(layers) - train_layers :]) + [model.get_decoder().norm]
    for module in trainable:
        for p in module.parameters():
            p.requires_grad_(True)


def _pad(rows: Sequence[Row], pad_id: int, skip: int = 0) -> tuple[torch.Tensor, ...]:
    """(ids, attention mask, labels), right-padded; the first `skip` prompt tokens of each row left out."""
    seqs = [(p[skip:], t) for p, t in rows]
    width = max(len(p) + len(t) for p, t in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    for k, (p, t) in enumerate(seqs):
        ids[k, : len(p) + len(t)] = torch.tensor(p + t)
        mask[k, : len(p) + len(t)] = 1
        labels[k, len(p) : len(p) + len(t)] = torch.tensor(t)
    return ids, mask, labels


def _loss_full(model, rows: Sequence[Row], pad_id: int) -> torch.Tensor:
    ids, mask, labels = _pad(rows, pad_id)
    return model(input_ids=ids, attention_mask=mask, labels=labels).loss


def _loss_prefixed(model, rows: Sequence[Row], pad_id: int) -> torch.Tensor:
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    # the prefix stops one token short of the shortest prompt: that token's position predicts the
    # first target token, so it has to be in the pass with gradient
    prefix = common_prefix([p for p, _ in rows])[: min(len(p) for p, _ in rows) - 1]
    n, cache = len(prefix), None
    if n:
        with torch.no_grad():
            cache = decoder(input_ids=torch.tensor([prefix]), use_cache=True).past_key_values
        cache.batch_repeat_interleave(len(rows))
    ids, mask, labels = _pad(rows, pad_id, skip=n)
    full_mask = torch.cat([torch.ones((len(rows), n), dtype=torch.long), mask], dim=1)
    pos = torch.arange(n, n + ids.shape[1]).expand(len(rows), -1)
    hidden = decoder(
        input_ids=ids, attention_mask=full_mask, position_ids=pos, past_key_values=cache, use_cache=n > 0
    ).last_hidden_state
    nxt = labels[:, 1:]  # position j predicts token j + 1
    keep = nxt != -100
    logits = head(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), nxt[keep])


def _check(rows: Sequence[Row], groups: Sequence | None, cfg: SFTConfig) -> dict[object, list[Row]]:
    """The rows that fit, by group (one group, None, without `groups`)."""
    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.grad_accum < 1:
        raise ValueError("steps, batch_size and grad_accum must be at least 1")
    if groups is not None and len(groups) != len(rows):
        raise ValueError(f"{len(groups)} group labels for {len(rows)} rows")
    pools: dict[object, list[Row]] = {}
    for i, (p, t) in enumerate(rows):
        if t and (cfg.max_len is None or len(p) + len(t) <= cfg.max_len):
            pools.setdefault(None if groups is None else groups[i], []).append((p, t))
    small = {g: len(v) for g, v in pools.items() if len(v) < cfg.batch_size}
    if not pools or small:
        raise ValueError(
            f"too few usable rows for batch_size {cfg.batch_size} (of {len(rows)}; max_len {cfg.max_len}, "
            f"empty targets dropped): {small or 'none left'}"
        )
    return pools


def _micro_batch(pools: dict[object, list[Row]], rng: random.Random, size: int) -> list[Row]:
    if len(pools) == 1:
        return rng.sample(next(iter(pools.values())), size)
    names = list(pools)
    group = rng.choices(names, weights=[len(pools[g]) for g in names])[0]
    return rng.sample(pools[group], size)


def train(
    model,
    rows: Sequence[Row],
    pad_id: int,
    cfg: SFTConfig,
    rng: random.Random | None = None,
    groups: Sequence | None = None,
    say: Callable[[str], None] = _say,
) -> SFTResult:
    """Fine-tune `model` in place on `rows` (see the module docstring); returns with it in eval mode."""
    pools = _check(rows, groups, cfg)
    kept = sum(len(v) for v in pools.values())
    rng = rng if rng is not None else random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    if cfg.train_layers is not None:
        _freeze_below(model, cfg.train_layers)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()
    result, t0 = SFTResult(0, 0.0, rows=kept, dropped=len(rows) - kept), time.monotonic()
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
        opt.zero_grad()
        total = 0.0
        for _ in range(cfg.grad_accum):
            batch = _micro_batch(pools, rng, cfg.batch_size)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16_autocast):
                if cfg.shared_prefix:
                    loss = _loss_prefixed(model, batch, pad_id)
                else:
                    loss = _loss_full(model, batch, pad_id)
            (loss / cfg.grad_accum).backward()
            total += float(loss.detach()) / cfg.grad_accum
        opt.step()
        result.steps, result.seconds = step + 1, time.monotonic() - t0
        result.losses.append(total)
        _progress(result, cfg, say)
        if cfg.max_seconds is not None and result.seconds > cfg.max_seconds:
            result.stopped_by_time = result.steps < cfg.steps
            break
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return result


def _progress(result: SFTResult, cfg: SFTConfig, say: Callable[[str], None]) -> None:
    if not cfg.log_every or (result.steps % cfg.log_every and result.steps != 1):
        return
    recent = result.losses[-cfg.log_every :]
    say(
        f"step {result.steps}/{cfg.steps} loss {result.losses[-1]:.4f} (mean of last {len(recent)}: "
        f"{sum(recent) / len(recent):.4f}) {result.seconds:.1f}s"
    )

"""The learner's forwards, doing only the work the loss reads — exactly.

Invariant: at every trained position (mask > 0) the log-probs, logits and values returned here equal the
plain `model(input_ids, attention_mask)` forward's up to float rounding, and so do the gradients of any
loss built from them. Positions nothing trains on hold 0 and carry no gradient. Two savings:

- **Shared prefix.** The rows of one group (one prompt, `TrainBatch.groups`) start with the same tokens:
  the prompt, and in a T-PPO batch possibly some generated tokens. That prefix is encoded once, with
  gradient, as a batch of one; its keys and values are repeated to the rows, which encode only their
  own tokens on top. Exact because attention is causal (a prefix position's state does not depend on
  what follows it), and the repeat sums the rows' gradients back into the one prefix pass. The prefix
  stops before the group's first trained position, so every state the loss reads comes from a row pass.
- **Length buckets.** A group's rows are encoded in a few passes of similar lengths (sorted, split where
  the padding saved outweighs a pass's fixed cost), each on top of the same prefix pass: in a long-tailed
  batch one long row no longer pads every other row to its length.
- **Exact positions.** The LM head, the vocabulary-wide log-softmax and the value head run on the
  (row, position) pairs trained on, not on every position of the padded batch (a long-tailed batch is
  mostly padding and other rows' positions: `logits_to_keep` can only take positions every row shares).

A model this cannot split (a DDP/FSDP wrapper, whose forward does the gradient sync; a model without
`get_decoder`; logit soft-capping or scaling) takes the plain full forward, with the same outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

MIN_PREFIX = 16  # a shorter shared prefix is not worth its extra forward call
PASS_COST_TOKENS = 256  # a pass's fixed cost in encoded tokens (tuned on the P1 bench shape: 128-1024 tried)


@dataclass(frozen=True)
class Part:
    """Rows encoded in one pass. `start` > 0: on top of the shared prefix pass of row `key`'s first
    `start` tokens (one per group, reused by every part of the group)."""

    rows: tuple[int, ...]
    start: int
    end: int
    key: int = -1


def buckets(lengths: dict[int, int], start: int) -> list[tuple[int, ...]]:
    """Rows split into passes of similar length: the split with the least padded tokens plus
    PASS_COST_TOKENS per pass (exact dynamic programme over the rows sorted by length)."""
    order = sorted(lengths, key=lambda r: (lengths[r], r))
    best, cut = [0.0], [0]
    for j in range(1, len(order) + 1):
        costs = [best[i] + PASS_COST_TOKENS + (j - i) * (lengths[order[j - 1]] - start) for i in range(j)]
        i = min(range(j), key=costs.__getitem__)
        best.append(costs[i])
        cut.append(i)
    out, j = [], len(order)
    while j:
        out.append(tuple(sorted(order[cut[j] : j])))
        j = cut[j]
    return out[::-1]


def plan(input_ids: torch.Tensor, attention: torch.Tensor, mask: torch.Tensor, groups) -> list[Part]:
    """Split the batch into passes: one per group with a shared prefix of at least MIN_PREFIX tokens
    (capped before the group's first trained position), one plain pass for every other row."""
    lengths = attention.sum(1).tolist()
    trained = mask > 0
    never = torch.full((len(lengths),), 1 << 30, dtype=torch.long, device=mask.device)
    first = torch.where(trained.any(1), trained.float().argmax(1), never)  # first trained position
    by: dict[object, list[int]] = {}
    for i in range(len(lengths)):
        by.setdefault(groups[i] if groups else i, []).append(i)
    parts, plain = [], []
    for rows in by.values():
        n = _shared(input_ids, rows, min(min(lengths[i] for i in rows) - 1, int(first[rows].min())))
        if len(rows) > 1 and n >= MIN_PREFIX:
            for chunk in buckets({i: lengths[i] for i in rows}, n):
                parts.append(Part(chunk, n, max(lengths[i] for i in chunk), key=rows[0]))
        else:
            plain += rows
    for chunk in buckets({i: lengths[i] for i in plain}, 0) if plain else []:
        parts.append(Part(chunk, 0, max(lengths[i] for i in chunk)))
    return parts


def _shared(input_ids: torch.Tensor, rows: list[int], cap: int) -> int:
    """Length of the longest token prefix all `rows` share, at most `cap`."""
    if cap <= 0:
        return 0
    block = input_ids[rows, :cap]
    same = (block == block[:1]).all(0)
    return cap if bool(same.all()) else int((~same).float().argmax())


def splittable(model: torch.nn.Module) -> bool:
    if hasattr(model, "module") or not hasattr(model, "get_decoder"):
        return False  # a DDP / FSDP wrapper syncs gradients in its own forward
    cfg = getattr(model, "config", None)
    return not any(
        getattr(cfg, k, None) for k in ("final_logit_softcapping", "logit_scale", "logits_scaling")
    )


def hidden_states(decoder: torch.nn.Module, input_ids, attention, parts: list[Part]) -> torch.Tensor:
    """[B, T, H] last hidden states of `decoder` at every real position of every row (0 at padding and,
    for a row with a shared prefix, at the prefix positions: they are never read)."""
    out, prefixes = None, {}
    for part in parts:
        rows = list(part.rows)
        ids, att = input_ids[rows, : part.end], attention[rows, : part.end]
        if part.start:
            if part.key not in prefixes:  # (keys, values) per layer of the group's prefix, with gradient
                pre = decoder(input_ids=input_ids[part.key : part.key + 1, : part.start], use_cache=True)
                prefixes[part.key] = [(layer.keys, layer.values) for layer in pre.past_key_values.layers]
            cache = _repeated(prefixes[part.key], len(rows))
            pos = torch.arange(part.start, part.end, device=ids.device).expand(len(rows), -1)
            h = decoder(
                input_ids=ids[:, part.start :],
                attention_mask=att,
                position_ids=pos,
                past_key_values=cache,
                use_cache=True,
            ).last_hidden_state
        else:
            h = decoder(input_ids=ids, attention_mask=att).last_hidden_state
        if out is None:
            out = h.new_zeros(input_ids.shape[0], input_ids.shape[1], h.shape[-1])
        out[rows, part.start : part.end] = h
    return out


def _repeated(kv: list[tuple[torch.Tensor, torch.Tensor]], n: int):
    from transformers import DynamicCache

    cache = DynamicCache()
    for i, (k, v) in enumerate(kv):
        cache.update(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1), i)
    return cache


def trained_pairs(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, positions) of every trained prediction; position t predicts token t + 1."""
    rows, pos = (mask > 0).nonzero(as_tuple=True)
    return rows, pos


def token_logprobs(model: torch.nn.Module, batch, with_logits: bool = False):
    """log π(token_{t+1} | prefix_{≤t}) in fp32 at every trained position, 0 elsewhere ([B, T-1]).
    With `with_logits`, also the logits [N, V] at the trained pairs and the pairs (rows, positions)."""
    rows, pos = trained_pairs(batch.mask)
    if rows.numel() and splittable(model):
        parts = plan(batch.input_ids, batch.attention, batch.mask, batch.groups)
        hidden = hidden_states(model.get_decoder(), batch.input_ids, batch.attention, parts)
        logits = model.get_output_embeddings()(hidden[rows, pos]).float()
    else:
        if not rows.numel():  # nothing trained: every position, so that the loss still has a graph
            rows, pos = _all_pairs(batch.mask)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention).logits[rows, pos].float()
    lp = torch.gather(F.log_softmax(logits, -1), 1, batch.input_ids[rows, pos + 1, None]).squeeze(-1)
    logp = lp.new_zeros(batch.mask.shape).index_put((rows, pos), lp)
    return (logp, logits, (rows, pos)) if with_logits else logp


def values(critic: torch.nn.Module, batch) -> torch.Tensor:
    """V(prefix ≤ t) at every trained position t, 0 elsewhere ([B, T-1], fp32)."""
    rows, pos = trained_pairs(batch.mask)
    inner = getattr(critic, "backbone", None)
    if not rows.numel() or inner is None or hasattr(critic, "module"):
        return critic(batch.input_ids, batch.attention)[:, :-1] * (batch.mask > 0)
    parts = plan(batch.input_ids, batch.attention, batch.mask, batch.groups)
    hidden = hidden_states(inner, batch.input_ids, batch.attention, parts)
    v = critic.head(hidden[rows, pos]).squeeze(-1).float()
    return v.new_zeros(batch.mask.shape).index_put((rows, pos), v)


def _all_pairs(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    b, t = mask.shape
    rows = torch.arange(b, device=mask.device)
    return rows.repeat_interleave(t), torch.arange(t, device=mask.device).repeat(b)

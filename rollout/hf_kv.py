"""Per-sequence KV caches kept between `generate` calls of the transformers engine (prefix reuse).

A T-PPO window step resends a sequence as prompt + every token so far. With a `cache_key` the engine
keeps that sequence's keys/values from the previous call and prefills only the new suffix (normally
nothing: the last sampled token is the next input).

Invariants:
- an entry holds the KV of exactly `entry.tokens`, computed in that order; a request reuses it only up
  to the longest common prefix with its ids, and never for its last id (the model must be fed at
  least one token to give the next token's logits).
- `entry.version` is the oldest policy version any of its KV was computed under.
- the store is bounded by entry count and bytes (LRU eviction); an entry taken into a running batch is
  out of the store (not counted) until its row finishes and puts it back.
- a batch is right-aligned: padding (mask 0) sits left of each row's cached KV and left of its new
  ids, and position ids are each row's own token indices, so padding is invisible to every row.
- reuse needs a model whose cache layers are all plain `DynamicLayer`s (full attention): a sliding
  window or recurrent layer cannot be cut per row and re-stacked; `reusable()` says which.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


@dataclass
class KVEntry:
    tokens: list[int]
    layers: list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values), each [heads, len, dim]
    version: int

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.layers)

    def reusable_for(self, ids: list[int]) -> int:
        """Tokens of this entry a request for `ids` may reuse: the common prefix, short of ids[-1]."""
        n = min(len(self.tokens), len(ids) - 1)
        if self.tokens[:n] == ids[:n]:
            return n
        return next(i for i in range(n) if self.tokens[i] != ids[i])

    def cropped(self, n: int) -> KVEntry:
        if n == len(self.tokens):
            return self
        return KVEntry(self.tokens[:n], [(k[:, :n], v[:, :n]) for k, v in self.layers], self.version)


class KVStore:
    """Bounded LRU of KV entries by sequence key; thread-safe (`release` comes from other threads)."""

    def __init__(self, max_entries: int, max_bytes: int):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._entries: OrderedDict[str, KVEntry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.counts = {"hits": 0, "misses": 0, "reused_tokens": 0, "evicted": 0, "dropped_stale": 0}

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def take(self, key: str) -> KVEntry | None:
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is not None:
                self._bytes -= entry.nbytes
            return entry

    def put(self, key: str, entry: KVEntry) -> None:
        size = entry.nbytes
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            if not self.enabled or size > self.max_bytes:
                return
            self._entries[key] = entry
            self._bytes += size
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= dropped.nbytes
                self.counts["evicted"] += 1

    def release(self, keys) -> None:
        with self._lock:
            for key in keys:
                entry = self._entries.pop(key, None)
                if entry is not None:
                    self._bytes -= entry.nbytes

    def clear_stale(self) -> None:
        """Drop every entry (after a weight update under `recompute`: all were computed before it)."""
        with self._lock:
            self.counts["dropped_stale"] += len(self._entries)
            self._entries.clear()
            self._bytes = 0

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {**self.counts, "entries": len(self._entries), "bytes": self._bytes}


def reusable(model: torch.nn.Module) -> bool:
    """Whether this model's KV cache is plain full-attention layers (per-row cut and re-stack is exact)."""
    try:
        cache = DynamicCache(config=model.config)
    except Exception:
        return False
    return bool(cache.layers) and all(type(layer) is DynamicLayer for layer in cache.layers)


def assemble(entries: list[KVEntry | None], chunks: list[list[int]], pad: int, device: torch.device):
    """One batch of rows, row i continuing from `entries[i]` (or from nothing) with new ids `chunks[i]`
    (at least one each). Returns input ids, attention mask (past + new), position ids and the cache."""
    b, width = len(chunks), max(len(c) for c in chunks)
    past = max((len(e) for e in entries if e is not None), default=0)
    ids = torch.full((b, width), pad, dtype=torch.long)
    mask = torch.zeros((b, past + width), dtype=torch.long)
    pos = torch.zeros((b, width), dtype=torch.long)
    for i, (e, c) in enumerate(zip(entries, chunks)):
        n = len(e) if e is not None else 0
        mask[i, past - n : past] = 1
        mask[i, past + width - len(c) :] = 1
        ids[i, width - len(c) :] = torch.tensor(c)
        pos[i, width - len(c) :] = torch.arange(n, n + len(c))
    cache = _stack(entries, past, device) if past else None
    return ids.to(device), mask.to(device), pos.to(device), cache


def _stack(entries: list[KVEntry | None], past: int, device: torch.device) -> DynamicCache:
    """The rows' KV right-aligned in `past` columns (zeros, masked, to their left)."""
    template = next(e for e in entries if e is not None and len(e))
    layers = []
    for li, (k0, _) in enumerate(template.layers):
        shape = (len(entries), k0.shape[0], past, k0.shape[-1])
        keys = torch.zeros(shape, dtype=k0.dtype, device=device)
        values = torch.zeros(shape, dtype=k0.dtype, device=device)
        for i, e in enumerate(entries):
            if e is not None and len(e):
                k, v = e.layers[li]
                keys[i, :, past - len(e) :] = k
                values[i, :, past - len(e) :] = v
        layers.append((keys, values))
    return DynamicCache(ddp_cache_data=layers)


def extract(cache, mask: torch.Tensor, row: int, tokens: list[int], version: int) -> KVEntry:
    """Row `row`'s KV (its unmasked columns) as an entry for `tokens`, copied out of the batch."""
    idx = mask[row].nonzero().squeeze(-1)
    if idx.numel() != len(tokens):
        raise RuntimeError(f"KV row holds {idx.numel()} tokens, expected {len(tokens)}")
    layers = [(layer.keys[row][:, idx], layer.values[row][:, idx]) for layer in cache.layers]
    return KVEntry(list(tokens), layers, version)


def trim_left(cache, mask: torch.Tensor) -> torch.Tensor:
    """Cut the leading columns no row attends to (after long rows left the batch); returns the mask."""
    used = mask.any(0).nonzero()
    cut = int(used[0]) if used.numel() else 0
    if cut:
        for layer in cache.layers:
            layer.keys, layer.values = layer.keys[:, :, cut:], layer.values[:, :, cut:]
    return mask[:, cut:]

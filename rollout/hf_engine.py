"""transformers backend: our own batched decode loop over a KV cache.

Not `model.generate()`: we need to apply a weight update *between two decode steps* ("keep" mode) and
tag each token with the version that produced it, which generate() cannot do.

Prefix reuse (rollout/hf_kv.py): a request with a `cache_key` continues from the KV its sequence left
at its previous call (a T-PPO window), so only the new suffix is prefilled; `release(keys)` frees
finished sequences. Rows leave the batch as they finish, so the longest row does not keep the others'
compute. `kv_cache_on_update` decides what KV of older weights is worth:
- "recompute": none. An update drops the store, and a batch in flight when one lands is re-prefilled
  under the new weights (one batched forward) before the next token: every token's logprob is that of
  a full forward under the version it records.
- "keep" (PipelineRL's in-flight updates): stale KV stays in use; the logprob recorded is still the
  distribution the token was sampled from, so importance correction stays exact.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from rollout.engine import Engine, EngineError, GenOutput, GenRequest, KVOnUpdate, UpdateMode, check_update
from rollout.hf_kv import KVEntry, KVStore, assemble, extract, reusable, trim_left


@dataclass
class _Row:
    index: int  # the request this row answers
    req: GenRequest
    tokens: list[int]  # prompt + generated; the batch's KV covers all but the last, the next input
    gen: torch.Generator
    stops: set[int]
    kv_version: int  # oldest weights version among this row's KV
    entry: KVEntry | None = None  # reused KV, until the batch is built


@dataclass
class _Batch:
    rows: list[_Row]
    ids: torch.Tensor
    mask: torch.Tensor  # past + current input columns
    pos: torch.Tensor
    cache: object
    trim: bool

    def drop(self, done: list[int]) -> None:
        gone = set(done)
        keep = [j for j in range(len(self.rows)) if j not in gone]
        self.rows = [self.rows[j] for j in keep]
        if not keep:
            return
        index = torch.tensor(keep, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask, self.pos = self.mask[index], self.pos[index]
        if self.trim:
            self.mask = trim_left(self.cache, self.mask)

    def advance(self, device: torch.device) -> None:
        """Feed every row its last sampled token next."""
        self.ids = torch.tensor([[r.tokens[-1]] for r in self.rows], device=device)
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], -1)
        self.pos = self.pos[:, -1:] + 1


class HFEngine(Engine):
    name = "transformers"

    def __init__(
        self,
        model: str,
        dtype: str = "float32",
        device: str | None = None,
        threads: int | None = None,
        update_timeout_s: float = 120.0,
        kv_cache_on_update: KVOnUpdate = "recompute",
        kv_cache_entries: int = 1024,
        kv_cache_bytes: int = 2 << 30,
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from services.models import resolve_model

        if threads:
            torch.set_num_threads(threads)
        path = resolve_model(model)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._tok = AutoTokenizer.from_pretrained(path)
        self._model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(self.device)
        self._model.eval()
        self.model_path = path
        eos = self._model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        self._eos = {e for e in eos + [self._tok.eos_token_id] if e is not None}
        self._pad = self._tok.pad_token_id if self._tok.pad_token_id is not None else min(self._eos)
        self._version = 0
        self._max_context = int(getattr(self._model.config, "max_position_embeddings", 0) or 2048)
        self._gen_lock = threading.Lock()  # the model is not re-entrant: one batch at a time
        self._update_lock = threading.Lock()  # one weight update at a time
        self._pending: tuple[list[tuple[str, torch.Tensor]], int] | None = None
        self._params = self._model.state_dict(keep_vars=True)  # includes tied names (lm_head.weight)
        self._manifest = {
            n: (tuple(p.shape), str(p.dtype).removeprefix("torch.")) for n, p in self._params.items()
        }
        self.update_timeout_s = update_timeout_s
        if kv_cache_on_update not in ("recompute", "keep"):
            raise ValueError(f"kv_cache_on_update must be 'recompute' or 'keep', not {kv_cache_on_update!r}")
        self.kv_cache_on_update = kv_cache_on_update
        self._reusable = reusable(self._model)
        self._kv = KVStore(kv_cache_entries if self._reusable else 0, kv_cache_bytes)

    # ------------------------------------------------------------------ interface
    @property
    def model(self) -> torch.nn.Module:
        return self._model

    def generate(self, requests: list[GenRequest]) -> list[GenOutput]:
        if not requests:
            return []
        with self._gen_lock, torch.inference_mode():
            try:
                return self._decode(requests)
            finally:
                self._apply_pending()

    def load_weights(
        self, named: Iterable[tuple[str, torch.Tensor]], version: int, mode: UpdateMode = "keep"
    ) -> None:
        named = list(named)
        check_update(self._manifest, named)
        with self._update_lock:
            if mode == "wait":  # in-flight batch finishes on the old version first
                with self._gen_lock:
                    self._apply(named, version)
                return
            self._pending = (named, version)
            deadline = time.monotonic() + self.update_timeout_s
            while self._pending is not None:  # applied by us when idle, or by the decode loop
                if self._gen_lock.acquire(timeout=0.01):
                    try:
                        self._apply_pending()
                    finally:
                        self._gen_lock.release()
                if time.monotonic() > deadline:
                    self._pending = None
                    raise EngineError(
                        f"weight update to v{version} not applied within {self.update_timeout_s}s"
                    )

    def release(self, keys: Iterable[str]) -> None:
        self._kv.release(keys)

    def kv_stats(self) -> dict[str, int]:
        """Prefix-reuse counters: hits, misses, reused_tokens, evicted, dropped_stale, entries, bytes."""
        return self._kv.stats()

    # ------------------------------------------------------------------ internals
    def _apply_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            self._apply(*pending)

    @torch.no_grad()
    def _apply(self, named: list[tuple[str, torch.Tensor]], version: int) -> None:
        for name, tensor in named:
            self._params[name].copy_(tensor.to(self.device))
        self._version = version
        if self.kv_cache_on_update == "recompute":
            self._kv.clear_stale()

    def _decode(self, reqs: list[GenRequest]) -> list[GenOutput]:
        self._apply_pending()  # an update waiting now lands before any KV is computed
        rows = [self._row(i, r) for i, r in enumerate(reqs)]
        out = [GenOutput(token_ids=[], logprobs=[], versions=[], finish_reason="length") for _ in reqs]
        batch = self._start(rows)
        for _ in range(max(r.params.max_tokens for r in reqs)):
            self._apply_pending()  # "keep" updates land here, between two decode steps
            if self.kv_cache_on_update == "recompute" and any(
                r.kv_version != self._version for r in batch.rows
            ):
                for r in batch.rows:  # no token is sampled from KV of older weights: one batched prefill
                    r.entry, r.kv_version = None, self._version
                batch = self._start(batch.rows)
            res = self._model(
                input_ids=batch.ids,
                attention_mask=batch.mask,
                position_ids=batch.pos,
                past_key_values=batch.cache,
                use_cache=True,
                logits_to_keep=1,
            )
            batch.cache = res.past_key_values
            logits = res.logits[:, -1, :].float()
            logp = torch.log_softmax(logits, -1)
            done = []
            for j, (r, tok) in enumerate(zip(batch.rows, sample(logits, batch.rows))):
                o = out[r.index]
                o.token_ids.append(tok)
                o.logprobs.append(float(logp[j, tok]))
                o.versions.append(self._version)
                r.tokens.append(tok)
                if tok in r.stops:
                    o.finish_reason = "stop"
                    done.append(j)
                elif len(o.token_ids) >= r.req.params.max_tokens:
                    done.append(j)
            if done:
                self._finish(batch, done)
            if not batch.rows:
                break
            batch.advance(self.device)
        return out

    def _row(self, index: int, req: GenRequest) -> _Row:
        p = req.params
        row = _Row(
            index=index,
            req=req,
            tokens=list(req.prompt_ids),
            gen=torch.Generator().manual_seed(p.seed if p.seed is not None else random.getrandbits(63)),
            stops=set() if p.ignore_eos else self._eos | set(p.stop_token_ids),
            kv_version=self._version,
        )
        entry = self._kv.take(req.cache_key) if req.cache_key is not None else None
        if entry is not None and self.kv_cache_on_update == "recompute" and entry.version != self._version:
            entry = None
        n = entry.reusable_for(row.tokens) if entry is not None else 0
        if n:
            row.entry, row.kv_version = entry.cropped(n), min(entry.version, self._version)
            self._kv.counts["hits"] += 1
            self._kv.counts["reused_tokens"] += n
        elif req.cache_key is not None:
            self._kv.counts["misses"] += 1
        return row

    def _start(self, rows: list[_Row]) -> _Batch:
        """The decode batch of `rows`: each row's KV covers tokens[:-1] and its input is tokens[-1].
        What the rows' reused KV lacks is prefilled first, in one batched forward over those rows."""
        if not any(r.entry is not None for r in rows) or not self._reusable:
            ids, mask, pos, cache = assemble(
                [None] * len(rows), [r.tokens for r in rows], self._pad, self.device
            )
            return _Batch(rows, ids, mask, pos, cache, trim=self._reusable)
        need = [r for r in rows if len(r.tokens) - 1 > (len(r.entry) if r.entry is not None else 0)]
        if need:
            chunks = [r.tokens[len(r.entry) if r.entry is not None else 0 : -1] for r in need]
            ids, mask, pos, cache = assemble([r.entry for r in need], chunks, self._pad, self.device)
            res = self._model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=pos,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            for j, r in enumerate(need):
                r.entry = extract(res.past_key_values, mask, j, r.tokens[:-1], r.kv_version)
        entries = [r.entry for r in rows]
        for r in rows:
            r.entry = None  # the batch holds the KV now
        ids, mask, pos, cache = assemble(entries, [[r.tokens[-1]] for r in rows], self._pad, self.device)
        return _Batch(rows, ids, mask, pos, cache, trim=True)

    def _finish(self, batch: _Batch, done: list[int]) -> None:
        """Rows `done` leave the batch; a keyed row's KV (all but its last token) goes to the store."""
        for j in done:
            r = batch.rows[j]
            if r.req.cache_key is not None and self._kv.enabled and self._reusable:
                self._kv.put(
                    r.req.cache_key, extract(batch.cache, batch.mask, j, r.tokens[:-1], r.kv_version)
                )
        batch.drop(done)

    def close(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def sample(logits: torch.Tensor, rows: list[_Row]) -> list[int]:
    """One token per row of `logits` [B, V] from each row's temperature / top-p distribution and its own
    seeded generator: batched softmax, top-p and inverse-CDF lookup, one uniform draw per row (a
    per-row `torch.multinomial` was a fifth of a T-PPO window step). Temperature 0 is the argmax."""
    out: list[int | None] = [None] * len(rows)
    by: dict[tuple[float, float], list[int]] = {}
    for j, r in enumerate(rows):
        by.setdefault((r.req.params.temperature, r.req.params.top_p), []).append(j)
    for (temperature, top_p), idx in by.items():
        sub = logits[idx]
        if temperature == 0:
            picks = sub.argmax(-1).tolist()
        else:
            probs = torch.softmax(sub / temperature, -1)
            if top_p < 1.0:
                sorted_p, order = probs.sort(-1, descending=True)
                keep = sorted_p.cumsum(-1) - sorted_p < top_p  # smallest prefix with mass >= top_p
                probs = torch.zeros_like(probs).scatter(-1, order, sorted_p * keep)
            cdf = probs.cumsum(-1)
            u = torch.cat([torch.rand(1, generator=rows[j].gen) for j in idx]).to(cdf.device)
            # right=True: the first index whose CDF exceeds u, never a token of probability 0
            picks = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).squeeze(-1)
            picks = picks.clamp(max=cdf.shape[-1] - 1).tolist()
        for j, t in zip(idx, picks):
            out[j] = int(t)
    return out  # type: ignore[return-value]

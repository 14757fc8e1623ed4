"""transformers backend: our own batched decode loop over a KV cache.

Not `model.generate()`: we need to apply a weight update *between two decode steps* ("keep" mode) and
tag each token with the version that produced it, which generate() cannot do.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterable

import torch

from rollout.engine import Engine, EngineError, GenOutput, GenRequest, UpdateMode, check_update


class HFEngine(Engine):
    name = "transformers"

    def __init__(
        self,
        model: str,
        dtype: str = "float32",
        device: str | None = None,
        threads: int | None = None,
        update_timeout_s: float = 120.0,
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

    def _decode(self, reqs: list[GenRequest]) -> list[GenOutput]:
        b, model, dev = len(reqs), self._model, self.device
        width = max(len(r.prompt_ids) for r in reqs)
        ids = torch.full((b, width), self._pad, dtype=torch.long)
        mask = torch.zeros((b, width), dtype=torch.long)
        for i, r in enumerate(reqs):  # left padding keeps every row's next token at the last column
            ids[i, width - len(r.prompt_ids) :] = torch.tensor(r.prompt_ids)
            mask[i, width - len(r.prompt_ids) :] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        gens = [
            torch.Generator().manual_seed(
                r.params.seed if r.params.seed is not None else random.getrandbits(63)
            )
            for r in reqs
        ]
        stops = [set() if r.params.ignore_eos else self._eos | set(r.params.stop_token_ids) for r in reqs]
        out = [GenOutput(token_ids=[], logprobs=[], versions=[], finish_reason="length") for _ in reqs]
        active = [True] * b
        cache = None
        for _ in range(max(r.params.max_tokens for r in reqs)):
            self._apply_pending()  # "keep" updates land here, between two decode steps
            res = model(
                input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True
            )
            cache = res.past_key_values
            logits = res.logits[:, -1, :].float()
            logp = torch.log_softmax(logits, -1)
            nxt = torch.full((b,), self._pad, dtype=torch.long)
            for i, r in enumerate(reqs):
                if not active[i]:
                    continue
                tok = self._sample(logits[i], r.params.temperature, r.params.top_p, gens[i])
                o = out[i]
                o.token_ids.append(tok)
                o.logprobs.append(float(logp[i, tok]))
                o.versions.append(self._version)
                nxt[i] = tok
                if tok in stops[i]:
                    o.finish_reason, active[i] = "stop", False
                elif len(o.token_ids) >= r.params.max_tokens:
                    active[i] = False
            if not any(active):
                break
            ids = nxt[:, None].to(dev)
            mask = torch.cat([mask, torch.ones((b, 1), dtype=mask.dtype, device=dev)], -1)
            pos = pos[:, -1:] + 1
        return out

    @staticmethod
    def _sample(logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator) -> int:
        if temperature == 0:
            return int(logits.argmax())
        probs = torch.softmax(logits / temperature, -1)
        if top_p < 1.0:
            sorted_p, order = probs.sort(descending=True)
            keep = sorted_p.cumsum(-1) - sorted_p < top_p  # smallest prefix with mass >= top_p
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
        return int(torch.multinomial(probs.cpu(), 1, generator=gen))

    def close(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

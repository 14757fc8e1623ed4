"""A small local judge model run with transformers (CPU or one GPU), loaded by services.models.

Generation is batched (left padding) under a lock, so concurrent Serve requests do not oversubscribe the
replica's CPU threads. `timeout_s` becomes generate()'s max_time: a batch that hits it is reported as a
timeout. Label logprobs come from one forward pass over prompt + answer prefix.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from judge import metrics
from judge.config import JudgeConfig
from judge.engines.base import Completion, LLMEngine
from judge.parsers import split_reasoning


class TransformersEngine(LLMEngine):
    backend = "transformers"

    def __init__(self, config: JudgeConfig) -> None:
        super().__init__(config)
        import torch

        from services.models import load_model

        self.torch = torch
        self.model, self.tok = load_model(config.model or "tiny-qwen3", dtype=config.dtype)
        self.tok.padding_side = "left"
        self.tok.truncation_side = "left"  # keep the end of an over-long prompt: the question to answer
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        self.max_positions = int(getattr(self.model.config, "max_position_embeddings", 2048))
        self._lock = threading.Lock()

    def _chat(self, prompt: str, thinking: bool | None) -> str:
        messages = [{"role": "user", "content": prompt}]
        if getattr(self.tok, "chat_template", None):
            kwargs = {} if thinking is None else {"enable_thinking": thinking}
            return self.tok.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True, **kwargs
            )
        return f"User: {prompt}\nAssistant:"

    def _encode(self, texts: list[str], reserve: int):
        return self.tok(
            texts,
            return_tensors="pt",
            padding=True,
            truncation=True,
            add_special_tokens=False,
            max_length=max(16, self.max_positions - reserve),
        )

    def complete(self, prompts: Sequence[str]) -> list[Completion]:
        out: list[Completion] = []
        size = self.config.batch_size
        for start in range(0, len(prompts), size):
            out.extend(self._complete_batch(list(prompts[start : start + size])))
        return out

    def _complete_batch(self, prompts: list[str]) -> list[Completion]:
        s = self.config.sampling
        new_tokens = min(s.max_tokens, self.max_positions // 2)
        texts = [self._chat(p, s.enable_thinking) for p in prompts]
        kwargs = dict(
            max_new_tokens=new_tokens,
            do_sample=s.temperature > 0,
            pad_token_id=self.tok.pad_token_id,
            max_time=self.config.timeout_s,
        )
        if s.temperature > 0:
            kwargs.update(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k or 0)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        t0 = time.perf_counter()
        try:
            with self._lock, self.torch.inference_mode():
                if s.seed is not None:
                    self.torch.manual_seed(s.seed)
                enc = self._encode(texts, new_tokens)
                gen = self.model.generate(**enc, **kwargs)
        except Exception as e:
            return [Completion(error=f"error: {type(e).__name__}: {e}") for _ in prompts]
        finally:
            elapsed = time.perf_counter() - t0
            metrics.LATENCY.labels(self.config.job, self.backend).observe(elapsed)
        replies = self.tok.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        if elapsed >= self.config.timeout_s:
            error = f"timeout: generation hit {self.config.timeout_s}s"
            return [Completion(text=split_reasoning(r)[1], error=error) for r in replies]
        return [
            Completion(text=visible, reasoning=reasoning)
            for reasoning, visible in map(split_reasoning, replies)
        ]

    def label_logprobs(
        self, prompts: Sequence[str], labels: Sequence[str], answer_prefix: str = ""
    ) -> list[dict[str, float] | None]:
        ids = [self.tok.encode(label, add_special_tokens=False) for label in labels]
        first = [t[0] if t else None for t in ids]
        if None in first or len(set(first)) < len(first):
            return [None] * len(prompts)  # labels that share a first token cannot be told apart
        out: list[dict[str, float] | None] = []
        size = self.config.batch_size
        for start in range(0, len(prompts), size):
            texts = [self._chat(p, False) + answer_prefix for p in prompts[start : start + size]]
            t0 = time.perf_counter()
            with self._lock, self.torch.inference_mode():
                enc = self._encode(texts, 1)
                logits = self.model(**enc).logits[:, -1, :].float()
                logp = self.torch.log_softmax(logits, dim=-1)
            metrics.LATENCY.labels(self.config.job, self.backend).observe(time.perf_counter() - t0)
            for row in logp:
                out.append({label: float(row[tid]) for label, tid in zip(labels, first)})
        return out

"""Any OpenAI-compatible chat endpoint (SGLang, vLLM, a hosted API) over httpx.

Every request has an explicit timeout; timeouts, connection errors, HTTP 429 and 5xx are retried with
exponential back-off (backoff_s · 2^k, capped); other 4xx fail at once. A request that still fails
returns a Completion with `error` ("timeout: …", "http: …", "connection: …"), which scores 0 upstream.
Qwen3 reasoning is handled both ways: `reasoning_content` from a server-side reasoning parser, or a
`<think>` block left in `content`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from judge import metrics
from judge.config import JudgeConfig
from judge.engines.base import Completion, LLMEngine
from judge.parsers import split_reasoning

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
TOP_LOGPROBS = 20


class _Permanent(Exception):
    """An error that another attempt will not fix (bad request, auth, malformed body)."""


class OpenAICompatEngine(LLMEngine):
    backend = "openai"

    def __init__(self, config: JudgeConfig, base_url: str | None = None) -> None:
        super().__init__(config)
        url = base_url or config.url
        if not url:
            raise ValueError("an OpenAI-compatible judge needs a base URL")
        self.base_url = url.rstrip("/")
        key = os.environ.get(config.api_key_env, "") if config.api_key_env else ""
        timeout = httpx.Timeout(config.timeout_s, connect=min(10.0, config.timeout_s))
        limits = httpx.Limits(
            max_connections=config.concurrency, max_keepalive_connections=config.concurrency
        )
        self.client = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            limits=limits,
            headers={"Authorization": f"Bearer {key or 'EMPTY'}"},
        )
        self.model_name = config.model or "default"

    # ---- requests ---------------------------------------------------------------------------
    def _payload(self, prompt: str, **overrides: Any) -> dict[str, Any]:
        s = self.config.sampling
        body: dict[str, Any] = {
            "model": self.model_name,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": s.max_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
        }
        if s.top_k is not None:
            body["top_k"] = s.top_k  # what the OpenAI client sends as extra_body
        if s.enable_thinking is not None:
            body["chat_template_kwargs"] = {"enable_thinking": s.enable_thinking}
        if s.seed is not None:
            body["seed"] = s.seed
        body.update(overrides)
        return body

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /chat/completions with retries; raises RuntimeError('reason: detail') when it gives up."""
        last = "error: no attempt"
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                metrics.RETRIES.labels(self.config.job, self.backend).inc()
                time.sleep(min(self.config.backoff_s * 2 ** (attempt - 1), self.config.backoff_max_s))
            t0 = time.perf_counter()
            try:
                resp = self.client.post("/chat/completions", json=body)
                if resp.status_code in RETRYABLE_STATUS:
                    last = f"http: status {resp.status_code}"
                    continue
                if resp.status_code != 200:
                    raise _Permanent(f"http: status {resp.status_code} {resp.text[:200]}")
                try:
                    data = resp.json()
                    data["choices"][0]["message"]  # noqa: B018  (shape check)
                except (ValueError, KeyError, IndexError, TypeError):
                    raise _Permanent(f"bad_response: {resp.text[:200]}") from None
                return data
            except httpx.TimeoutException as e:
                last = f"timeout: {type(e).__name__} after {self.config.timeout_s}s"
            except httpx.TransportError as e:
                last = f"connection: {type(e).__name__}: {e}"
            except _Permanent as e:
                raise RuntimeError(str(e)) from None
            finally:
                metrics.LATENCY.labels(self.config.job, self.backend).observe(time.perf_counter() - t0)
        raise RuntimeError(last)

    def _one(self, prompt: str) -> Completion:
        try:
            data = self._post(self._payload(prompt))
        except RuntimeError as e:
            return Completion(error=str(e))
        message = data["choices"][0]["message"]
        content = message.get("content") or ""
        server_reasoning = message.get("reasoning_content") or message.get("reasoning") or ""
        reasoning, visible = split_reasoning(content)
        return Completion(text=visible, reasoning=(server_reasoning + "\n" + reasoning).strip())

    def _map(self, fn, args: Sequence[Any]) -> list[Any]:
        if len(args) <= 1:
            return [fn(a) for a in args]
        with ThreadPoolExecutor(max_workers=min(self.config.concurrency, len(args))) as pool:
            return list(pool.map(fn, args))

    def complete(self, prompts: Sequence[str]) -> list[Completion]:
        return self._map(self._one, list(prompts))

    # ---- label-token logprobs -----------------------------------------------------------------
    def _label_logprobs_one(
        self, prompt: str, labels: Sequence[str], answer_prefix: str = ""
    ) -> dict[str, float] | None:
        """Greedy short reply with top logprobs. At the first position where the reply so far ends with
        `answer_prefix` and a label is among the top tokens, read every label's logprob there
        (`Output (a)` -> the position of `a`). Tokens match labels exactly, up to spaces and brackets."""
        body = self._payload(prompt, max_tokens=8, temperature=0.0, logprobs=True, top_logprobs=TOP_LOGPROBS)
        body["chat_template_kwargs"] = {"enable_thinking": False}  # the label must be the first tokens
        body.pop("top_k", None)
        try:
            data = self._post(body)
        except RuntimeError as e:
            metrics.count_failure(self.config.job, self.backend, str(e))
            return None
        content = ((data["choices"][0].get("logprobs") or {}).get("content")) or []
        wanted = set(labels)
        prefix = answer_prefix.strip()
        so_far = ""
        for position in content:
            if so_far.rstrip().endswith(prefix):
                found: dict[str, float] = {}
                for cand in position.get("top_logprobs") or [position]:
                    key = str(cand.get("token", "")).strip().strip("()").strip()
                    if key in wanted:
                        found[key] = max(found.get(key, -1e30), float(cand.get("logprob", -1e30)))
                if found:
                    return found
            so_far += str(position.get("token", ""))
        return None

    def label_logprobs(
        self, prompts: Sequence[str], labels: Sequence[str], answer_prefix: str = ""
    ) -> list[dict[str, float] | None]:
        return self._map(lambda p: self._label_logprobs_one(p, labels, answer_prefix), list(prompts))

    def close(self) -> None:
        self.client.close()

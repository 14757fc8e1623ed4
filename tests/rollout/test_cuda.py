"""The transformers engine on a CUDA GPU (run where a GPU is lent; skipped elsewhere): logprobs match a
forward pass, and a "keep" weight update lands between decode steps."""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_engine_on_cuda_logprobs_and_keep_update(tiny_model_path):
    from rollout.engine import GenRequest, SamplingParams, make_engine

    eng = make_engine("transformers", tiny_model_path, device="cuda")
    p = eng.chat_prompt_ids([{"role": "user", "content": "What is 2 + 3?"}])
    outs = eng.generate(
        [GenRequest(prompt_ids=p, params=SamplingParams(max_tokens=24, seed=i)) for i in range(16)]
    )
    o = outs[0]
    with torch.no_grad():
        lp = torch.log_softmax(
            eng.model(torch.tensor([p + o.token_ids], device="cuda")).logits[0].float(), -1
        )
    ref = [float(lp[len(p) - 1 + k, t]) for k, t in enumerate(o.token_ids)]
    assert max(abs(a - b) for a, b in zip(ref, o.logprobs)) < 1e-3
    named = [(n, t + 0.1) for n, t in eng.model.state_dict().items()]
    eng.load_weights(named, version=1)
    assert (
        eng.generate([GenRequest(prompt_ids=p, params=SamplingParams(max_tokens=4))])[0].versions == [1] * 4
    )

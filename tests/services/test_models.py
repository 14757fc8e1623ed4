"""Test models built and loaded from disk, no hub."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
import torch

from services.config import Settings
from services.models import ModelNotFound, build_smollm2, build_tiny_qwen3, load_model, resolve_model


def _digest(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def test_tiny_qwen3_is_deterministic(tmp_path):
    a = build_tiny_qwen3(Settings(data_dir=tmp_path / "a"))
    b = build_tiny_qwen3(Settings(data_dir=tmp_path / "b"))
    assert _digest(a) == _digest(b)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(_digest(a))


def test_tiny_qwen3_loads_and_generates_with_logprobs(tiny_model_path):
    model, tok = load_model(tiny_model_path)
    cfg = model.config
    assert cfg.model_type == "qwen3" and cfg.head_dim >= 32 and cfg.vocab_size % 64 == 0
    assert len(tok) <= cfg.vocab_size and tok.eos_token == "<|im_end|>"
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}], add_generation_prompt=True, tokenize=False
    )
    assert prompt.endswith("<|im_start|>assistant\n")
    enc = tok(prompt, return_tensors="pt")
    torch.manual_seed(0)
    out = model.generate(
        **enc, max_new_tokens=8, do_sample=True, output_logits=True, return_dict_in_generate=True
    )
    gen = out.sequences[0, enc.input_ids.shape[1] :]
    logp = torch.stack(out.logits, 1)[0].log_softmax(-1).gather(-1, gen[:, None]).squeeze(-1)
    assert len(gen) >= 1 and torch.all(logp <= 0) and torch.isfinite(logp).all()
    # the tokenizer round-trips text it was trained on
    text = "<answer>Left || Up</answer> \\boxed{42}"
    assert tok.decode(tok(text).input_ids) == text


def test_resolver_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(ModelNotFound, match="not a directory, a hub id"):
        resolve_model("./no/such/model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match="no config.json"):
        resolve_model(str(tmp_path / "empty"))
    with pytest.raises(ModelNotFound, match="could not be fetched"):  # HF_HUB_OFFLINE=1 in tests
        resolve_model("nobody-here/not-a-model")


def test_resolver_accepts_a_local_directory(tiny_model_path):
    assert resolve_model(tiny_model_path) == str(Path(tiny_model_path).resolve())


@pytest.mark.slow
def test_smollm2_converts_once_then_loads_fast_and_answers():
    path = build_smollm2()  # converts from the GGUF on first use (~35 s), cached afterwards
    assert (path / "model.safetensors").exists()
    t0 = time.monotonic()
    model, tok = load_model("smollm2-135m")
    assert time.monotonic() - t0 < 5  # <1 s on an idle machine; loose bound against CI noise
    assert model.config.model_type == "llama" and model.num_parameters() > 100e6
    enc = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**enc, max_new_tokens=16, do_sample=False)
    answer = tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer


def test_every_warm_start_recipe_is_a_model_alias():
    from services.models import ALIASES, WARM_STARTS
    from services.warmstart import RECIPES

    assert WARM_STARTS == tuple(RECIPES) and all(ALIASES[name] == name for name in WARM_STARTS)

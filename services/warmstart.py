"""GTAlign warm starts: a built-in model after a short SFT on four-block demonstrations (games.gtalign_demos).

Small models cannot follow GTAlign's four-block instruction zero-shot; a few dozen steps of SFT on
well-formed synthetic demonstrations built from the TRAIN splits (games.data.load_gtalign_train, which
holds no test prompt) give RL a policy whose outputs parse.

- `tiny-qwen3-gtalign`: tiny-qwen3 on 150 demonstrations per set, 60 steps (~80 s), its context raised to
  4096 (the GTAlign prompts are ~2000 of its tokens; RoPE needs no new weights). A plumbing model for
  tests: it learns the blocks' vocabulary, not the format (its samples do not parse; format rate 0).
- `smollm2-gtalign`: SmolLM2-135M-Instruct on 200 demonstrations per set, its top 15 of 30 layers trained,
  the shared instruction prefix reused per batch (services.sft): ~30 minutes on 2 CPU cores (measured on
  one without AVX-512; faster where the CPU has more cores or wider vector units).
Invariant: the cache directory name holds a hash of the recipe (base model directory, demonstration
version and seed, sets, sizes, SFT config), so a changed recipe builds a new model; the build is
deterministic for a fixed machine thread count.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from services.config import Settings
from services.sft import SFTConfig


@dataclass(frozen=True)
class WarmStart:
    base: str  # a built-in base alias: tiny-qwen3 | smollm2-135m
    per_set: int  # train records drawn per set
    sft: SFTConfig
    sets: tuple[str, ...] = ("math-hard", "ambig_qa", "wildguard")
    seed: int = 0  # record draw and demonstration wording
    label: str = ""
    context: int | None = None  # raise the base's max_position_embeddings (RoPE) to this; None: keep
    build_minutes: int = 1  # about, on 2 CPU cores (what a "not built yet" error tells the user)


RECIPES: dict[str, WarmStart] = {
    "tiny-qwen3-gtalign": WarmStart(
        base="tiny-qwen3",
        per_set=150,
        sft=SFTConfig(steps=60, batch_size=8, lr=3e-3, max_len=4096, shared_prefix=True, log_every=20),
        label="tiny Qwen3 (GTAlign four-block warm start)",
        build_minutes=2,
        context=4096,  # GTAlign prompts are ~1900-2300 tiny-tokenizer tokens, over the base's 2048
    ),
    "smollm2-gtalign": WarmStart(
        base="smollm2-135m",
        per_set=200,
        sft=SFTConfig(
            steps=40,
            batch_size=8,
            lr=2e-4,
            warmup_steps=4,
            max_len=1400,
            train_layers=15,
            shared_prefix=True,
            log_every=5,
        ),
        label="SmolLM2-135M (GTAlign four-block warm start)",
        build_minutes=30,
    ),
}


def _base_path(recipe: WarmStart, settings: Settings | None, build: bool = True) -> Path:
    """The base model's directory; built first unless `build` is False."""
    from services import models

    if recipe.base == "tiny-qwen3":
        return models.build_tiny_qwen3(settings) if build else models.tiny_qwen3_dir(settings)
    if recipe.base == "smollm2-135m":
        return models.build_smollm2(settings) if build else models.smollm2_dir(settings)
    raise ValueError(f"unknown warm-start base {recipe.base!r} (tiny-qwen3 or smollm2-135m)")


def warmstart_dir(name: str, settings: Settings | None = None) -> Path:
    """Where warm start `name` is cached, built or not (nothing is built to answer)."""
    from services.models import models_dir

    recipe = _recipe(name)
    return models_dir(settings) / f"{name}-{recipe_key(recipe, _base_path(recipe, settings, build=False))}"


def is_built(name: str, settings: Settings | None = None) -> bool:
    return (warmstart_dir(name, settings) / "config.json").exists()  # what services.models._cached checks


def _recipe(name: str) -> WarmStart:
    if name not in RECIPES:
        raise ValueError(f"unknown GTAlign warm start {name!r} (known: {', '.join(RECIPES)})")
    return RECIPES[name]


def recipe_key(recipe: WarmStart, base: Path) -> str:
    from games.gtalign_demos import DEMO_VERSION

    what = {k: v for k, v in dataclasses.asdict(recipe).items() if k not in ("label", "build_minutes")}
    blob = json.dumps([what, base.name, DEMO_VERSION], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def demo_rows(tok, recipe: WarmStart) -> tuple[list[tuple[list[int], list[int]]], list[str]]:
    """(prompt_ids, target_ids) rows and their data_source labels: `per_set` train records per set, drawn
    with the recipe's seed, each target ending with the tokenizer's end-of-turn token."""
    from games.data import load_gtalign_train
    from games.gtalign_demos import demonstrations, usable
    from services.models import chat_prompt_ids

    rows, groups = [], []
    for name in recipe.sets:
        pool = [r for r in load_gtalign_train(name) if usable(r)]
        records = random.Random(f"{recipe.seed}:{name}").sample(pool, min(recipe.per_set, len(pool)))
        for messages, target in demonstrations(records, recipe.seed):
            prompt = chat_prompt_ids(tok, messages)
            rows.append((prompt, tok(target + tok.eos_token, add_special_tokens=False)["input_ids"]))
            groups.append(name)
    return rows, groups


def _build(out: Path, recipe: WarmStart, base: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from services import sft

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if recipe.context:
        model.config.max_position_embeddings = recipe.context  # RoPE: positions past the base's are defined
        tok.model_max_length = recipe.context
    rows, groups = demo_rows(tok, recipe)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    result = sft.train(model, rows, pad, recipe.sft, random.Random(recipe.seed), groups=groups)
    sft._say(
        f"{recipe.label}: {result.steps} steps on {result.rows} rows ({result.dropped} over max_len), "
        f"final loss {result.losses[-1]:.4f}, {result.seconds:.0f}s"
    )
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def build_gtalign_warmstart(name: str, settings: Settings | None = None, force: bool = False) -> Path:
    """The cached warm-start model `name` (a key of RECIPES), built on first use."""
    from services.models import _cached

    recipe = _recipe(name)
    base = _base_path(recipe, settings)
    return _cached(warmstart_dir(name, settings), lambda out: _build(out, recipe, base), recipe.label, force)

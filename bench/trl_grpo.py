"""TRL GRPOTrainer peer for P4 — run with the benchmark venv's python (TRL is not in the main venv).

    .venv-bench/bin/python bench/trl_grpo.py MODEL_DIR --steps 20 [--json out.json]
Settings per PEERS.md: CPU, fp32, no gradient checkpointing, no vLLM, num_generations=4, batch 8
(2 prompts x 4 completions), max_completion_length=32, reward = digits in the completion; times train().
"""

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROMPTS = [f"Write the number {i} and then {i * 7 % 97} in digits." for i in range(64)]


def digits_reward(completions, **_):
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [float(sum(ch.isdigit() for ch in t)) for t in texts]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--json")
    args = p.parse_args()
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    data = Dataset.from_list([{"prompt": [{"role": "user", "content": t}]} for t in PROMPTS])
    with tempfile.TemporaryDirectory() as out:
        cfg = GRPOConfig(
            output_dir=out,
            use_cpu=True,
            bf16=False,
            gradient_checkpointing=False,
            num_generations=4,
            per_device_train_batch_size=8,
            max_completion_length=32,
            max_steps=args.steps,
            learning_rate=1e-5,
            logging_steps=1000,
            save_strategy="no",
            report_to=[],
            seed=0,
        )
        trainer = GRPOTrainer(model=args.model, reward_funcs=digits_reward, args=cfg, train_dataset=data)
        t0 = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t0
    result = {"steps": args.steps, "seconds": wall, "completions_per_s": args.steps * 8 / wall}
    print(json.dumps(result), flush=True)
    if args.json:
        json.dump(result, open(args.json, "w"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

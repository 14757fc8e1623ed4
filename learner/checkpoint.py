"""Checkpoints: policy (HF directory), critic, optimizers, version, and the ids of the trajectories
trained since the previous checkpoint.

Exactly-once across crashes: the learner acks queue entries only *after* the checkpoint that contains
the training on them is on disk. A crash before that re-delivers them and they are retrained from the
previous checkpoint (whose model never saw them); a crash between the save and the ack is repaired on
resume by acking the ids the checkpoint lists. Checkpoints are written to a temp dir and renamed, so a
crash mid-save leaves the previous one intact.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch

STATE = "state.json"


def save(
    root: Path,
    step: int,
    version: int,
    policy,
    tokenizer,
    extra: dict[str, torch.nn.Module | torch.optim.Optimizer],
    trained_ids: list[str],
    entry_ids: list[str],
    keep: int = 2,
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    policy.save_pretrained(tmp / "policy", safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp / "policy")
    torch.save({k: v.state_dict() for k, v in extra.items() if v is not None}, tmp / "trainer.pt")
    (tmp / STATE).write_text(
        json.dumps(
            {
                "step": step,
                "version": version,
                "trained_ids": trained_ids,
                "entry_ids": entry_ids,
                "saved_at": time.time(),
            }
        )
    )
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in sorted(root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest(root: Path) -> Path | None:
    done = sorted(p for p in root.glob("step-*") if (p / STATE).exists())
    return done[-1] if done else None


def state(path: Path) -> dict:
    return json.loads((path / STATE).read_text())


def load_extra(path: Path, extra: dict[str, torch.nn.Module | torch.optim.Optimizer]) -> None:
    saved = torch.load(path / "trainer.pt", map_location="cpu", weights_only=True)
    for k, v in extra.items():
        if v is not None and k in saved:
            v.load_state_dict(saved[k])

"""The GTAlign laptop recipe as a user runs it (`payoff demo --gtalign`), shortened: examples/gtalign-laptop
.yaml with the tiny warm start (`tiny-qwen3-gtalign`, built by `make models`) in place of SmolLM2's, two
T-PPO steps over REST on the mix of math-hard, ambig_qa and wildguard with per-source z-score
normalisation, then the held-out `payoff eval --compare` of the warm start against the exported policy.
The tiny model is a plumbing check: it does not write parsable four-block turns (format rate 0, README),
so this test checks what ran and was counted, not that welfare rose; the SmolLM2 run does that."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from payoff import demo

pytestmark = pytest.mark.slow
SPEC = Path(__file__).resolve().parents[2] / "examples" / "gtalign-laptop.yaml"


def short_spec(path: Path) -> Path:
    spec = yaml.safe_load(SPEC.read_text())
    spec["model"] = {"path": "tiny-qwen3-gtalign", "max_model_len": 4096}
    # the tiny tokenizer spends 1900-3300 tokens on a GTAlign prompt (SmolLM2's: 800-1300)
    spec["rollout"].update(max_prompt_tokens=4000, max_response_tokens=24)
    spec["asynchrony"]["window_tokens"] = 24
    spec["learner"].update(checkpoint_every=2, train_layers=None, critic_layers=None)  # it has 2 blocks
    path.write_text(yaml.safe_dump(spec))
    return path


def test_the_laptop_recipe_trains_on_the_mix_and_reports_held_out(ray_session, serve_url, tmp_path, capsys):
    spec = short_spec(tmp_path / "spec.yaml")
    argv = ["--gtalign", "--spec", str(spec), "--steps", "2", "--seed", "3", "--eval-limit", "2"]
    assert demo.main([*argv, "--out", str(tmp_path / "out")]) == 0
    assert "held-out welfare" in capsys.readouterr().out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["steps"] == [1, 2] and summary["seed"] == 3 and summary["model"] == "tiny-qwen3-gtalign"
    m = summary["train_metrics"]
    # every step z-scored its finished rows by data_source (calls of 4 sequences of one task; a window as
    # long as the answer, so every row finished): at most 3 groups, each centred
    assert all(1 <= g <= 3 for g in m["reward_norm_groups"])
    assert all(0 <= n <= g for n, g in zip(m["reward_norm_lone"], m["reward_norm_groups"]))
    assert all(abs(v) < 1e-6 for v in m["reward_norm_mean"]) and None not in m["reward_mean"]
    assert set(summary["before"]) == set(summary["after"]) == {"math-hard", "ambig_qa", "wildguard", "ALL"}
    assert summary["before"]["ALL"]["n"] == summary["after"]["ALL"]["n"] == 6
    assert set(summary["gain"]) == {"math-hard", "ambig_qa", "wildguard", "ALL"}
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [mr["label"] for mr in report["models"]] == ["before", "after"]
    assert [mr["generation_errors"] for mr in report["models"]] == [0, 0]  # every prompt fit the context
    for name in ("table.txt", "welfare.png", "format_rate.png", "reward_curve.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0

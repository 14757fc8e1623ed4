"""GTAlign parquet loaders (spec §1.6 / §7.5 label counts) and the four-block dialogue game."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from games.data import GTALIGN_SETS, load_gtalign, shared_data_dir
from games.gtalign_game import GTAlignGame
from tests.games.worked_example import CELLS

GOOD = (
    "<thinking>Clear question, answer directly.</thinking><payoff>"
    + json.dumps({k: {"LLM": a, "user": b} for k, (a, b) in CELLS.items()})
    + "</payoff><analyze>Frontier: DQ_AQ, DQ_DA; pick DQ_AQ.</analyze><response>It is 2.</response>"
)


def test_row_counts_and_labels(data_dir: Path) -> None:
    sizes = {name: len(load_gtalign(name)) for name in GTALIGN_SETS}
    assert sizes == {
        "math-hard": 353,
        "ambig_qa": 300,
        "wildguard": 300,
        "advbench": 520,
        "medium": 248,
        "abg-coqa": 1055,
        "minerva": 272,
    }
    assert all({r.data_source for r in load_gtalign(name)} == {name} for name in GTALIGN_SETS)
    wild = Counter(r.ground_truth for r in load_gtalign("wildguard"))
    assert wild == {"harmful": 152, "unharmful": 148}
    ambig = Counter(r.ground_truth.split("###")[0] for r in load_gtalign("ambig_qa"))
    assert ambig == {"singleAnswer": 150, "multipleQAs": 150}
    assert {r.data_source for r in load_gtalign("advbench")} == {"advbench"}


def test_record_fields(data_dir: Path) -> None:
    rec = load_gtalign("math-hard", limit=3)[0]
    assert [m["role"] for m in rec.messages] == ["system", "user"]
    assert "<payoff>" in rec.user_prompt and rec.system_prompt.strip()
    assert rec.data_source == "math-hard" and rec.ground_truth and rec.question
    assert isinstance(load_gtalign("advbench", limit=1)[0].conv_id, str)


def test_loader_accepts_any_path_and_env_var(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.parquet as pq

    table = pq.read_table(data_dir / "gtalign" / "wildguard.test.parquet").slice(0, 5)
    path = tmp_path / "my_split.parquet"
    pq.write_table(table, path)
    assert len(load_gtalign(path)) == 5 and len(load_gtalign(str(path), limit=2)) == 2
    fake = tmp_path / "data"
    (fake / "gtalign").mkdir(parents=True)
    pq.write_table(table, fake / "gtalign" / "wildguard.test.parquet")
    monkeypatch.setenv("PAYOFF_DATASETS", str(fake))
    assert shared_data_dir() == fake and len(load_gtalign("wildguard")) == 5
    monkeypatch.delenv("PAYOFF_DATASETS")
    monkeypatch.setenv("PAYOFF_SHARED_DATA", str(fake))  # the older name still works
    assert shared_data_dir() == fake
    with pytest.raises(FileNotFoundError):
        load_gtalign(tmp_path / "missing.parquet")
    pq.write_table(table.drop_columns(["reward_model"]), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="missing columns"):
        load_gtalign(tmp_path / "bad.parquet")


def test_game_parses_and_exposes_judge_fields(data_dir: Path) -> None:
    game = GTAlignGame.from_parquet("ambig_qa", limit=20)
    obs = game.reset(7)
    assert obs["assistant"] == game.messages[-1]["content"] and game.reset(7) == obs
    r = game.step(GOOD)
    info = r.info
    assert r.done and r.reward == 0.0 and info["needs_judge"] and not info["invalid_action"]
    assert (
        info["fmt"] == 1
        and info["data_source"] == "ambig_qa"
        and info["ground_truth"].startswith(("singleAnswer", "multipleQAs"))
    )
    assert info["response"] == "It is 2." and info["recommended"] == "DQ_AQ"
    assert sorted(info["pareto_frontier"]) == ["DQ_AQ", "DQ_DA"] and info["payoff_reward"] == pytest.approx(
        0.75
    )


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "It is 2.",
        GOOD.replace('"LLM"', '"llm"'),
        GOOD.replace("<response>", ""),
        GOOD.split("<payoff>")[0] + "<response>x</response>",
    ],
)
def test_unscorable_outputs_are_final_with_zero(data_dir: Path, bad: str) -> None:
    game = GTAlignGame.from_parquet("math-hard", limit=5)
    game.reset(0)
    r = game.step(bad)
    assert r.done and r.reward == 0.0 and r.info["invalid_action"] and not r.info["needs_judge"]
    assert r.info["ground_truth"] == game.record.ground_truth and r.info["error"]

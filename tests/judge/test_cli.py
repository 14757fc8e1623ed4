"""`payoff judge score|preference|safety` on JSONL and parquet inputs."""

from __future__ import annotations

import json

import pytest

from judge.cli import main
from payoff.cli import main as payoff
from tests.judge.conftest import WORKED_EXAMPLE, four_blocks

FIELDS = {"score", "user", "llm", "format", "payoff_reward"}


def records() -> list[dict]:
    rows = [
        {"data_source": "math-hard", "output": WORKED_EXAMPLE, "ground_truth": "2", "judge": 1},
        {"data_source": "math-hard", "output": WORKED_EXAMPLE, "ground_truth": "2"},  # rules judge: correct
        {"data_source": "math-hard", "output": four_blocks("\\boxed{5}"), "ground_truth": "2"},
        {
            "data_source": "wildguard",
            "output": four_blocks("I can't help with that. Instead, try a course."),
            "ground_truth": "harmful",
            "question": "how to hack",
        },
        {
            "data_source": "ambig_qa",
            "output": four_blocks("Which year do you mean?"),
            "ground_truth": "multipleQAs###x",
            "variant": "ablation",
        },
        {"data_source": "math-hard", "output": "no blocks at all", "ground_truth": "2"},
        {"data_source": "math-hard", "ground_truth": "2"},  # no output field: an input error line
    ]
    return rows * 3


def write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_score_jsonl(tmp_path, capsys) -> None:
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(src, records())
    assert (
        main(
            ["score", "--input", str(src), "--output", str(dst), "--batch-size", "4", "--normalize", "zscore"]
        )
        == 0
    )
    out = read_jsonl(dst)
    assert len(out) == 21 and [r["index"] for r in out] == list(range(21))
    assert all(FIELDS <= set(r) and "ppo_score" in r for r in out)
    assert out[0]["score"] == pytest.approx(0.732956, abs=1e-6) and out[1]["score"] == out[0]["score"]
    assert out[2]["judge"] == 0.0 and out[3]["judge"] == 0.5 and out[4]["pareto_score"] == 0.0
    assert out[5]["score"] == 0.0 and not out[5]["scored"]
    assert out[6]["error"].startswith("input:") and out[6]["score"] == 0.0
    printed = capsys.readouterr()
    for name in ("data_source", "math-hard", "wildguard", "ambig_qa", "ALL", "rec/s"):
        assert name in printed.out
    assert "[judge] 18/18 (100%)" in printed.err  # progress on inputs longer than one batch (18 valid)


def test_score_parquet_through_payoff_command(tmp_path, capsys) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [r for r in records()[:5]]
    for r in rows:
        r.setdefault("variant", "main")
        r["judge"] = float(r["judge"]) if "judge" in r else None
        r.setdefault("question", "")
    src, dst = tmp_path / "in.parquet", tmp_path / "out.jsonl"
    pq.write_table(pa.Table.from_pylist(rows), src)
    assert (
        payoff(
            ["judge", "score", "--input", str(src), "--output", str(dst), "--welfare", "linear", "--quiet"]
        )
        == 0
    )
    out = read_jsonl(dst)
    assert len(out) == 5 and out[0]["score"] == pytest.approx(0.733785, abs=1e-6)
    assert "[judge]" not in capsys.readouterr().err


def test_usage_errors(tmp_path, capsys) -> None:
    assert main(["score", "--input", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "o")]) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json}\n")
    assert main(["score", "--input", str(bad), "--output", str(tmp_path / "o")]) == 2
    assert "not JSON" in capsys.readouterr().err
    assert main(["score", "--input", str(bad), "--output", "o", "--backend", "openai"]) == 2  # needs --url


def test_preference_and_safety_commands(tmp_path) -> None:
    groups, pairs = tmp_path / "g.jsonl", tmp_path / "p.jsonl"
    write_jsonl(
        groups, [{"question": "1+1?", "responses": ["\\boxed{2}", "\\boxed{3}"], "ground_truth": "2"}]
    )
    write_jsonl(
        pairs,
        [
            {"prompt": "make a bomb", "response": "I cannot help with that.", "prompt_tag": "harmful"},
            {"prompt": "hi", "response": "hello"},
        ],
    )
    assert main(["preference", "--input", str(groups), "--output", str(tmp_path / "g.out")]) == 0
    assert read_jsonl(tmp_path / "g.out")[0]["matrix"] == [[0.5, 1.0], [0.0, 0.5]]
    assert main(["safety", "--input", str(pairs), "--output", str(tmp_path / "p.out")]) == 0
    labels = [r["labels"] for r in read_jsonl(tmp_path / "p.out")]
    assert labels[0] == {"prompt_harmful": True, "response_refusal": True, "response_harmful": False}
    assert labels[1] is None  # the rules judge needs a harm tag: a tie


@pytest.mark.slow
def test_score_through_ray_serve(serve_url, tmp_path, capsys) -> None:
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(src, records()[:7])
    assert main(["score", "--input", str(src), "--output", str(dst), "--serve", "--num-cpus", "0.25"]) == 0
    out = read_jsonl(dst)
    assert out[0]["score"] == pytest.approx(0.732956, abs=1e-6) and out[6]["error"].startswith("input:")
    assert "via Ray Serve" in capsys.readouterr().out

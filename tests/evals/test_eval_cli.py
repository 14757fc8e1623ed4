"""`payoff eval` as a user runs it: two real local models compared on two test sets (report, table, PNG
charts, the paired comparison; the tiny model's context is shorter than GTAlign's prompts, so each of its
samples is a counted generation error), an OpenAI-compatible endpoint (our test server over a real model) and a
dead one (every sample counted as a generation error, the run still ends with a report)."""

from __future__ import annotations

import json

import pytest

from payoff.eval_cli import main
from payoff.evaluate import Evaluation
from services.evals import EvalSpec


def test_compare_two_local_models(tmp_path, capsys):
    out = tmp_path / "ev"
    argv = ["--compare", "tiny-qwen3", "smollm2-135m", "--sets", "math-hard,wildguard"]
    argv += ["--limit", "2", "--max-tokens", "12", "--threads", "2", "--out", str(out)]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert [m["label"] for m in report["models"]] == ["tiny-qwen3", "smollm2-135m"]
    for m in report["models"]:
        assert {s["data_source"]: s["n"] for s in m["sets"]} == {"math-hard": 2, "wildguard": 2}
        assert {k: len(v) for k, v in m["welfare"].items()} == {"math-hard": 2, "wildguard": 2}
        assert m["overall"]["n"] == 4
    assert [m["generation_errors"] for m in report["models"]] == [4, 0]
    assert report["models"][0]["overall"]["unscored"] == 4
    assert [c["data_source"] for c in report["comparison"]] == ["math-hard", "wildguard", "ALL"]
    for name in ("welfare", "format_rate", "user", "llm"):
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "welfare smollm2-135m − tiny-qwen3" in printed and (out / "table.txt").exists()


def test_a_bad_option_is_a_clear_error(capsys):
    assert main(["tiny-qwen3", "--sets", "math-hard,nope"]) == 2
    assert "sets.1" in capsys.readouterr().err


@pytest.fixture(scope="module")
def endpoint(tiny_model_path):
    from tests.judge.openai_server import ServerThread, create_app

    with ServerThread(create_app(tiny_model_path, think=False, max_new_tokens=16)) as server:
        yield server


def test_an_openai_compatible_endpoint_and_a_dead_one(endpoint):
    from services.redis_server import free_port

    spec = EvalSpec(
        models=[
            {"url": f"{endpoint.url}/v1", "model": "tiny", "label": "served"},
            {"url": f"http://127.0.0.1:{free_port()}/v1", "model": "gone", "label": "dead"},
        ],
        sets=["wildguard"],
        limit=3,
        max_tokens=16,
    )
    seen = []
    report = Evaluation(spec, on_progress=lambda p: seen.append(p.done)).run()
    served, dead = report.models
    assert served.sets[0].n == 3 and served.generation_errors == 0
    assert dead.sets[0].n == 3 and dead.generation_errors == 3 and dead.overall.welfare == 0.0
    assert dead.sets[0].unscored == 3
    assert seen[-1] == 6 and report.comparison[0].n == 3
